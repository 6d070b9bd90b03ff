"""`python -m proxy_model.label` (issue 12, item 4): labels from the project's own engine, censored caps kept,
resumable by id, first turns and whole histories, bad rows named by file and line; `--agreement` compares."""

import json

import pytest

from proxy_model.data import DataError
from proxy_model.label import agreement, main, read_rows

pytestmark = pytest.mark.timeout(120)
ROWS = [
    {"id": "a", "prompt": "Write a poem about the sea", "response": "ignored"},
    {"id": 7, "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                           {"role": "user", "content": "tell me more"}]},
    {"id": "c", "prompt": "word " * 40},
]


def _write(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_labels_resume_and_skip_long_prompts(tmp_path, capsys):
    data, out = _write(tmp_path / "prompts.jsonl", ROWS), tmp_path / "labels.jsonl"
    base = ["--model", "demo", "--data", str(data), "--out", str(out), "--max-tokens", "5", "--max-batch-size", "2"]
    assert main(base + ["--max-prompt-tokens", "20", "--limit", "2"]) == 0
    first = _read(out)
    assert [row["id"] for row in sorted(first, key=lambda r: str(r["id"]))] == [7, "a"]
    for row in first:
        # the random-weight demo model never emits EOS in 5 tokens: every label is the censored cap
        assert row["output_tokens"] == 5 and row["finish_reason"] == "length" and row["max_tokens"] == 5
        assert row["model"] == "demo" and row["prompt_tokens"] > 0 and row["temperature"] == 0.0
    assert next(r for r in first if r["id"] == 7)["messages"][-1]["content"] == "tell me more"
    assert main(base + ["--max-prompt-tokens", "20"]) == 0  # resumes: only "c", which is too long
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["skipped_too_long"] == 1
    assert _read(out) == first
    assert main(base + ["--max-prompt-tokens", "100"]) == 0
    assert [row["id"] for row in _read(out)][2:] == ["c"]


@pytest.mark.slow
def test_greedy_labels_repeat(tmp_path):
    data = _write(tmp_path / "p.jsonl", ROWS[:2])
    outs = [tmp_path / f"{i}.jsonl" for i in range(2)]
    for out, batch in zip(outs, ("1", "2")):
        assert main(["--model", "demo", "--data", str(data), "--out", str(out), "--max-tokens", "6",
                     "--max-batch-size", batch]) == 0
    by_id = [{row["id"]: row["response"] for row in _read(out)} for out in outs]
    assert by_id[0] == by_id[1]
    assert agreement(outs[0], outs[1]) == {"n": 2, "exact_length_match": 1.0, "finish_reason_match": 1.0,
                                           "kendall_tau_b": pytest.approx(float("nan"), nan_ok=True)}


@pytest.mark.parametrize("line, fragment", [
    ('{"prompt": "no id"}', "needs an 'id'"),
    ('{"id": 1, "messages": [{"role": "user"}]}', "needs 'prompt'"),
    ("not json", "not JSON"),
])
def test_bad_rows_name_file_and_line(tmp_path, line, fragment):
    data = tmp_path / "bad.jsonl"
    data.write_text(json.dumps(ROWS[0]) + "\n" + line + "\n")
    with pytest.raises(DataError, match=rf"bad.jsonl:2: .*{fragment}"):
        read_rows(data, None)


def test_duplicate_ids_are_refused(tmp_path):
    with pytest.raises(DataError, match="duplicate id 'a'"):
        read_rows(_write(tmp_path / "d.jsonl", [ROWS[0], ROWS[0]]), None)
