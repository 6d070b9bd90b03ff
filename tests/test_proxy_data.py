"""proxy_model data loading: clear errors naming file and line, deterministic split."""
import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from proxy_model.chat import predictor_text
from proxy_model.data import DataError, Row, read_jsonl, row_split, split_of
from proxy_model.evaluate import main as evaluate_main

FIXTURE = Path(__file__).parent / "fixtures" / "proxy" / "sharegpt_600.jsonl"
GOOD = '{"prompt": "hi", "output_tokens": 3}\n'

BAD_CASES = {
    "invalid_json": (GOOD + '{"prompt": "x", \n', 2, "invalid JSON"),
    "missing_prompt": (GOOD + GOOD + '{"response": "x"}\n', 3, "'prompt'"),
    "missing_label": ('{"prompt": "x"}\n', 1, "'response'"),
    "negative_tokens": (GOOD + '{"prompt": "x", "output_tokens": -1}\n', 2, "non-negative"),
    "not_an_object": (GOOD + "[1, 2]\n", 2, "JSON object"),
    "bad_model": ('{"prompt": "x", "output_tokens": 1, "model": 7}\n', 1, "'model'"),
    "messages_not_list": (GOOD + '{"messages": "hi", "output_tokens": 1}\n', 2, "non-empty list"),
    "messages_no_user": ('{"messages": [{"role": "system", "content": "s"}], "output_tokens": 1}\n', 1,
                         "no user message"),
    "messages_bad_role": ('{"messages": [{"role": "robot", "content": "s"}], "output_tokens": 1}\n', 1,
                          "messages[0]"),
    "messages_bad_content": ('{"messages": [{"role": "user", "content": 3}], "output_tokens": 1}\n', 1,
                             "'content'"),
}
CHAT = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Name a colour"},
        {"role": "assistant", "content": "Red."}, {"role": "user", "content": "Now explain why in detail"}]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_rows_name_file_and_line(tmp_path, case):
    text, line, words = BAD_CASES[case]
    path = tmp_path / f"{case}.jsonl"
    path.write_text(text)
    with pytest.raises(DataError) as err:
        read_jsonl(path)
    assert f"{path}:{line}:" in str(err.value)
    assert words in str(err.value)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("content", ["", "\n\n"])
def test_empty_file_is_an_error(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match="empty"):
        read_jsonl(path)


@pytest.mark.timeout(10)
def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        read_jsonl(tmp_path / "nope.jsonl")


@pytest.mark.timeout(10)
def test_rows_parse_and_unicode_line_separators_stay_inside_strings(tmp_path):
    path = tmp_path / "ok.jsonl"
    path.write_text('{"prompt": "a\u2028b", "response": "r", "model": "m"}\n\n' + GOOD, encoding="utf-8")
    assert read_jsonl(path) == [Row("a\u2028b", None, "r", "m"), Row("hi", 3)]


@pytest.mark.timeout(10)
def test_gzip_file_with_messages_rows_reads_as_predictor_text(tmp_path):
    path = tmp_path / "rows.jsonl.gz"
    lines = [{"messages": CHAT, "response": "Because."}, {"messages": CHAT[1:2], "output_tokens": 2}, json.loads(GOOD)]
    path.write_bytes(gzip.compress("\n".join(json.dumps(r) for r in lines).encode()))
    chat, single, plain = read_jsonl(path)
    assert chat.prompt == predictor_text(CHAT) != CHAT[3]["content"] and chat.response == "Because."
    assert row_split(chat, 3) == split_of("Name a colour", 3)  # a conversation's split: its first user message
    assert single.prompt == "Name a colour" and row_split(single, 3) == split_of("Name a colour", 3)
    assert plain == Row("hi", 3)


@pytest.mark.timeout(10)
def test_corrupt_gzip_is_an_error(tmp_path):
    path = tmp_path / "rows.jsonl.gz"
    path.write_bytes(gzip.compress(GOOD.encode())[:-6])
    with pytest.raises(DataError, match=f"{path}: cannot read"):
        read_jsonl(path)


@pytest.mark.timeout(300)
def test_evaluate_all_split_scores_messages_rows_like_their_text(tmp_path, capsys):
    rows = read_jsonl(FIXTURE)[:40]
    as_messages = [{"messages": [*CHAT[:3], {"role": "user", "content": r.prompt}], "output_tokens": r.output_tokens}
                   for r in rows]
    as_text = [{"prompt": predictor_text(m["messages"]), "output_tokens": m["output_tokens"]} for m in as_messages]
    results = []
    for name, data in (("messages.jsonl.gz", as_messages), ("text.jsonl", as_text)):
        path = tmp_path / name
        text = "\n".join(json.dumps(r) for r in data).encode()
        path.write_bytes(gzip.compress(text) if name.endswith(".gz") else text)
        assert evaluate_main(["--data", str(path), "--checkpoint", "fast", "--split", "all", "--json",
                              "--latency-prompts", "4"]) == 0
        results.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    keys = ("n", "kendall_tau", "spearman", "mae_tokens", "latency_ms_per_prompt_batch1", "latency_ms_per_prompt_batch32")
    assert all(k in results[0] for k in keys) and results[0]["n"] == 40
    assert results[0]["kendall_tau"] == results[1]["kendall_tau"] and results[0]["mae_tokens"] == results[1]["mae_tokens"]


@pytest.mark.timeout(10)
def test_split_is_deterministic_by_prompt_and_seed():
    prompts = [f"prompt {i}" for i in range(2000)]
    first = [split_of(p, 0) for p in prompts]
    assert first == [split_of(p, 0) for p in prompts]
    assert first != [split_of(p, 1) for p in prompts]
    share = {s: first.count(s) / len(first) for s in ("train", "val", "test")}
    assert 0.75 < share["train"] < 0.85 and 0.07 < share["val"] < 0.13 and 0.07 < share["test"] < 0.13


@pytest.mark.timeout(300)
def test_cli_bad_data_exits_with_one_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(GOOD + "not json\n")
    proc = subprocess.run([sys.executable, "-m", "proxy_model.evaluate", "--data", str(path), "--json"],
                          capture_output=True, text=True, timeout=280)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"error: {path}:2: invalid JSON" in proc.stderr.strip().splitlines()[-1]


@pytest.mark.timeout(10)
def test_fixture_is_valid_and_small():
    rows = read_jsonl(FIXTURE)
    assert len(rows) == 600 and all(r.output_tokens is not None and len(r.prompt) <= 400 for r in rows)
    assert FIXTURE.stat().st_size < 300_000
