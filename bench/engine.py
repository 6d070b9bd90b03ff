"""Engine throughput benchmark: output tokens/s of each batching mode on a mixed-length workload.

    python -m bench.engine [--quick] [--prompts PATH] [--model NAME]

Workload: ShareGPT first turns (default `../shared/data/prompts/sharegpt_v3_first_turn.jsonl`, rows
{id, prompt, response}; for a model other than `demo`, `../shared/data/lengths/<model>_*.jsonl` when present
(the model's own greedy lengths); falls back to the committed fixture `tests/fixtures/engine/sharegpt_64.jsonl`,
rows {id, prompt, output_tokens}). Each request's output length is the row's `output_tokens`, else its response
length in the model's tokens, scaled by --output-scale and clamped to [1, --max-output-tokens]. The demo
model's prompts are cut to --max-prompt-tokens; a chat model's prompts go through its chat template and rows
longer than that are not sampled. Every mode gets the same requests (ignore_eos, max_tokens = that length) and
the same max_batch_size, submitted closed-loop: all at t=0, each started as soon as the engine has a free slot.
Mode `hf-generate` (default for models other than demo) is the baseline: HF `generate` on static padded
batches of the same requests (`bench/hf_generate.py`).
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
from typing import Any

from bench.common import FIXTURES, SHARED_DATA, HelpFormatter
from engine import Engine, EngineConfig, GenerationRequest, load_tokenizer

DEFAULT_PROMPTS = SHARED_DATA / "prompts" / "sharegpt_v3_first_turn.jsonl"
FIXTURE_PROMPTS = FIXTURES / "engine" / "sharegpt_64.jsonl"
MODES = ("none", "dynamic", "continuous")
HF_GENERATE = "hf-generate"


def load_workload(path: Path, num_requests: int, output_scale: float, max_output_tokens: int,
                  max_prompt_tokens: int, seed: int, model: str = "demo") -> list[GenerationRequest]:
    tokenizer = load_tokenizer(EngineConfig(model=model))
    encoded = [(row, _prompt_ids(row["prompt"], tokenizer, max_prompt_tokens))
               for row in map(json.loads, filter(str.strip, path.open()))]  # not splitlines: U+2028 in text
    fitting = [(row, ids) for row, ids in encoded if len(ids) <= max_prompt_tokens]
    sample = random.Random(seed).sample(fitting, min(num_requests, len(fitting)))
    requests = []
    for index, (row, prompt_ids) in enumerate(sample):
        real_tokens = row.get("output_tokens")
        if real_tokens is None:
            real_tokens = len(tokenizer(row["response"], add_special_tokens=False)["input_ids"])
        output_tokens = min(max(round(real_tokens * output_scale), 1), max_output_tokens)
        requests.append(GenerationRequest(f"{index}-{row['id']}", prompt_token_ids=prompt_ids,
                                          max_tokens=output_tokens, ignore_eos=True))
    return requests


def _prompt_ids(prompt: str, tokenizer: Any, max_prompt_tokens: int) -> list[int]:
    """A chat model's prompt through its chat template (uncut); the demo model's plain text cut to fit."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(prompt, add_special_tokens=False, truncation=True,
                     max_length=max_prompt_tokens)["input_ids"] or [tokenizer.unk_token_id]


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


def bench_mode(mode: str, requests: list[GenerationRequest], max_batch_size: int, batch_wait_ms: float,
               model: str = "demo") -> dict:
    engine = Engine(EngineConfig(model=model, batching="continuous" if mode == HF_GENERATE else mode,
                                 max_batch_size=max_batch_size, batch_wait_ms=batch_wait_ms))
    if mode == HF_GENERATE:
        from bench.hf_generate import bench_hf_generate

        engine.close()  # only its model and tokenizer are used
        return bench_hf_generate(engine.model, engine.tokenizer, requests, max_batch_size)
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
        ttft = "-" if r["mean_ttft_s"] is None else f"{r['mean_ttft_s']:.2f}"
        print(f"{mode:<12}{r['requests']:>9}{r['output_tokens']:>8}{r['seconds']:>9.1f}{r['tokens_per_s']:>10.1f}"
              f"{r['tokens_per_cpu_s']:>14.1f}{r['mean_jct_s']:>12.2f}{ttft:>13}")
    for baseline in ("dynamic", HF_GENERATE):
        if baseline in results and "continuous" in results:
            continuous, other = results["continuous"], results[baseline]
            print(f"continuous / {baseline}: tokens/s {continuous['tokens_per_s'] / other['tokens_per_s']:.2f}x, "
                  f"tokens/cpu-s {continuous['tokens_per_cpu_s'] / other['tokens_per_cpu_s']:.2f}x")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="48 requests, output lengths x0.5 capped at 256 (about 3-5 min on 2 CPU cores)")
    parser.add_argument("--prompts", type=Path, default=None,
                        help=f"JSONL workload (default {DEFAULT_PROMPTS}, or the model's own lengths file "
                             f"next to it (see above), else the committed fixture)")
    parser.add_argument("--num-requests", type=int, default=None, help="default: 64, or 48 with --quick")
    parser.add_argument("--output-scale", type=float, default=None,
                        help="output length = real response length x this; default: 1.0, or 0.5 with --quick")
    parser.add_argument("--max-output-tokens", type=int, default=None, help="default: 1024, or 256 with --quick")
    parser.add_argument("--max-prompt-tokens", type=int, default=256)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-wait-ms", type=float, default=10.0)
    parser.add_argument("--model", default="demo", help="engine.model, e.g. smollm2-135m-instruct")
    parser.add_argument("--modes", default=None, help=f"comma list of {', '.join(MODES + (HF_GENERATE,))} "
                                                      f"(default: all; {HF_GENERATE} only for a model other than demo)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--torch-threads", type=int, default=0,
                        help="torch intra-op threads (0: torch's default); 1 is steadier on a shared 2-core box")
    args = parser.parse_args(argv)
    quick_defaults, full_defaults = (48, 0.5, 256), (64, 1.0, 1024)
    defaults = quick_defaults if args.quick else full_defaults
    for name, default in zip(("num_requests", "output_scale", "max_output_tokens"), defaults):
        if getattr(args, name) is None:
            setattr(args, name, default)
    if args.modes is None:
        args.modes = ",".join(MODES + ((HF_GENERATE,) if args.model != "demo" else ()))
    if args.prompts is None:
        own_lengths = sorted((SHARED_DATA / "lengths").glob(f"{args.model.replace('-', '_')}_*.jsonl"))
        defaults = ([own_lengths[0]] if args.model != "demo" and own_lengths else []) + [DEFAULT_PROMPTS]
        args.prompts = next((path for path in defaults if path.exists()), FIXTURE_PROMPTS)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.torch_threads > 0:
        import torch

        torch.set_num_threads(args.torch_threads)
    requests = load_workload(args.prompts, args.num_requests, args.output_scale, args.max_output_tokens,
                             args.max_prompt_tokens, args.seed, args.model)
    lengths = sorted(req.max_tokens for req in requests)
    print(f"workload: {len(requests)} requests from {args.prompts}; output tokens min {lengths[0]} "
          f"median {statistics.median(lengths):g} max {lengths[-1]} total {sum(lengths)}; "
          f"max_batch_size {args.max_batch_size}; torch threads {_torch_threads()}", flush=True)
    results = {}
    for mode in args.modes.split(","):
        results[mode] = bench_mode(mode, requests, args.max_batch_size, args.batch_wait_ms, args.model)
        print(f"{mode}: {results[mode]}", flush=True)
    print_table(results)
    print(json.dumps({"modes": results}))


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
