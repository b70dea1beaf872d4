"""Which site a node is: from its partition id in simulation, from ``--node-config site=...`` in deployment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedseg.configuration import ConfigError
from fedseg.crypto.keys import SITE_FILE, HEContext, load_context
from fedseg.crypto.protection import SiteProtection
from fedseg.crypto.registry import load_node_key, load_registry
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
    he_keys: Path | None = None
    node_key: Path | None = None
    registry: Path | None = None

    def load_he(self) -> HEContext | None:
        return load_context(self.he_keys, expect="site") if self.he_keys is not None else None

    def protection(self) -> SiteProtection:
        """How this site protects its updates: encrypted and masked, encrypted, or plaintext; signed if it can."""
        if not self.spec.trains:
            return SiteProtection(self.spec.name)  # a held-out evaluator sends no update
        return SiteProtection(
            self.spec.name,
            he=self.load_he(),
            node_key=load_node_key(self.node_key) if self.node_key is not None else None,
            registry=load_registry(self.registry) if self.registry is not None else None,
        )


def _signing_files(name: str, node_config: Mapping[str, Any], config: FederationConfig) -> dict[str, Path | None]:
    """Node key: node config 'node-key', else run config 'node-keys'/<site>.key (simulation). Registry: node
    config 'registry', else run config 'registry'."""
    node_key = node_config.get("node-key") or (str(Path(config.node_keys) / f"{name}.key") if config.node_keys else "")
    registry = node_config.get("registry") or config.registry
    return {
        "node_key": Path(str(node_key)) if node_key else None,
        "registry": Path(str(registry)) if registry else None,
    }


def _site_keys(node_config: Mapping[str, Any], config: FederationConfig) -> Path | None:
    """The site context: node config 'he-keys' (a file), else run config 'he-keys' (a folder) / site.context."""
    if not config.he:
        return None
    if "he-keys" in node_config:
        return Path(str(node_config["he-keys"]))
    if not config.he_keys:
        raise ConfigError(
            "he = true needs the keys: run config 'he-keys' (folder of `fedseg keys`) or node config "
            "'he-keys' (the site's site.context)"
        )
    return Path(config.he_keys) / SITE_FILE


def site_identity(node_config: Mapping[str, Any], config: FederationConfig) -> SiteIdentity:
    """Resolve a node's site. Deployment keys: ``site`` (a site spec), ``data-root``, ``state-dir``, ``device``."""
    if "site" in node_config:
        try:
            spec = parse_site(str(node_config["site"]))
        except ValueError as error:
            raise ConfigError(f"node config 'site': {error}") from None
        data_root = Path(str(node_config.get("data-root", config.data_root)))
        state_dir = Path(str(node_config.get("state-dir", DEFAULT_STATE_ROOT / spec.name)))
        return SiteIdentity(
            spec,
            data_root,
            state_dir,
            str(node_config.get("device", config.device)),
            _site_keys(node_config, config),
            **_signing_files(spec.name, node_config, config),
        )
    if "partition-id" in node_config:
        index, sites = int(node_config["partition-id"]), config.sites
        if index >= len(sites):
            raise ConfigError(
                f"simulated node {index} has no site: the run config's site-map lists {len(sites)} "
                f"sites; run with --federation-config num-supernodes={len(sites)}"
            )
        spec = sites[index]
        state_dir = RunFolder(Path(config.out), config).site_state_dir(spec.name)
        return SiteIdentity(
            spec,
            Path(config.data_root),
            state_dir,
            config.device,
            _site_keys(node_config, config),
            **_signing_files(spec.name, node_config, config),
        )
    raise ConfigError(
        "node config names no site: start the SuperNode with --node-config \"site='CENTRE' "
        "data-root='/data'\" (or run a simulation, which sets partition-id)"
    )
