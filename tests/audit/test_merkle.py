"""RFC 9162 Merkle tree: transparency-dev vectors, the RFC 6962 reference tree, our own proofs."""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit import VerificationError, verify_consistency, verify_inclusion
from audit._merkle import (
    CompactRange,
    consistency_ranges,
    inclusion_ranges,
    leaf_hash,
    node_hash,
    perfect_subtrees,
)
from audit._proofs import TreeReader
from audit._store import LogStore
from tests.conftest import VECTORS, load_vector

TD = VECTORS / "merkle" / "transparency-dev-testdata"
EXAMPLES = int(os.environ.get("SEALGATE_HYPOTHESIS_EXAMPLES", "60"))


def _cases(kind: str) -> list[str]:
    return sorted(str(p.relative_to(TD)) for p in (TD / kind).rglob("*.json")) or ["<missing>"]


def _b(value: str | None) -> bytes:
    return base64.b64decode(value or "")


def _proof(case: dict) -> list[bytes]:
    return [_b(p) for p in case["proof"] or []]


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 MTH, recursively, as an independent reference."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return node_hash(_mth(leaves[:k]), _mth(leaves[k:]))


@pytest.mark.parametrize("name", _cases("inclusion"))
def test_transparency_dev_inclusion(name: str) -> None:
    case = load_vector("merkle", "transparency-dev-testdata", name)
    args = (case["leafIdx"], case["treeSize"], _b(case["leafHash"]), _proof(case), _b(case["root"]))
    if case["wantErr"]:
        with pytest.raises(VerificationError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("name", _cases("consistency"))
def test_transparency_dev_consistency(name: str) -> None:
    case = load_vector("merkle", "transparency-dev-testdata", name)
    args = (case["size1"], case["size2"], _b(case["root1"]), _b(case["root2"]), _proof(case))
    if case["wantErr"]:
        with pytest.raises(VerificationError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


@pytest.mark.parametrize(
    "name",
    [
        "inclusion/single-entry/empty-root-and-leaf.json",
        "consistency/additional/size1-is-zero-and-size2-is-not-zero.json",
        "consistency/additional/sizes-are-equal-zero-and-proof-is-empty.json",
        "consistency/additional/size1-is-zero-and-does-not-equal-size2.json",
    ],
)
def test_size_zero_and_short_leaf_edge_cases_are_rejected(name: str) -> None:
    """Our choice on the four cases plain RFC 9162 leaves open: agree with transparency-dev and
    reject (a leaf hash must be 32 bytes; a consistency proof from an empty tree proves nothing)."""
    case = load_vector("merkle", "transparency-dev-testdata", name)
    assert case["wantErr"] is True
    with pytest.raises(VerificationError):
        if "leafIdx" in case:
            verify_inclusion(case["leafIdx"], case["treeSize"], _b(case["leafHash"]),
                             _proof(case), _b(case["root"]))  # fmt: skip
        else:
            verify_consistency(case["size1"], case["size2"], _b(case["root1"]),
                               _b(case["root2"]), _proof(case))  # fmt: skip


def _reference() -> tuple[list[bytes], dict]:
    ref = load_vector("merkle", "rfc6962-reference-tree.json")
    return [leaf_hash(bytes.fromhex(x)) for x in ref["leaf_inputs_hex"]], ref


@pytest.mark.parametrize("size", range(9))
def test_rfc6962_reference_roots(size: int) -> None:
    leaves, ref = _reference()
    rng = CompactRange()
    for leaf in leaves[:size]:
        rng.append(leaf)
    assert rng.root().hex() == ref["root_hashes_by_tree_size_hex"][size]


def test_rfc6962_reference_nodes_are_the_stored_nodes() -> None:
    leaves, ref = _reference()
    rng, nodes = CompactRange(), {}
    for leaf in leaves:
        nodes.update(rng.append(leaf))
    for level, hashes in enumerate(ref["node_hashes_by_level_hex"]):
        for index, h in enumerate(hashes):
            assert nodes[level * 2**48 + index].hex() == h


@pytest.fixture
def reference_store(tmp_path: Path) -> TreeReader:
    leaves, _ = _reference()
    rng, nodes = CompactRange(), []
    for leaf in leaves:
        nodes.extend(rng.append(leaf))
    store = LogStore.open(f"sqlite:///{tmp_path / 'ref.db'}")
    store.register_log("00000000", "ref", "ref+00000000+AA==")
    store.bulk_nodes("00000000", nodes, len(leaves))
    yield TreeReader(store, "00000000")
    store.close()


@pytest.mark.parametrize("name", [n for n in _cases("inclusion") if "happy-path" in n])
def test_generated_inclusion_proofs_match_vectors(name: str, reference_store: TreeReader) -> None:
    case = load_vector("merkle", "transparency-dev-testdata", name)
    proof = reference_store.inclusion(case["leafIdx"], case["treeSize"], 8)
    assert list(proof.hashes) == _proof(case)
    assert reference_store.root(case["treeSize"]) == _b(case["root"])


@pytest.mark.parametrize("name", [n for n in _cases("consistency") if "happy-path" in n])
def test_generated_consistency_proofs_match_vectors(name: str, reference_store: TreeReader) -> None:
    case = load_vector("merkle", "transparency-dev-testdata", name)
    if case["size1"] == 0:
        pytest.skip("size 0 has no consistency proof (rejected by design, see above)")
    proof = reference_store.consistency(case["size1"], case["size2"], 8)
    assert list(proof.hashes) == _proof(case)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1))))
