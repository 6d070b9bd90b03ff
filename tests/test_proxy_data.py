"""proxy_model data loading: clear errors naming file and line, deterministic split."""
import subprocess
import sys
from pathlib import Path

import pytest

from proxy_model.data import DataError, Row, read_jsonl, split_of

FIXTURE = Path(__file__).parent / "fixtures" / "proxy" / "sharegpt_600.jsonl"
GOOD = '{"prompt": "hi", "output_tokens": 3}\n'

BAD_CASES = {
    "invalid_json": (GOOD + '{"prompt": "x", \n', 2, "invalid JSON"),
    "missing_prompt": (GOOD + GOOD + '{"response": "x"}\n', 3, "'prompt'"),
    "missing_label": ('{"prompt": "x"}\n', 1, "'response'"),
    "negative_tokens": (GOOD + '{"prompt": "x", "output_tokens": -1}\n', 2, "non-negative"),
    "not_an_object": (GOOD + "[1, 2]\n", 2, "JSON object"),
    "bad_model": ('{"prompt": "x", "output_tokens": 1, "model": 7}\n', 1, "'model'"),
}


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
