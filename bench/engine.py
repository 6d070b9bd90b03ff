"""Engine throughput benchmark: output tokens/s of each batching mode on a mixed-length workload.

    python -m bench.engine [--quick] [--prompts PATH]

Workload: ShareGPT first turns (default `../shared/data/prompts/sharegpt_v3_first_turn.jsonl`, rows
{id, prompt, response}; falls back to the committed fixture `tests/fixtures/engine/sharegpt_64.jsonl`, rows
{id, prompt, output_tokens}). Each request's output length is its real response length in demo-tokenizer
tokens, scaled by --output-scale and clamped to [1, --max-output-tokens]; prompts are cut to
--max-prompt-tokens. Every mode gets the same requests (ignore_eos, max_tokens = that length) and the same
max_batch_size, submitted closed-loop: all at t=0, each started as soon as the engine has a free slot.
The last stdout line is JSON: {"modes": {mode: {"tokens_per_s", "requests", "seconds", "mean_jct_s", ...}}}.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from collections import deque
from pathlib import Path

from bench.common import FIXTURES, SHARED_DATA, HelpFormatter
from engine import Engine, EngineConfig, GenerationRequest, demo_tokenizer

DEFAULT_PROMPTS = SHARED_DATA / "prompts" / "sharegpt_v3_first_turn.jsonl"
FIXTURE_PROMPTS = FIXTURES / "engine" / "sharegpt_64.jsonl"
MODES = ("none", "dynamic", "continuous")


def load_workload(path: Path, num_requests: int, output_scale: float, max_output_tokens: int,
                  max_prompt_tokens: int, seed: int) -> list[GenerationRequest]:
    tokenizer = demo_tokenizer()
    lines = path.read_text().splitlines()
    rows = [json.loads(line) for line in random.Random(seed).sample(lines, min(num_requests, len(lines)))]
    requests = []
    for index, row in enumerate(rows):
        prompt_ids = tokenizer(row["prompt"], add_special_tokens=False, truncation=True,
                               max_length=max_prompt_tokens)["input_ids"] or [tokenizer.unk_token_id]
        real_tokens = row.get("output_tokens")
        if real_tokens is None:
            real_tokens = len(tokenizer(row["response"], add_special_tokens=False)["input_ids"])
        output_tokens = min(max(round(real_tokens * output_scale), 1), max_output_tokens)
        requests.append(GenerationRequest(f"{index}-{row['id']}", prompt_token_ids=prompt_ids,
                                          max_tokens=output_tokens, ignore_eos=True))
    return requests


async def run_closed_loop(engine: Engine, requests: list[GenerationRequest]) -> dict:
    pending, done_events, tasks = deque(requests), [], []
    slot_may_be_free = asyncio.Event()

    async def run_one(req: GenerationRequest) -> None:
        async for event in engine.generate(req):
            if event["type"] == "done":
                done_events.append(event)
        slot_may_be_free.set()

    start_s, start_cpu_s = time.time(), time.process_time()
    while pending:
        slot_may_be_free.clear()
        while pending and engine.num_free_slots > 0:
            tasks.append(asyncio.create_task(run_one(pending.popleft())))
            await asyncio.sleep(0)  # lets the new task reserve its slot before the next free-slot check
        if pending:
            await slot_may_be_free.wait()
    await asyncio.gather(*tasks)
    seconds, cpu_s = time.time() - start_s, time.process_time() - start_cpu_s
    return summarize(done_events, start_s, seconds, cpu_s)


def summarize(done_events: list[dict], start_s: float, seconds: float, cpu_s: float) -> dict:
    num_tokens = sum(event["usage"]["completion_tokens"] for event in done_events)
    return {
        "tokens_per_s": round(num_tokens / seconds, 1),
        "tokens_per_cpu_s": round(num_tokens / cpu_s, 1),
        "requests": len(done_events),
        "output_tokens": num_tokens,
        "seconds": round(seconds, 2),
        "mean_jct_s": round(statistics.mean(e["timings"]["finished_at_s"] - start_s for e in done_events), 2),
        "mean_ttft_s": round(statistics.mean(e["timings"]["first_token_at_s"] - start_s for e in done_events), 2),
        "finish_reasons": sorted({event["finish_reason"] for event in done_events}),
    }


def bench_mode(mode: str, requests: list[GenerationRequest], max_batch_size: int, batch_wait_ms: float) -> dict:
    engine = Engine(EngineConfig(batching=mode, max_batch_size=max_batch_size, batch_wait_ms=batch_wait_ms))
    try:
        warmup = [GenerationRequest(f"warmup-{i}", prompt="warm up", max_tokens=4, ignore_eos=True)
                  for i in range(engine.capacity)]
        asyncio.run(run_closed_loop(engine, warmup))
        fresh = [GenerationRequest(**{**vars(req), "request_id": f"{mode}-{req.request_id}"}) for req in requests]
        return asyncio.run(run_closed_loop(engine, fresh))
    finally:
        engine.close()


def print_table(results: dict[str, dict]) -> None:
    print(f"{'mode':<12}{'requests':>9}{'tokens':>8}{'seconds':>9}{'tokens/s':>10}{'tokens/cpu-s':>14}"
          f"{'mean JCT s':>12}{'mean TTFT s':>13}")
    for mode, r in results.items():
        print(f"{mode:<12}{r['requests']:>9}{r['output_tokens']:>8}{r['seconds']:>9.1f}{r['tokens_per_s']:>10.1f}"
              f"{r['tokens_per_cpu_s']:>14.1f}{r['mean_jct_s']:>12.2f}{r['mean_ttft_s']:>13.2f}")
    if "dynamic" in results and "continuous" in results:
        continuous, dynamic = results["continuous"], results["dynamic"]
        print(f"continuous / dynamic: tokens/s {continuous['tokens_per_s'] / dynamic['tokens_per_s']:.2f}x, "
              f"tokens/cpu-s {continuous['tokens_per_cpu_s'] / dynamic['tokens_per_cpu_s']:.2f}x")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="48 requests, output lengths x0.5 capped at 256 (about 3-5 min on 2 CPU cores)")
    parser.add_argument("--prompts", type=Path, default=None,
                        help=f"JSONL workload (default {DEFAULT_PROMPTS}, else the committed fixture)")
    parser.add_argument("--num-requests", type=int, default=None, help="default: 64, or 48 with --quick")
    parser.add_argument("--output-scale", type=float, default=None,
                        help="output length = real response length x this; default: 1.0, or 0.5 with --quick")
    parser.add_argument("--max-output-tokens", type=int, default=None, help="default: 1024, or 256 with --quick")
    parser.add_argument("--max-prompt-tokens", type=int, default=256)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-wait-ms", type=float, default=10.0)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--torch-threads", type=int, default=0,
                        help="torch intra-op threads (0: torch's default); 1 is steadier on a shared 2-core box")
    args = parser.parse_args(argv)
    quick_defaults, full_defaults = (48, 0.5, 256), (64, 1.0, 1024)
    defaults = quick_defaults if args.quick else full_defaults
    for name, default in zip(("num_requests", "output_scale", "max_output_tokens"), defaults):
        if getattr(args, name) is None:
            setattr(args, name, default)
    if args.prompts is None:
        args.prompts = DEFAULT_PROMPTS if DEFAULT_PROMPTS.exists() else FIXTURE_PROMPTS
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.torch_threads > 0:
        import torch

        torch.set_num_threads(args.torch_threads)
    requests = load_workload(args.prompts, args.num_requests, args.output_scale, args.max_output_tokens,
                             args.max_prompt_tokens, args.seed)
    lengths = sorted(req.max_tokens for req in requests)
    print(f"workload: {len(requests)} requests from {args.prompts}; output tokens min {lengths[0]} "
          f"median {statistics.median(lengths):g} max {lengths[-1]} total {sum(lengths)}; "
          f"max_batch_size {args.max_batch_size}; torch threads {_torch_threads()}", flush=True)
    results = {}
    for mode in args.modes.split(","):
        results[mode] = bench_mode(mode, requests, args.max_batch_size, args.batch_wait_ms)
        print(f"{mode}: {results[mode]}", flush=True)
    print_table(results)
    print(json.dumps({"modes": results}))


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
