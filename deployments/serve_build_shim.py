"""Make Ray's `serve build deployments:app` write what this project's docs use: the app named
`default` (what `serve.get_app_handle("default")` and `serve run` use) and Serve's HTTP proxy on
127.0.0.1, instead of Ray 2.60's hard-coded `app1` and every interface.

Invariant: active only in the `serve build` CLI process, and only for a single `deployments:app`
application (route `/`); anywhere else, or if Ray's CLI internals change, it does nothing and Ray's
own output stands. `python -m deployments.serve_config` is the general tool (any config, inline args).
"""
from __future__ import annotations

import sys
from pathlib import Path

APP_NAME = "default"
HOST = "127.0.0.1"
IMPORT_PATHS = ("deployments:app",)


def apply_if_serve_build(argv: list[str] | None = None) -> bool:
    """Patch `ray.serve.scripts` for this process when it is `serve build`; True if patched."""
    argv = sys.argv if argv is None else argv
    if not argv or Path(argv[0]).name != "serve" or argv[1:2] != ["build"]:
        return False
    try:
        from ray.serve import scripts
    except ImportError:
        return False
    if getattr(scripts, "_ssjf_build_shim", False):
        return True
    schema_cls, interfaces = getattr(scripts, "ServeApplicationSchema", None), getattr(scripts, "get_all_interfaces_ip", None)
    if schema_cls is None or interfaces is None:
        return False

    def application_schema(*args, **kwargs):
        if (kwargs.get("import_path") in IMPORT_PATHS and kwargs.get("route_prefix") == "/"
                and kwargs.get("name") == "app1"):
            kwargs["name"] = APP_NAME
        return schema_cls(*args, **kwargs)

    scripts.ServeApplicationSchema = application_schema
    scripts.get_all_interfaces_ip = lambda: HOST
    scripts._ssjf_build_shim = True
    return True
