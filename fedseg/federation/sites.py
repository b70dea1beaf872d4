"""Who a site is: a centre (or a shard of one), and its role.

A site spec is a short string, used in the run config's ``site-map`` (simulation: the site of
partition *i* is entry *i*) and in a SuperNode's ``--node-config site=...`` (deployment)::

    STARE                       the training images of centre STARE
    Kvasir-SEG/2-of-4           shard 2 of 4 of Kvasir-SEG's training images (IID)
    Kvasir-SEG/2-of-4-by-size   shard 2 of 4, shards ordered by foreground size (non-IID)
    heldout:CHASE_DB1           a held-out evaluation site: never trains, scores every image
    heldout:Kvasir-SEG/test     held-out site scoring the centre's test split
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ROLES = ("train", "heldout")
_SHARD = re.compile(r"^(\d+)-of-(\d+)(-by-size)?$")


@dataclass(frozen=True)
class Shard:
    index: int
    count: int
    by_size: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.index <= self.count:
            raise ValueError(f"shard {self.index}-of-{self.count} is out of range (1..{self.count})")

    def label(self) -> str:
        return f"{self.index}-of-{self.count}" + ("-by-size" if self.by_size else "")


@dataclass(frozen=True)
class SiteSpec:
    """A site: ``name`` (unique in a federation), ``centre`` folder, ``role``, and which images."""

    centre: str
    role: str = "train"
    shard: Shard | None = None
    test_split: bool = False

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"site role must be one of {ROLES}, got '{self.role}'")
        if not self.centre or "/" in self.centre or ":" in self.centre:
            raise ValueError(f"bad centre name '{self.centre}'")
        if self.shard is not None and self.test_split:
            raise ValueError("a site is either a shard or a test split, not both")

    @property
    def name(self) -> str:
        if self.shard is not None:
            return f"{self.centre}-{self.shard.label()}"
        return f"{self.centre}-test" if self.test_split else self.centre

    @property
    def trains(self) -> bool:
        return self.role == "train"

    def to_spec(self) -> str:
        prefix = "heldout:" if self.role == "heldout" else ""
        part = f"/{self.shard.label()}" if self.shard else ("/test" if self.test_split else "")
        return f"{prefix}{self.centre}{part}"


def parse_site(text: str) -> SiteSpec:
    """Parse one site spec (see the module docstring). Errors name the spec and the grammar."""
    spec = text.strip()
    role = "train"
    if spec.startswith("heldout:"):
        role, spec = "heldout", spec[len("heldout:") :]
    centre, _, part = spec.partition("/")
    try:
        if not part:
            return SiteSpec(centre=centre, role=role)
        if part == "test":
            return SiteSpec(centre=centre, role=role, test_split=True)
        match = _SHARD.match(part)
        if match is None:
            raise ValueError(f"unknown part '{part}'")
        shard = Shard(int(match.group(1)), int(match.group(2)), by_size=match.group(3) is not None)
        return SiteSpec(centre=centre, role=role, shard=shard)
    except ValueError as error:
        raise ValueError(f"site spec '{text}': {error}. Write [heldout:]CENTRE[/K-of-N[-by-size]|/test].") from None


def parse_site_map(text: str) -> list[SiteSpec]:
    """A comma-separated list of site specs; names must be unique."""
    sites = [parse_site(part) for part in text.split(",") if part.strip()]
    if not sites:
        raise ValueError("site-map is empty; list the sites, e.g. 'STARE,AV-WIDE,heldout:CHASE_DB1'")
    names = [site.name for site in sites]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"site-map names these sites more than once: {repeated}")
    return sites
