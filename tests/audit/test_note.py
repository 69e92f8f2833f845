"""C2SP signed notes and tlog-checkpoints: published vectors, our own signing, negatives."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import SignedCheckpoint, VerificationError
from audit._note import NoteVerifier, sign_note, verify_note, vkey_for
from tests.conftest import VECTORS, load_vector


def _vectors() -> list[dict]:
    path = VECTORS / "merkle" / "signed-note-vectors.json"
    if not path.exists():
        return [{"id": "<missing>"}]
    return load_vector("merkle", "signed-note-vectors.json")["vectors"]


VECTOR_LIST = _vectors()


def _ids(kind: str) -> list[dict]:
    def keep(v: dict) -> bool:
        expect = v.get("expect", "")
        return bool(v.get("vkeys")) and "note" in v and expect.startswith(kind)

    return [pytest.param(v, id=v["id"]) for v in VECTOR_LIST if keep(v)]


@pytest.mark.parametrize("vector", _ids("valid"))
def test_valid_notes_verify(vector: dict) -> None:
    verifiers = [NoteVerifier.parse(k) for k in vector["vkeys"]]
    text = verify_note(vector["note"], verifiers)
    assert vector["note"].startswith(text)
    for verifier in verifiers:  # each listed key alone verifies too
        verify_note(vector["note"], [verifier])
    if "checkpoint" in vector:
        cp = SignedCheckpoint.parse(vector["note"], vector["vkeys"][0],
                                    origin=vector["checkpoint"]["origin"])  # fmt: skip
        assert cp.size == vector["checkpoint"]["size"]
        assert base64.b64encode(cp.root_hash).decode() == vector["checkpoint"]["root_hash_b64"]
        with pytest.raises(VerificationError):
            SignedCheckpoint.parse(vector["note"], vector["vkeys"][0], origin="other origin")


@pytest.mark.parametrize("vector", _ids("reject"))
def test_corrupted_or_unknown_notes_fail(vector: dict) -> None:
    with pytest.raises(VerificationError):
        verify_note(vector["note"], [NoteVerifier.parse(k) for k in vector["vkeys"]])


def test_published_skey_reproduces_signature() -> None:
    vector = next(v for v in VECTOR_LIST if v["id"] == "golang-sumdb-note-peterneumann")
    name, _, b64 = vector["skeys"][0].removeprefix("PRIVATE+KEY+").split("+", 2)
    raw = base64.b64decode(b64)
    key = Ed25519PrivateKey.from_private_bytes(raw[1:])
    text = vector["note"].rpartition("\n\n")[0] + "\n"
    assert sign_note(text, name, key) == vector["note"]
    assert vkey_for(name, key.public_key()) == vector["vkeys"][0]


@pytest.fixture
def signed() -> tuple[Ed25519PrivateKey, str, SignedCheckpoint]:
    key = Ed25519PrivateKey.generate()
    cp = SignedCheckpoint.sign("example.org/log", 42, b"\x07" * 32, key, ("ext line",))
    return key, vkey_for("example.org/log", key.public_key()), cp


def test_checkpoint_roundtrip(signed: tuple[Ed25519PrivateKey, str, SignedCheckpoint]) -> None:
    _, vkey, cp = signed
    assert cp.note.startswith("example.org/log\n42\n" + base64.b64encode(b"\x07" * 32).decode())
    assert SignedCheckpoint.parse(cp.note, vkey) == cp


def test_checkpoint_wrong_key(signed: tuple[Ed25519PrivateKey, str, SignedCheckpoint]) -> None:
    _, _, cp = signed
    other = vkey_for("example.org/log", Ed25519PrivateKey.generate().public_key())
    with pytest.raises(VerificationError):
        SignedCheckpoint.parse(cp.note, other)


@pytest.mark.parametrize("position", [0, 17, 30, -20])
def test_checkpoint_bit_flip(
    signed: tuple[Ed25519PrivateKey, str, SignedCheckpoint], position: int
) -> None:
    _, vkey, cp = signed
    raw = bytearray(cp.note.encode())
    raw[position] ^= 0x01
    with pytest.raises(VerificationError):
        SignedCheckpoint.parse(raw.decode(errors="replace"), vkey)


@pytest.mark.parametrize("cut", [1, 10, 60])
def test_checkpoint_truncated(
    signed: tuple[Ed25519PrivateKey, str, SignedCheckpoint], cut: int
) -> None:
    _, vkey, cp = signed
    with pytest.raises(VerificationError):
        SignedCheckpoint.parse(cp.note[:-cut], vkey)


@pytest.mark.parametrize(
    "vkey",
    ["", "name+00+AA==", "a+b+c+d", "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"],
)
def test_malformed_or_mismatched_vkeys(vkey: str) -> None:
    with pytest.raises(VerificationError):
        NoteVerifier.parse(vkey)


@pytest.mark.parametrize("name", ["origin\n", "a\x00b", "tab\there", "a+b", ""])
def test_key_names_are_one_printable_word(name: str) -> None:
    """A name that would break the note's lines is refused before anything is signed with it."""
    with pytest.raises(ValueError):
        vkey_for(name, Ed25519PrivateKey.generate().public_key())


