"""Which site a node is: from its partition id in simulation, from ``--node-config site=...`` in deployment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedseg.configuration import ConfigError
from fedseg.federation.config import FederationConfig
from fedseg.federation.run_outputs import RunFolder
from fedseg.federation.sites import SiteSpec, parse_site

DEFAULT_STATE_ROOT = Path.home() / ".fedseg" / "site-state"


@dataclass(frozen=True)
class SiteIdentity:
    spec: SiteSpec
    data_root: Path
    state_dir: Path
    device: str


def site_identity(node_config: Mapping[str, Any], config: FederationConfig) -> SiteIdentity:
    """Resolve a node's site. Deployment keys: ``site`` (a site spec), ``data-root``, ``state-dir``, ``device``."""
    if "site" in node_config:
        try:
            spec = parse_site(str(node_config["site"]))
        except ValueError as error:
            raise ConfigError(f"node config 'site': {error}") from None
        data_root = Path(str(node_config.get("data-root", config.data_root)))
        state_dir = Path(str(node_config.get("state-dir", DEFAULT_STATE_ROOT / spec.name)))
        return SiteIdentity(spec, data_root, state_dir, str(node_config.get("device", config.device)))
    if "partition-id" in node_config:
        index, sites = int(node_config["partition-id"]), config.sites
        if index >= len(sites):
            raise ConfigError(
                f"simulated node {index} has no site: the run config's site-map lists {len(sites)} "
                f"sites; run with --federation-config num-supernodes={len(sites)}"
            )
        spec = sites[index]
        return SiteIdentity(
            spec, Path(config.data_root), RunFolder(Path(config.out), config).site_state_dir(spec.name), config.device
        )
    raise ConfigError(
        "node config names no site: start the SuperNode with --node-config \"site='CENTRE' "
        "data-root='/data'\" (or run a simulation, which sets partition-id)"
    )
