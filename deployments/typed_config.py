"""Build nested dataclasses from plain dicts (parsed YAML), strictly.

Invariant: a config tree either builds completely or raises `ConfigError` naming the dotted key
that is wrong (unknown key, wrong type, or a value the dataclass's own validation rejects).
Nothing is silently dropped or coerced except int -> float and `inf` / `-inf` strings -> float.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Union


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names the dotted key."""


def build(cls: type, data: Any, path: str = "") -> Any:
    """Instantiate dataclass `cls` from `data` (a dict), recursing into dataclass-typed fields."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(
            f"unknown config key {where}{unknown[0]!s} (valid keys under {path or 'the top level'}: "
            f"{', '.join(sorted(fields))})"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {name: _convert(hints[name], value, _join(path, name)) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{path or 'config'}: {exc}") from exc


def to_dict(obj: Any) -> Any:
    """The inverse of `build`: a dataclass tree as plain dicts (for Serve, logs and status)."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _convert(hint: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _convert(option, value, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{path}: invalid value {value!r}")
    if dataclasses.is_dataclass(hint):
        return build(hint, value, path)
    if hint is Any:
        return value
    if origin is typing.Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ConfigError(f"{path}: must be one of {', '.join(map(repr, allowed))} (got {value!r})")
        return value
    if origin in (dict, list, tuple):
        if not isinstance(value, origin if origin is not tuple else (list, tuple)):
            raise ConfigError(f"{path}: expected a {origin.__name__}, got {type(value).__name__}")
        return tuple(value) if origin is tuple else value
    return _convert_scalar(hint, value, path)


_INFINITIES = {"inf": math.inf, "+inf": math.inf, ".inf": math.inf, "infinity": math.inf,
               "-inf": -math.inf, "-.inf": -math.inf, "-infinity": -math.inf}


def _convert_scalar(hint: Any, value: Any, path: str) -> Any:
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str) and value.strip().lower() in _INFINITIES:
        return _INFINITIES[value.strip().lower()]  # YAML spells it .inf; `inf` is what people type
    if hint is int and isinstance(value, bool):
        raise ConfigError(f"{path}: expected an int, got a bool")
    if isinstance(hint, type) and not isinstance(value, hint):
        raise ConfigError(f"{path}: expected {hint.__name__}, got {type(value).__name__} ({value!r})")
    return value
