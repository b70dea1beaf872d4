"""One coercion for every config source: a run config, ``fedseg train`` flags, a saved ``config.json``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fedseg.configuration import ConfigError, coerce, from_json
from fedseg.federation.config import FederationConfig
from fedseg.training.mean_teacher import MeanTeacherConfig
from fedseg.training.settings import TEACHER

NOT_BOOLEAN = object()
BOOLEANS = [
    (True, True),
    ("true", True),
    ("TRUE", True),
    ("yes", True),
    ("on", True),
    ("1", True),
    (False, False),
    ("false", False),
    ("No", False),
    ("off", False),
    ("0", False),
    (1, NOT_BOOLEAN),
    (0, NOT_BOOLEAN),
    ("maybe", NOT_BOOLEAN),
    ("", NOT_BOOLEAN),
    (None, NOT_BOOLEAN),
]
# Each source reads a boolean setting ``value`` and returns what it became.
SOURCES: dict[str, Callable[[Any], Any]] = {
    "coerce": lambda value: coerce(value, bool, "flips"),
    "run config": lambda value: FederationConfig.from_run_config({"resume": value}).resume,
    "run config section": lambda value: FederationConfig.from_run_config({"flips": value}).teacher.flips,
    "flag section": lambda value: TEACHER.build({"flips": value}).flips,
    "config.json": lambda value: from_json(MeanTeacherConfig, {"flips": value}).flips,
}


@pytest.mark.parametrize("source", SOURCES)
def test_booleans_are_read_the_same_everywhere(source: str) -> None:
    read = SOURCES[source]
    for value, expected in BOOLEANS:
        if expected is NOT_BOOLEAN:
            with pytest.raises(ConfigError, match=f"must be true or false, got {value!r}"):
                read(value)
        else:
            assert read(value) is expected, (source, value)


@pytest.mark.parametrize(
    ("value", "annotation", "expected"),
    [
        (3, int, 3),
        ("3", int, 3),
        (3.0, int, 3),
        (2.5, float, 2.5),
        ("2.5", float, 2.5),
        (2, float, 2.0),
        ("cosine", str, "cosine"),
    ],
)
def test_numbers_and_text_are_read_the_same_everywhere(value: Any, annotation: type, expected: Any) -> None:
    result = coerce(value, annotation, "k")
    assert result == expected and type(result) is annotation


@pytest.mark.parametrize(
    ("value", "annotation", "message"),
    [
        (True, int, "'k' must be an integer, got True"),
        (2.5, int, "'k' must be an integer, got 2.5"),
        ("three", int, "'k' must be an integer, got 'three'"),
        (False, float, "'k' must be a number, got False"),
        ("lots", float, "'k' must be a number, got 'lots'"),
        (3, str, "'k' must be a string, got 3"),
    ],
)
def test_a_bad_value_names_the_key_and_the_value(value: Any, annotation: type, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        coerce(value, annotation, "k")
    assert str(raised.value) == message
