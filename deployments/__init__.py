"""Ray Serve glue: `serve run deployments:app` (default config) or `deployments:build_app`.

`app` and `build_app` are resolved lazily, so importing a submodule (config, protocol) does not
import Ray Serve or build the application graph.
"""

__all__ = ["app", "build_app"]


def __getattr__(name: str):
    if name == "build_app":
        from deployments.app import build_app

        return build_app
    if name == "app":
        from deployments.app import build_app
        from deployments.serve_build_shim import apply_if_serve_build

        apply_if_serve_build()  # `serve build deployments:app`: app "default", HTTP on 127.0.0.1
        return build_app()
    raise AttributeError(f"module 'deployments' has no attribute {name!r}")
