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


TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")


def coerce(value: Any, annotation: Any, key: str) -> Any:
    """``value`` as type ``annotation``: the one coercion of every config source (TOML run config, CLI,
    ``config.json``). Booleans are true/false or the words true/yes/on/1 and false/no/off/0 (any case);
    integers and numbers are numbers or text that reads as one (never a boolean); strings must be text.
    Errors (``ConfigError``) name ``key`` and the value."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return _coerce_optional(value, annotation, key)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, Mapping):
            raise ConfigError(f"'{key}' must be a table of settings, got {value!r}")
        return from_json(typing.cast(type, annotation), value, prefix=f"{key}.")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            value = [v.strip() for v in str(value).split(",") if v.strip()]
        inner = typing.get_args(annotation)[0]
        return tuple(coerce(v, inner, key) for v in value)
    if origin in (dict, typing.Mapping) or annotation in (dict, Mapping) or origin is Mapping:
        if not isinstance(value, Mapping):
            raise ConfigError(f"'{key}' must be a mapping, got {value!r}")
        return dict(value)
    if annotation is bool:
        return _coerce_bool(value, key)
    if annotation in (int, float):
        return _coerce_number(value, annotation, key)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"'{key}' must be a string, got {value!r}")
        return value
    if annotation is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"'{key}' must be a path, got {value!r}")
        return Path(value)
    return value


def _coerce_optional(value: Any, annotation: Any, key: str) -> Any:
    if value is None:
        return None
    errors = []
    for option in (a for a in typing.get_args(annotation) if a is not type(None)):
        try:
            return coerce(value, option, key)
        except ConfigError as error:
            errors.append(str(error))
    raise ConfigError(errors[0])


def _coerce_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS:
        return True
    if isinstance(value, str) and value.strip().lower() in FALSE_WORDS:
        return False
    raise ConfigError(f"'{key}' must be true or false, got {value!r}")


def _coerce_number(value: Any, annotation: type, key: str) -> int | float:
    kind = "an integer" if annotation is int else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"'{key}' must be {kind}, got {value!r}")
    if isinstance(value, int):
        return annotation(value)
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"'{key}' must be {kind}, got {value!r}") from None
    if annotation is float:
        return number
    if not number.is_integer():
        raise ConfigError(f"'{key}' must be an integer, got {value!r}")
    return int(number)


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
        kwargs[name] = coerce(value, hints[name], f"{prefix}{raw_key}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {error}") from None


@dataclasses.dataclass(frozen=True)
class FlatSection:
    """A nested config dataclass whose fields are flat kebab-case keys: in a run config (whose values are
    scalars) and as CLI flags. Every field of ``cls`` is a key, so a field added to ``cls`` is a setting at
    once. ``renames`` gives a field another key (a clearer one, or the name used before); an optional field
    (``X | None``) reads 0 or the empty string as None, and writes None back as 0 (or "")."""

    attribute: str  # the owner's field that holds the section, e.g. ``teacher``
    cls: type
    renames: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def keys(self) -> dict[str, str]:
        """Flat key -> field name."""
        return {self.renames.get(f.name, f.name.replace("_", "-")): f.name for f in dataclasses.fields(self.cls)}

    def hints(self) -> dict[str, Any]:
        return typing.get_type_hints(self.cls)

    def build(self, values: Mapping[str, Any], base: Any = None) -> Any:
        """``base`` (default: ``cls()``) with the flat ``values`` set; errors name the keys and values."""
        names, hints = self.keys(), self.hints()
        changes: dict[str, Any] = {}
        for key, value in values.items():
            name = names[key]
            if _is_optional(hints[name]) and _means_none(value):
                changes[name] = None
            else:
                changes[name] = coerce(value, hints[name], key)
        try:
            return dataclasses.replace(self.cls() if base is None else base, **changes)
        except (TypeError, ValueError) as error:
            raise ConfigError(_naming_keys(str(error), values, names)) from None

    def flatten(self, config: Any) -> dict[str, Any]:
        """The flat keys and scalar values of ``config`` (None as 0, or "" for text)."""
        hints = self.hints()
        flat: dict[str, Any] = {}
        for key, name in self.keys().items():
            value = getattr(config, name)
            if value is None:
                value = "" if str in typing.get_args(hints[name]) else 0
            flat[key] = value
        return flat


def _naming_keys(message: str, values: Mapping[str, Any], names: Mapping[str, str]) -> str:
    """A dataclass's error about field ``name`` as one about its flat key; otherwise prefixed by the keys given."""
    for key in values:
        if message.startswith(f"{names[key]} "):
            return f"'{key}'{message[len(names[key]) :]}"
    given = ", ".join(f"'{key}' = {value!r}" for key, value in values.items())
    return f"{given}: {message}"


def _means_none(value: Any) -> bool:
    return value == "" or (isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0)


def _is_optional(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in typing.get_args(
        annotation
    )
