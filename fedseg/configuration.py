"""Frozen config dataclasses to and from JSON-able dicts and kebab-case mappings.

Configs are built once (from the CLI, a TOML run config or a saved ``config.json``), validate
themselves in ``__post_init__``, and errors name the bad key and value.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration key or value that fedseg cannot use."""


def to_json(config: Any) -> Any:
    """A dataclass (nested) as plain JSON types: Paths become strings, tuples lists."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: to_json(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, Path):
        return str(config)
    if isinstance(config, (list, tuple)):
        return [to_json(v) for v in config]
    if isinstance(config, Mapping):
        return {str(k): to_json(v) for k, v in config.items()}
    return config


def non_finite_settings(config: Any, prefix: str = "") -> list[str]:
    """The dotted names of float settings of a (nested) dataclass that are NaN or infinite."""
    found = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            found.append(f"{prefix}{f.name}")
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            found += non_finite_settings(value, f"{prefix}{f.name}.")
    return found


def check_finite(config: Any) -> None:
    """Raise ``ConfigError`` naming every NaN or infinite float setting (range checks let NaN through)."""
    bad = non_finite_settings(config)
    if bad:
        values = ", ".join(f"{name} = {_value_at(config, name)}" for name in bad)
        raise ConfigError(f"settings must be finite numbers, got {values}")


def _value_at(config: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        config = getattr(config, part)
    return config


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return None
        errors = []
        for option in options:
            try:
                return _coerce(value, option, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0])
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, Mapping):
            raise ConfigError(f"'{key}' must be a table of settings, got {value!r}")
        return from_json(typing.cast(type, annotation), value, prefix=f"{key}.")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            value = [v.strip() for v in str(value).split(",") if v.strip()]
        inner = typing.get_args(annotation)[0]
        return tuple(_coerce(v, inner, key) for v in value)
    if origin in (dict, typing.Mapping) or annotation in (dict, Mapping) or origin is Mapping:
        if not isinstance(value, Mapping):
            raise ConfigError(f"'{key}' must be a mapping, got {value!r}")
        return dict(value)
    if annotation is typing.Any:
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "1", "yes", "on"):
            return True
        if str(value).lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"'{key}' must be true or false, got {value!r}")
    if annotation in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"'{key}' must be a number, got {value!r}")
        try:
            number = annotation(value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"'{key}' must be {'an integer' if annotation is int else 'a number'}, got {value!r}"
            ) from None
        if annotation is int and float(value) != number:
            raise ConfigError(f"'{key}' must be an integer, got {value!r}")
        return number
    if annotation is str:
        return str(value)
    if annotation is Path:
        return Path(value)
    return value


def from_json(cls: type[T], values: Mapping[str, Any], *, prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``values`` (snake_case or kebab-case keys). Unknown keys are an error."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for raw_key, value in values.items():
        name = str(raw_key).replace("-", "_")
        if name not in names:
            allowed = ", ".join(sorted(n.replace("_", "-") for n in names))
            raise ConfigError(f"unknown setting '{prefix}{raw_key}'; known settings: {allowed}")
        kwargs[name] = _coerce(value, hints[name], f"{prefix}{raw_key}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {error}") from None
