"""Natural-length replay (`bench.replay --natural`): label rows, workload, payload, client parsing, summary.
No model load and no Ray: the client test streams the real `deployments.openai_format` chunks from a
loopback aiohttp server."""
import asyncio
import re

import numpy as np
import pytest

from bench.replay.cli import FIXTURE_LABELS, PRESETS, parse_args
from bench.replay.client import payload, send_one, url_of
from bench.replay.metrics import RequestResult, summarize
from bench.replay.natural import CHAT_PATH, LabelRow, load_label_rows, read_label_rows, streamed_tokens
from bench.replay.workload import build_workload
from proxy_model.data import DataError, split_of

pytestmark = pytest.mark.timeout(60)


def _rows(tmp_path, lines: list[str]):
    path = tmp_path / "labels.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_fixture_is_the_smollm2_test_split_with_a_256_cap():
    rows = load_label_rows(FIXTURE_LABELS, split_seed=0, split="test")
    assert len(rows) == 82 and all(split_of(r.prompt, 0) == "test" for r in rows)
    assert {r.cap_tokens for r in rows} == {256}
    assert sum(r.finish_reason == "length" for r in rows) == 59
    assert all((r.true_output_tokens == 256) == (r.finish_reason == "length") for r in rows)
    assert load_label_rows(FIXTURE_LABELS, split_seed=0, split="val") == []


def test_natural_payload_lets_the_model_stop_and_tells_only_the_oracle():
    rows = load_label_rows(FIXTURE_LABELS, split_seed=0)
    items = build_workload(np.arange(30.0), rows, seed=3, natural=True)
    by_prompt = {r.prompt: r for r in rows}
    for item in items:
        body, row = payload(item), by_prompt[item.prompt]
        assert body["messages"] == [{"role": "user", "content": row.prompt}]  # uncut, chat-templated server-side
        assert "bench_stop_after_tokens" not in body and "ignore_eos" not in body and "prompt" not in body
        assert body["temperature"] == 0 and body["stream"] is True and body["max_tokens"] == 256
        assert body["oracle_output_tokens"] == row.true_output_tokens == item.output_tokens
        assert item.finish_reason == row.finish_reason and item.prompt_tokens == row.prompt_tokens
        assert url_of("http://127.0.0.1:8000", item) == "http://127.0.0.1:8000" + CHAT_PATH
    assert items == build_workload(np.arange(30.0), rows, seed=3, natural=True)


def test_smaller_client_cap_turns_labels_into_min_label_cap():
    rows = [LabelRow("a", 40, "stop", 31, 256), LabelRow("b", 100, "stop", 31, 256),
            LabelRow("c", 256, "length", 31, 256), LabelRow("d", 99, "stop", None, 256)]
    items = build_workload(np.arange(4.0), rows, seed=0, natural=True, client_max_tokens=100)
    got = {it.prompt: (it.max_tokens, it.output_tokens, it.finish_reason, payload(it)["oracle_output_tokens"])
           for it in items}
    assert got == {"a": (100, 40, "stop", 40), "b": (100, 100, "length", 100), "c": (100, 100, "length", 100),
                   "d": (100, 99, "stop", 99)}
    # a client cap above the labels' cap sends the labels' cap (capped labels stay valid)
    assert {it.max_tokens for it in build_workload(np.arange(4.0), rows, seed=0, natural=True)} == {256}


@pytest.mark.parametrize("bad, message", [
    ('{"prompt": "hi", "output_tokens": 3', "invalid JSON"),
    ('{"prompt": "hi", "output_tokens": 3}', "'finish_reason' must be one of"),
    ('{"prompt": "hi", "output_tokens": true, "finish_reason": "stop"}', "'output_tokens' must be an integer"),
    ('{"messages": [{"role": "user", "content": "hi"}], "output_tokens": 3, "finish_reason": "stop"}',
     "needs a non-empty 'prompt'"),
    ('{"prompt": "hi", "output_tokens": 200, "finish_reason": "length"}', "the labels' cap would be 200"),
    ('{"prompt": "hi", "output_tokens": 300, "finish_reason": "stop"}', "contradicts the labels' cap of 256"),
])
def test_a_malformed_label_row_names_file_and_line(tmp_path, bad, message):
    path = _rows(tmp_path, ['{"prompt": "x", "output_tokens": 256, "finish_reason": "length"}', "", bad])
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:3: .*{re.escape(message)}"):
        read_label_rows(path)