@pytest.mark.parametrize("extra", [
    "\u2014 other\x1b[2J AAAAAAAA\n",  # a control character in a signature line
    "\u2014 forged\r AAAAAAAA\n",
    "\u2014 a+b AAAAAAAAAA==\n",  # key names carry no plus sign (c2sp.org/signed-note)
    "\u2014 a\u00a0b AAAAAAAAAA==\n",  # nor a Unicode space
])
def test_a_malformed_signature_line_of_another_signer_makes_the_note_malformed(
    signed: tuple[Ed25519PrivateKey, str, SignedCheckpoint], extra: str
) -> None:
    # c2sp.org/signed-note: the whole note, signature lines included, has no control character
    # but newline, and every key name is valid, even one of a key the verifier does not know.
    _, vkey, cp = signed
    with pytest.raises(VerificationError, match="malformed"):
        SignedCheckpoint.parse(cp.note + extra, vkey)


def _unsigned(vector_id: str) -> dict:
    found = [v for v in VECTOR_LIST if v.get("id") == vector_id]
    if not found:
        pytest.skip(f"signed-note vector {vector_id} is absent (SEALGATE_VECTORS)")
    return found[0]


@pytest.mark.parametrize("vector_id", ["c2sp-tlog-checkpoint-example", "c2sp-tlog-cosignature-example"])
def test_published_checkpoint_examples_parse(vector_id: str) -> None:
    """The C2SP examples publish no key: their text and signature lines parse as the spec
    writes them, the checkpoint body reads back its origin, size and root, and signatures from
    keys the verifier does not know are ignored (so none verifies it)."""
    from audit._note import _parse_sig_line, _split_note

    vector = _unsigned(vector_id)
    note = vector["note"]
    text, lines = _split_note(note)
    signers = [_parse_sig_line(line) for line in lines]
    assert signers[0][0] == "example.com/behind-the-sofa" and len(signers[0][2]) == 64
    if vector_id.endswith("cosignature-example"):
        # type 0x04 cosignature: key id, then an 8-byte timestamp and the 64-byte signature
        assert signers[1][0] == "witness.example.com/w1" and len(signers[1][2]) == 8 + 64
    checkpoint = SignedCheckpoint._parse_body(text, note, "example.com/behind-the-sofa")
    assert checkpoint.size == 20852163
    assert checkpoint.root_hash == base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    other = vkey_for("example.com/behind-the-sofa", Ed25519PrivateKey.generate().public_key())
    with pytest.raises(VerificationError, match="no signature from a known key"):
        verify_note(note, [NoteVerifier.parse(other)])


def test_sumdb_tree_note_golden_is_our_checkpoint_body() -> None:
    """golang/mod's TestFormatTree golden: the same three lines our checkpoint body writes."""
    vector = _unsigned("golang-sumdb-formattree-golden")
    root = hashlib.sha256(b"\x00hello world").digest()  # tlog.RecordHash("hello world")
    body = SignedCheckpoint.body("go.sum database tree", vector["tree_size"], root)
    assert body == vector["note_text_only"]
