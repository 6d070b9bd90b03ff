"""Check, before anything is deployed, that the configured model and tokenizer can be loaded.

Invariant: cheap and bounded — no torch or transformers import, no download, at most one metadata
request per name with a short timeout and no retries. A name resolves when it is the built-in `demo`
(or, as a model, the simulated `sim[:costs]`),
a local directory, or a Hugging Face repo id that is in the local HF cache or (online) on the Hub.
With `HF_HUB_OFFLINE=1`, a repo id that is not in the local cache is an error. A named model
(`engine.models`, e.g. `smollm2-135m-instruct`) resolves when its pip package holds the file with the
registry's sha256 and `gguf` is installed; the error names the install command.
"""
from __future__ import annotations

import os
from pathlib import Path

from engine.models import ModelUnavailable, is_named, is_sim_model, require_gguf_support, verified_gguf

DEMO_MODEL_NAME = "demo"  # engine.tokenizer.DEMO_MODEL_NAME, without importing transformers
HUB_TIMEOUT_S = 5.0
# One of these files is enough to call a name a model / a tokenizer (what transformers looks for).
MODEL_FILES = ("config.json",)
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "vocab.json", "vocab.txt", "tokenizer.model")


class ModelNotFound(ValueError):
    """The name cannot be loaded; the message says why, in one line."""


def check_name(name: str, kind: str = "model") -> None:
    """Raise `ModelNotFound` unless `name` (a model or tokenizer name) resolves."""
    if name == DEMO_MODEL_NAME or (kind == "model" and is_sim_model(name)):
        return
    if is_named(name):
        try:
            verified_gguf(name)
            require_gguf_support(name)
        except ModelUnavailable as exc:
            raise ModelNotFound(str(exc)) from None
        return
    files = MODEL_FILES if kind == "model" else TOKENIZER_FILES + MODEL_FILES
    local = Path(name).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ModelNotFound(f"{name!r} is a file, not a model directory")
        if not any((local / f).is_file() for f in files):
            raise ModelNotFound(f"local directory {name!r} has none of {', '.join(files)}")
        return
    if _looks_like_path(name):
        raise ModelNotFound(f"no such local directory {name!r}")
    _check_hub_id(name, files)


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def _check_hub_id(repo_id: str, files: tuple[str, ...]) -> None:
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        from huggingface_hub.utils import validate_repo_id
        validate_repo_id(repo_id)
    except HFValidationError:
        raise ModelNotFound(f"{repo_id!r} is neither a local directory nor a valid Hugging Face repo id") from None
    for filename in files:
        if isinstance(try_to_load_from_cache(repo_id, filename), str):
            return
    if constants.HF_HUB_OFFLINE:
        raise ModelNotFound(f"{repo_id!r} is not a local directory and not in the local Hugging Face cache "
                            f"({constants.HF_HUB_CACHE}), and HF_HUB_OFFLINE=1 forbids downloading it")
    for filename in files:
        try:
            get_hf_file_metadata(hf_hub_url(repo_id, filename), timeout=HUB_TIMEOUT_S)
            return
        except Exception as exc:  # not found, gated, no network: say which, in one line
            if "EntryNotFound" not in type(exc).__name__:
                raise ModelNotFound(_hub_reason(repo_id, exc)) from None
    raise ModelNotFound(f"{repo_id!r} on the Hugging Face Hub has none of {', '.join(files)}")


def _hub_reason(repo_id: str, exc: Exception) -> str:
    kind = type(exc).__name__
    if kind == "RepositoryNotFoundError":
        return (f"{repo_id!r} is not a local directory and not a model on the Hugging Face Hub "
                f"(if it is private or gated, set HF_TOKEN)")
    if kind == "GatedRepoError":
        return f"{repo_id!r} is a gated model: accept its terms on the Hub and set HF_TOKEN"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else kind
    return (f"{repo_id!r} is not a local directory, not in the local Hugging Face cache, and the Hub could "
            f"not be asked ({kind}: {first[:160]}); set HF_HUB_OFFLINE=1 to use only the cache")
