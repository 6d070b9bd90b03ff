"""Router overhead: p50 latency the SSJF router path adds over calling an engine replica directly,
and the predictor's cost per request at batch 1 and under concurrent load.

    python -m bench.overhead [--requests 50] [--max-tokens 1] [--concurrency 64]

Last stdout line: JSON with `direct_p50_ms`, `router_handle_p50_ms`, `router_http_p50_ms`,
`router_overhead_p50_ms` (handle path minus direct), `predictor_ms_per_prompt_batch1`,
`predictor_ms_per_prompt_batch32` and `predictor_under_load` (mean batch size, ms per prompt).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

from bench.common import HelpFormatter, percentile

PROMPTS = [
    "Explain the difference between a process and a thread.",
    "hi",
    "Write a haiku about autumn leaves.",
    "Summarize the plot of Hamlet in three sentences.",
    "What is the capital of Australia?",
    "Write a Python function that checks whether a string is a palindrome, with tests.",
    "Give me ten ideas for a birthday party for a seven year old.",
    "Translate 'where is the train station' into German and Spanish.",
]


def percentile_ms(samples_s: list[float], q: float) -> float:
    return 1000 * percentile(samples_s, 100 * q)


def time_calls(fn, count: int) -> list[float]:
    fn(0)  # warm-up
    samples = []
    for i in range(count):
        started = time.perf_counter()
        fn(i)
        samples.append(time.perf_counter() - started)
    return samples


def predictor_costs(num_prompts: int) -> dict[str, float]:
    from proxy_model import load_predictor

    predictor = load_predictor()
    prompts = [PROMPTS[i % len(PROMPTS)] + f" ({i})" for i in range(max(num_prompts, 32))]
    predictor.predict(prompts[:4])
    batch1 = time_calls(lambda i: predictor.predict([prompts[i % len(prompts)]]), num_prompts)
    started = time.perf_counter()
    rounds = 5
    for _ in range(rounds):
        predictor.predict(prompts[:32])
    batch32_s = (time.perf_counter() - started) / (rounds * 32)
    return {"predictor_ms_per_prompt_batch1": round(percentile_ms(batch1, 0.5), 3),
            "predictor_ms_per_prompt_batch32": round(1000 * batch32_s, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__.splitlines()[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--max-tokens", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import ray
    import requests
    from ray import serve

    from deployments.app import app_from_config
    from deployments.config import DEMO_OVERRIDES, load_config
    from engine import demo_tokenizer

    results = predictor_costs(args.requests)
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir="/tmp/ray_ssjf_bench", logging_level="WARNING")
    try:
        port = 8765
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        config = load_config(None, {**DEMO_OVERRIDES, "engine_replicas.num_replicas": 1})
        router = serve.run(app_from_config(config), name="default", route_prefix="/")
        while not router.status.remote().result()["replicas"]:
            time.sleep(0.2)
        replica_id = next(iter(router.status.remote().result()["replicas"]))
        engine = serve.get_deployment_handle("Engine", "default")
        tokenizer = demo_tokenizer()
        token_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]

        def direct(i: int) -> None:
            request = {"request_id": f"direct-{i}-{time.time_ns()}", "prompt_token_ids": token_ids[i % len(PROMPTS)],
                       "max_tokens": args.max_tokens, "ignore_eos": True, "temperature": 0.0}
            for _ in engine.options(stream=True).generate_stream.remote(request, replica_id=replica_id):
                pass

        def via_handle(i: int) -> None:
            router.generate.remote(prompt=PROMPTS[i % len(PROMPTS)], max_tokens=args.max_tokens,
                                   ignore_eos=True, temperature=0.0).result()

        def via_http(i: int) -> None:
            r = requests.post(f"http://127.0.0.1:{port}/v1/completions", timeout=60, json={
                "prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": args.max_tokens, "ignore_eos": True,
                "temperature": 0.0})
            r.raise_for_status()

        for name, fn in [("direct", direct), ("router_handle", via_handle), ("router_http", via_http)]:
            samples = time_calls(fn, args.requests)
            results[f"{name}_p50_ms"] = round(percentile_ms(samples, 0.5), 2)
            results[f"{name}_p90_ms"] = round(percentile_ms(samples, 0.9), 2)
            print(f"{name:14s} p50 {results[f'{name}_p50_ms']:8.2f} ms  p90 {results[f'{name}_p90_ms']:8.2f} ms")
        results["router_overhead_p50_ms"] = round(results["router_handle_p50_ms"] - results["direct_p50_ms"], 2)

        before = router.status.remote().result()["predictor"]
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(via_handle, range(args.concurrency)))
        after = router.status.remote().result()["predictor"]
        batches = after["batches"] - before["batches"]
        prompts = after["prompts"] - before["prompts"]
        results["predictor_under_load"] = {
            "concurrent_requests": args.concurrency, "batches": batches,
            "mean_batch_size": round(prompts / max(batches, 1), 2),
            "ms_per_prompt": round(1000 * (after["seconds"] - before["seconds"]) / max(prompts, 1), 3)}
        serve.delete("default")
    finally:
        serve.shutdown()
        ray.shutdown()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
