"""Which node is which site: ask every connected node to describe itself, check against the site map.

Node ids are not stable (a site that restarts comes back with a new one), so the server asks
before every round. The first round waits for every site; later rounds go on without a site
that is not connected.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from fedseg.configuration import ConfigError
from fedseg.federation import protocol
from fedseg.federation.sites import SiteSpec

logger = logging.getLogger("fedseg.server")
FIRST_NODE_WAIT_SECONDS = 120.0  # the first round waits this long for every site to connect
LATER_NODE_WAIT_SECONDS = 5.0  # later rounds go on without a site that is not connected


class FederationMismatch(ConfigError):
    """The nodes that joined are not the sites the run config names."""


@dataclass(frozen=True)
class SiteInfo:
    """A node's answer to ``query.describe``: who it is and how many images it holds."""

    node_id: int
    site: str
    centre: str
    role: str
    labelled: int = 0
    unlabelled: int = 0
    evaluation: int = 0

    @property
    def trains(self) -> bool:
        return self.role == "train"

    @property
    def training_images(self) -> int:
        """The most examples one of its updates may claim (labelled and unlabelled training images)."""
        return self.labelled + self.unlabelled


def _wait_for_nodes(grid: Grid, expected: int, patience: float) -> list[int]:
    deadline = time.monotonic() + patience
    nodes = list(grid.get_node_ids())
    while len(nodes) < expected and time.monotonic() < deadline:
        time.sleep(0.5)
        nodes = list(grid.get_node_ids())
    return nodes


def _site_info(node: int, values: Mapping) -> SiteInfo:
    return SiteInfo(
        node,
        str(values["site"]),
        str(values["centre"]),
        str(values["role"]),
        int(values.get("labelled", 0)),
        int(values.get("unlabelled", 0)),
        int(values.get("evaluation", 0)),
    )


def check_sites(sites: Mapping[int, SiteInfo], expected: Mapping[str, SiteSpec], *, strict: bool) -> None:
    names = [info.site for info in sites.values()]
    unexpected = sorted(set(names) - set(expected))
    duplicated = sorted({n for n in names if names.count(n) > 1})
    missing = sorted(set(expected) - set(names))
    if unexpected or duplicated or (strict and missing):
        raise FederationMismatch(
            f"the federation does not match run config 'site-map': missing sites {missing}, unexpected sites "
            f"{unexpected}, sites joined twice {duplicated}. Start one node per site-map entry "
            f"(simulation: --federation-config num-supernodes={len(expected)})."
        )
    for info in sites.values():
        if info.role != expected[info.site].role:
            raise FederationMismatch(
                f"site {info.site} says its role is {info.role}, the run config says {expected[info.site].role}"
            )


def discover(grid: Grid, expected: Mapping[str, SiteSpec], *, strict: bool, timeout: float) -> dict[int, SiteInfo]:
    """Ask every node which site it is; check the answers against the site map."""
    nodes = _wait_for_nodes(grid, len(expected), FIRST_NODE_WAIT_SECONDS if strict else LATER_NODE_WAIT_SECONDS)
    messages = [Message(RecordDict({}), dst_node_id=n, message_type=f"query.{protocol.DESCRIBE}") for n in nodes]
    sites: dict[int, SiteInfo] = {}
    for reply in grid.send_and_receive(messages, timeout=min(timeout, 120.0)):
        node = reply.metadata.src_node_id
        if reply.has_error():
            logger.info("node %s could not describe itself: %s", node, reply.error.reason)
            continue
        try:
            sites[node] = _site_info(node, dict(reply.content[protocol.SITE]))
        except (KeyError, TypeError, ValueError) as error:
            logger.info("node %s described itself unusably: %s", node, error)
    check_sites(sites, expected, strict=strict)
    return sites