def test_inclusion_proofs_roundtrip(case: tuple[int, int]) -> None:
    size, index = case
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(size)]
    proof = [_mth(leaves[lo:hi]) for lo, hi in inclusion_ranges(index, size)]
    root = _mth(leaves)
    verify_inclusion(index, size, leaves[index], proof, root)
    with pytest.raises(VerificationError):  # wrong leaf
        verify_inclusion(index, size, leaf_hash(b"other"), proof, root)
    if proof:
        with pytest.raises(VerificationError):  # truncated
            verify_inclusion(index, size, leaves[index], proof[:-1], root)
        flipped = [bytes([proof[0][0] ^ 1]) + proof[0][1:], *proof[1:]]
        with pytest.raises(VerificationError):  # bit flip
            verify_inclusion(index, size, leaves[index], flipped, root)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.integers(1, n), st.just(n))))
def test_consistency_proofs_roundtrip(case: tuple[int, int]) -> None:
    old, new = case
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(new)]
    proof = [_mth(leaves[lo:hi]) for lo, hi in consistency_ranges(old, new)]
    old_root, new_root = _mth(leaves[:old]), _mth(leaves)
    verify_consistency(old, new, old_root, new_root, proof)
    if proof:
        with pytest.raises(VerificationError):  # truncated
            verify_consistency(old, new, old_root, new_root, proof[:-1])
        with pytest.raises(VerificationError):  # wrong old root
            verify_consistency(old, new, leaf_hash(b"x"), new_root, proof)


def test_compact_range_root_matches_recursive_definition() -> None:
    leaves = [leaf_hash(bytes([i])) for i in range(200)]
    rng = CompactRange()
    for n, leaf in enumerate(leaves, 1):
        rng.append(leaf)
        assert rng.root() == _mth(leaves[:n])
    assert len(rng.hashes) == bin(200).count("1")


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.integers(0, 300), st.integers(0, 300))
def test_aligned_subtrees_extend_a_compact_range_as_their_leaves_do(lo: int, n: int) -> None:
    """Subtrees covering [0, lo), then leaves to lo + n: the same range as leaves alone."""
    leaves = [leaf_hash(i.to_bytes(2, "big")) for i in range(lo + n)]
    rng = CompactRange()
    for level, index in perfect_subtrees(0, lo):
        rng.append_subtree(level, _mth(leaves[index << level:(index + 1) << level]))
    for leaf in leaves[lo:]:
        rng.append(leaf)
    assert rng.size == lo + n
    if leaves:
        assert rng.root() == _mth(leaves)
    if rng.size % 2:  # a pair of leaves cannot start at an odd index
        with pytest.raises(ValueError, match="aligned"):
            rng.append_subtree(1, leaves[0])


def test_vectors_present() -> None:
    assert TD.is_dir() or not Path(VECTORS).exists()


def test_audit_bench_proof_log_opens(tmp_path: Path) -> None:
    """``make bench``'s bulk-loaded proof log, small: a tree stored under a checkpoint its key
    signed opens and answers proofs (the writer refuses a tree no signature covers)."""
    from tests.bench.bench_audit import _proofs

    times, _ = asyncio.run(_proofs(tmp_path, 1 << 10, 20))
    assert len(times) == 20 and all(t > 0 for t in times)
