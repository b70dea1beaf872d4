"""Pairwise masks: one update is noise to every key holder, the sum of all decrypts exactly; 32 sites fit."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from fedseg.crypto.keys import generate_keys, load_context
from fedseg.crypto.masking import FixedPoint, combine, mask_sign, round_seed
from fedseg.crypto.packing import (
    CiphertextRejected,
    Layout,
    add_encrypted,
    add_plain,
    decrypt_average,
    encrypt_weighted,
)
from fedseg.crypto.protection import RoundTicket, SiteProtection
from fedseg.crypto.registry import build_registry, load_node_key
from fedseg.deploy.credentials import make_node_key

SITES = ("hospital-a", "hospital-b", "hospital-c")


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("federation")
    generate_keys(root / "he")
    for name in SITES:
        make_node_key(root / "keys", name)
    registry = build_registry([root / "keys" / f"{n}.pub" for n in SITES])
    site_context = load_context(root / "he" / "site.context", expect="site")
    return {
        "root": root,
        "server": load_context(root / "he" / "server.context", expect="server"),
        "sites": {
            n: SiteProtection(n, he=site_context, node_key=load_node_key(root / "keys" / f"{n}.key"), registry=registry)
            for n in SITES
        },
    }


def weights_of(seed: int) -> OrderedDict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return OrderedDict(conv=torch.randn(3000, generator=generator) * 0.1, bias=torch.randn(17, generator=generator))


def test_the_server_and_one_site_cannot_read_another_sites_update_but_the_sum_decrypts(federation: dict) -> None:
    sites, server = federation["sites"], federation["server"]
    ticket = RoundTicket("run-1", 3, SITES, weight_total=60, max_sites=3)
    weights = {n: weights_of(i) for i, n in enumerate(SITES)}
    examples = {"hospital-a": 10, "hospital-b": 20, "hospital-c": 30}
    updates = {n: sites[n].protect(weights[n], examples[n], ticket) for n in SITES}
    layout = Layout.of(weights["hospital-a"])
    fixed = ticket.fixed(server)
    # colluders: everything the server holds, plus hospital-a's site.context and node key
    colluder = sites["hospital-a"]
    victim = updates["hospital-b"].payload
    with pytest.raises(CiphertextRejected, match="masks did not cancel"):
        decrypt_average(victim, colluder.he, layout)
    raw = np.concatenate([np.asarray(_decrypt(c, colluder.he)) for c in victim.chunks])
    integers = np.rint(raw * 2**fixed.fraction_bits).astype(np.int64).astype(np.uint64)
    own_pair = combine(
        [(mask_sign("hospital-b", "hospital-a"), round_seed(colluder._pair_key("hospital-b"), "run-1", 3))],
        layout.size,
        fixed.modulus_bits,
    )
    best_guess = fixed.to_slots((integers - own_pair) & np.uint64(2**fixed.modulus_bits - 1)) / victim.weight
    truth = torch.cat([weights["hospital-b"]["conv"], weights["hospital-b"]["bias"]]).numpy()
    assert np.abs(best_guess - truth).mean() > 1e3  # noise far from the update, even without a's own mask
    assert abs(np.corrcoef(best_guess, truth)[0, 1]) < 0.1
    total, rejected = add_encrypted(
        [u.payload for u in updates.values()], server, layout_hash=layout.hash, length=layout.size, fixed=fixed
    )
    assert rejected == {} and total is not None
    with pytest.raises(CiphertextRejected, match="masks did not cancel"):  # the self-masks are still on
        decrypt_average(total, colluder.he, layout)
    own = [(1, sites[n].reveal(ticket, (), min_sites=2).seeds["self"]) for n in SITES]
    correction = (np.uint64(0) - combine(own, layout.size, fixed.modulus_bits)) & np.uint64(2**fixed.modulus_bits - 1)
    average = decrypt_average(add_plain(total, correction, server), colluder.he, layout)
    expected = sum(examples[n] / 60 * weights[n]["conv"].double() for n in SITES)
    assert float((average["conv"].double() - expected).abs().max()) < 5e-7


def _decrypt(chunk: bytes, he) -> list[float]:
    import tenseal as ts

    return ts.ckks_vector_from(he.context, chunk).decrypt()


def test_thirty_two_sites_at_the_edge_of_the_range_sum_correctly(federation: dict) -> None:
    """The range check accounts for the number of sites: 32 masked updates near the limit still decode."""
    server, site = federation["server"], federation["sites"]["hospital-a"].he
    fixed = FixedPoint.for_sites(site.parameters, 32)
    names = [f"s{i:02d}" for i in range(32)]
    keys = {(a, b): bytes([i % 256]) * 32 for i, (a, b) in enumerate((a, b) for a in names for b in names if a < b)}
    rng = np.random.default_rng(0)
    values = {n: rng.uniform(-0.99, 0.99, 5000) * fixed.limit for n in names}
    share = 1 / 32
    layout = Layout.of(OrderedDict(x=torch.zeros(5000, dtype=torch.float64)))
    updates = []
    for n in names:
        seeds = [(mask_sign(n, p), round_seed(keys[tuple(sorted((n, p)))], "r", 1)) for p in names if p != n]
        state = OrderedDict(x=torch.from_numpy(values[n]))
        mask = combine(seeds, 5000, fixed.modulus_bits)
        updates.append(encrypt_weighted(state, share, site, fixed=fixed, mask=mask, workers=1))
    total, rejected = add_encrypted(updates, server, layout_hash=layout.hash, length=5000, fixed=fixed)
    assert rejected == {} and total is not None and abs(total.weight - 1) < 1e-12
    decrypted = np.concatenate([np.asarray(_decrypt(c, site)) for c in total.chunks])
    expected = sum(np.rint(values[n] * share * 2**fixed.fraction_bits) for n in names) / 2**fixed.fraction_bits
    assert np.abs(fixed.decode(decrypted) - expected).max() < 2 * 2**-fixed.fraction_bits
    assert fixed.limit >= 2**12  # weights up to 4096 still fit with 32 sites
    with pytest.raises(ValueError, match="beyond what the encrypted sum holds"):
        encrypt_weighted(OrderedDict(x=torch.full((4,), fixed.limit * 1.01)), share, site, fixed=fixed)


def test_a_site_reveals_seeds_only_for_dropped_participants_and_never_below_two(federation: dict) -> None:
    site = federation["sites"]["hospital-a"]
    ticket = RoundTicket("run-1", 1, SITES, weight_total=60, max_sites=3)
    revealed = site.reveal(ticket, ("hospital-c",), min_sites=1)
    assert set(revealed.seeds) == {"hospital-c", "self"} and revealed.signature
    with pytest.raises(ValueError, match="leave 1 update"):
        site.reveal(ticket, ("hospital-b", "hospital-c"), min_sites=2)
    with pytest.raises(ValueError, match="outside the round"):
        site.reveal(ticket, ("hospital-z",), min_sites=1)


def test_key_files_beside_each_other_do_not_leak_the_pair_secrets(federation: dict, tmp_path: Path) -> None:
    """Both ends of a pair derive the same secret; a third site derives another one."""
    sites = federation["sites"]
    ab, ba = sites["hospital-a"]._pair_key("hospital-b"), sites["hospital-b"]._pair_key("hospital-a")
    assert ab == ba and ab != sites["hospital-c"]._pair_key("hospital-a")


def test_an_update_refused_after_it_arrived_stays_covered_by_its_self_mask(federation: dict) -> None:
    """hospital-c's update arrived but was refused: the survivors reveal their seeds with it, and the
    aggregator, even with hospital-a's keys, still decrypts noise (c's own mask is never revealed)."""
    sites = federation["sites"]
    ticket = RoundTicket("run-2", 1, SITES, weight_total=60, max_sites=3)
    weights = weights_of(7)
    refused = sites["hospital-c"].protect(weights, 30, ticket).payload
    fixed, layout = ticket.fixed(sites["hospital-a"].he), Layout.of(weights)
    revealed = [sites[n].reveal(ticket, ("hospital-c",), min_sites=2) for n in ("hospital-a", "hospital-b")]
    pairwise = [(mask_sign("hospital-c", r.claim.site), r.seeds["hospital-c"]) for r in revealed]
    unmasked = (np.uint64(0) - combine(pairwise, layout.size, fixed.modulus_bits)) & np.uint64(
        2**fixed.modulus_bits - 1
    )
    with pytest.raises(CiphertextRejected, match="masks did not cancel"):
        decrypt_average(add_plain(refused, unmasked, federation["server"]), sites["hospital-a"].he, layout)
