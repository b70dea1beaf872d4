"""What server.container_federation decides without Docker: the apt mirror, and who holds which key file."""

from __future__ import annotations

from pathlib import Path

from fedseg.crypto.keys import SERVER_FILE, SITE_FILE
from fedseg.crypto.registry import load_registry
from server.container_federation import REGISTRY_FILE, debian_mirror, make_credentials, strip_rootfs

DEB822 = """Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example.org/debian-security
Suites: bookworm-security
Components: main
"""


def test_debootstrap_uses_the_mirror_apt_uses(tmp_path: Path) -> None:
    assert debian_mirror("bookworm", tmp_path) == "http://deb.debian.org/debian"  # nothing configured
    (tmp_path / "sources.list").write_text("deb http://old.example.org/debian bookworm main contrib\n")
    assert debian_mirror("bookworm", tmp_path) == "http://old.example.org/debian"
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    assert debian_mirror("bookworm", tmp_path) == "http://mirror.example.org/debian"
    assert debian_mirror("bookworm-security", tmp_path) == "http://mirror.example.org/debian-security"


def test_the_base_image_leaves_out_docs_and_package_caches_links_included(tmp_path: Path) -> None:
    docs, archives = tmp_path / "usr/share/doc", tmp_path / "var/cache/apt/archives"
    (docs / "python3.11").mkdir(parents=True)
    (docs / "python3.11" / "copyright").write_text("text")
    (docs / "libpython3.11").symlink_to("python3.11")  # as Debian links the docs of related packages
    (archives / "partial").mkdir(parents=True)
    (archives / "python3.deb").write_bytes(b"deb")
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin/python3").write_text("kept")
    strip_rootfs(tmp_path)
    assert list(docs.iterdir()) == [] and [p.name for p in archives.iterdir()] == ["partial"]
    assert (tmp_path / "usr/bin/python3").read_text() == "kept"


def test_the_aggregator_never_gets_the_secret_key_and_each_site_only_its_own_node_key(tmp_path: Path) -> None:
    credentials = make_credentials(tmp_path, ["STARE", "AV-WIDE"], he=True, hosts=["superlink", "127.0.0.1"])
    assert set(credentials.aggregator_files()) == {SERVER_FILE, REGISTRY_FILE}
    assert set(credentials.superlink_files()) == {"ca.crt", "server.pem", "server.key"}
    stare = credentials.site_files("STARE")
    assert set(stare) == {"ca.crt", "node.key", SITE_FILE, REGISTRY_FILE}
    registry = load_registry(credentials.aggregator_files()[REGISTRY_FILE])
    assert stare[REGISTRY_FILE] == credentials.aggregator_files()[REGISTRY_FILE]  # the same public file for all
    assert set(registry.sites) == {"STARE", "AV-WIDE"}
    assert registry.sites["STARE"].public_key == credentials.node_keys["STARE"][1].read_text().strip()
    assert stare["node.key"] == credentials.node_keys["STARE"][0] != credentials.site_files("AV-WIDE")["node.key"]
    assert all(path.is_file() for path in [*stare.values(), *credentials.aggregator_files().values()])
    plaintext = make_credentials(tmp_path / "no-he", ["STARE"], he=False, hosts=["superlink"])
    assert plaintext.aggregator_files() == {} and set(plaintext.site_files("STARE")) == {"ca.crt", "node.key"}