def test_cli_reports_a_bad_label_row_and_natural_options(tmp_path):
    from bench.replay.run import main

    path = _rows(tmp_path, ['{"prompt": "hi", "output_tokens": 3, "finish_reason": "eos"}'])
    with pytest.raises(SystemExit, match=rf"error: {re.escape(str(path))}:1: 'finish_reason'"):
        main(["--natural", "--model", "smollm2-135m-instruct", "--prompts", str(path), "--split-seed", "0"])
    args = parse_args(["--natural", "--model", "m", "--num-requests", "12"])
    assert args.num_requests == 12 and args.output_scale == 1.0 and not args.max_prompt_tokens
    assert args.max_span_s == PRESETS["natural"]["max_span_s"]
    with pytest.raises(SystemExit, match="unscaled"):
        parse_args(["--natural", "--model", "m", "--output-scale", "0.5"])
    with pytest.raises(SystemExit, match="name the model"):
        parse_args(["--natural"])


def _result(index, actual, expected, finish, expected_finish, prompt_tokens=31):
    return RequestResult(index, 0.0, sent_s=0.0, first_token_s=0.1, finished_s=1.0, output_tokens=actual,
                         prompt_tokens=prompt_tokens, expected_output_tokens=expected, finish_reason=finish,
                         expected_finish_reason=expected_finish, expected_prompt_tokens=31)


def test_summary_counts_label_matches_cap_hits_and_prompt_mismatches():
    results = [_result(0, 40, 40, "stop", "stop"), _result(1, 256, 256, "length", "length"),
               _result(2, 256, 120, "length", "stop", prompt_tokens=32), _result(3, 60, 256, "stop", "length")]
    s = summarize(results)
    assert s["label_match_rate"] == 0.5 and s["mean_abs_label_error_tokens"] == (136 + 196) / 4
    assert s["num_cap_hits"] == 2 and s["num_recorded_cap_hits"] == 2 and s["finish_reason_match_rate"] == 0.5
    assert s["num_prompt_token_mismatches"] == 1 and s["num_length_mismatches"] == 2
    forced = summarize([RequestResult(0, 0.0, sent_s=0.0, finished_s=1.0, output_tokens=5, expected_output_tokens=5)])
    assert "label_match_rate" not in forced  # forced-length replays keep their summary keys


def test_natural_calibration_counts_tokens_streamed_in_the_window_finished_or_not():
    done, running = RequestResult(0, 0.0), RequestResult(1, 0.0)
    done.token_times_s, running.token_times_s = [1.0, 5.0, 11.0, 19.9], [10.0, 20.0]
    assert streamed_tokens([done, running], 10.0, 20.0) == 3


def test_client_reads_finish_reason_and_usage_from_a_real_chat_stream():
    from aiohttp import ClientSession, web

    from bench.common import free_port
    from deployments.openai_format import ResponseWriter, sse_data
    from deployments.protocol import ParsedRequest

    parsed = ParsedRequest("r1", "text", [1] * 31, 256, 0.0, 1.0, None, [], False, True, "m")
    writer = ResponseWriter(parsed, "chat", include_ssjf=True)
    events = [{"type": "token", "text": t, "token_ids": [7]} for t in ("Hel", "lo")]
    events.append({"type": "done", "finish_reason": "stop", "usage": {"prompt_tokens": 31, "completion_tokens": 2},
                   "ssjf": {"predicted_output_tokens": 9.0, "queue_wait_s": 0.0, "replica": "a"}, "timings": {}})

    async def handler(request):
        assert "bench_stop_after_tokens" not in await request.json()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for event in events:
            for chunk in writer.chunks(event):
                await resp.write(sse_data(chunk).encode())
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def go():
        app = web.Application()
        app.router.add_post(CHAT_PATH, handler)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        item = build_workload(np.zeros(1), [LabelRow("hi", 2, "stop", 31, 256)], seed=0, natural=True)[0]
        try:
            async with ClientSession() as session:
                result = RequestResult(0, 0.0)
                return await send_one(session, url_of(f"http://127.0.0.1:{port}", item), item, lambda: 0.0, result)
        finally:
            await runner.cleanup()

    r = asyncio.run(go())
    assert r.ok and (r.finish_reason, r.output_tokens, r.prompt_tokens) == ("stop", 2, 31)
    assert (r.expected_finish_reason, r.expected_output_tokens, r.expected_prompt_tokens) == ("stop", 2, 31)
    assert len(r.token_times_s) == 2 and summarize([r])["label_match_rate"] == 1.0
