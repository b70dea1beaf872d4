"""Grouping hook: images of one subject share a group and always land on the same side of a split.

A grouping is a regular expression whose first capturing group is the subject id, matched
against the image stem. Stems that do not match form a group of their own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

GroupOf = Callable[[str], str]

# CHASE_DB1: Image_01L and Image_01R are the two eyes of child 01.
KNOWN_GROUPINGS: Mapping[str, str] = {"CHASE_DB1": r"^Image_(\d+)[LR]$"}


def group_by_pattern(pattern: str) -> GroupOf:
    """A grouping from a regular expression with one capturing group."""
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise ValueError(f"group pattern '{pattern}' is not a valid regular expression: {error}") from None
    if compiled.groups < 1:
        raise ValueError(f"group pattern '{pattern}' needs a capturing group, e.g. '^Image_(\\d+)[LR]$'")

    def group_of(stem: str) -> str:
        match = compiled.search(stem)
        return match.group(1) if match else stem

    return group_of


def identity_group(stem: str) -> str:
    return stem


def grouping_for(centre: str, patterns: Mapping[str, str]) -> GroupOf:
    """The grouping of a centre: a user pattern, else a known one, else one group per image."""
    pattern = patterns.get(centre, KNOWN_GROUPINGS.get(centre))
    return group_by_pattern(pattern) if pattern else identity_group


def subject_ids(sources: Iterable[tuple[str, str]], patterns: Mapping[str, str]) -> list[str]:
    """The subject of each ``(centre, stem)``, as ``centre/subject`` (DP's ``subject`` privacy unit)."""
    groupings: dict[str, GroupOf] = {}
    subjects = []
    for centre, stem in sources:
        if centre not in groupings:
            groupings[centre] = grouping_for(centre, patterns)
        subjects.append(f"{centre}/{groupings[centre](stem)}")
    return subjects
