"""`make serve`: `serve run deployments:build_app` on a local Ray whose metrics export port is fixed.

    python -m deployments.serve_local [--metrics-port 8080] [config=PATH] [policy=fcfs] [KEY=VALUE ...]

Plain `serve run` starts a local Ray whose Prometheus metrics export port is random; this starts that
same local Ray (it lives and dies with this process) with the port fixed, then runs Serve's own
`serve run` in-process. Scrape `http://127.0.0.1:PORT/metrics` (series `ray_ssjf_*`); `GET
/v1/scheduler` reports the URL under `metrics_export`. The app arguments are checked before Ray starts.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
from typing import Optional

DEFAULT_METRICS_PORT = 8080


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m deployments.serve_local", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--metrics-port", type=int,
                    default=int(os.environ.get("RAY_METRICS_EXPORT_PORT") or DEFAULT_METRICS_PORT),
                    help="Prometheus metrics export port of the local Ray node ($RAY_METRICS_EXPORT_PORT)")
    ap.add_argument("app_args", nargs="*", metavar="KEY=VALUE", help="as for serve run deployments:build_app")
    return ap.parse_args(argv)


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
            return False
        except OSError:
            return True


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    from deployments.app import resolve_config
    from deployments.typed_config import ConfigError

    pairs = dict(a.partition("=")[::2] for a in args.app_args)
    try:
        bad = [a for a in args.app_args if "=" not in a]
        if bad:
            raise ConfigError(f"argument {bad[0]}: expected KEY=VALUE")
        resolve_config(pairs)  # fail fast, before Ray starts
    except ConfigError as exc:
        print(f"ssjf-serve: config error: {exc}", file=sys.stderr)
        return 2
    if port_in_use(args.metrics_port):
        print(f"ssjf-serve: metrics port {args.metrics_port} is in use; pass --metrics-port or set "
              f"RAY_METRICS_EXPORT_PORT", file=sys.stderr)
        return 2
    import ray
    from ray.serve._private.constants import SERVE_NAMESPACE
    from ray.serve.scripts import cli

    ray.init(namespace=SERVE_NAMESPACE, _metrics_export_port=args.metrics_port)
    print(f"ssjf-serve: Prometheus metrics on http://127.0.0.1:{args.metrics_port}/metrics (ray_ssjf_*)",
          file=sys.stderr, flush=True)
    sys.argv = ["serve", "run", "deployments:build_app", *args.app_args]
    try:
        cli.main(sys.argv[1:], prog_name="serve", standalone_mode=True)
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
