"""RFC 9180 test vectors for DHKEM(X25519, HKDF-SHA256) with HKDF-SHA256, through the HPKE seam.

Base-mode cases (the only mode OHTTP uses) go through ``proxy.ohttp._hpke``; PSK and auth modes
check the pyhpke library underneath it directly.
"""

from __future__ import annotations

from typing import Any

import pytest
from pyhpke import AEADId, CipherSuite, KDFId, KEMId

from proxy.ohttp import OHTTPError
from proxy.ohttp._hpke import Suite, private_key, recipient_context, sender_context
from tests.conftest import load_vector

EXPORT_ONLY = 0xFFFF


def _cases(*parts: str, modes: tuple[int, ...]) -> list[Any]:
    try:
        data = load_vector(*parts)
    except pytest.skip.Exception:
        return [pytest.param(None, id="vectors-missing")]
    picked = [v for v in data if v["kem_id"] == 32 and v["kdf_id"] == 1 and v["mode"] in modes]
    return [pytest.param(v, id=f"{parts[-1][:12]}-mode{v['mode']}-aead{v['aead_id']}") for v in picked]


BASE = _cases("hpke", "rfc9180-x25519-hkdfsha256.json", modes=(0,)) + _cases(
    "hpke", "rfc9180-test-vectors-full.json.gz", modes=(0,)
)
OTHER_MODES = _cases("hpke", "rfc9180-x25519-hkdfsha256.json", modes=(1, 2, 3))


def _h(value: str) -> bytes:
    return bytes.fromhex(value)


def _need(vector: Any) -> None:
    if vector is None:
        load_vector("hpke", "rfc9180-x25519-hkdfsha256.json")  # skips or fails with the reason


@pytest.mark.parametrize("vector", BASE)
def test_base_mode_vector(vector: Any) -> None:
    _need(vector)
    suite = Suite(vector["kem_id"], vector["kdf_id"], vector["aead_id"])
    info = _h(vector["info"])
    enc, sender = sender_context(suite, _h(vector["pkRm"]), info, _h(vector["skEm"]))
    assert enc == _h(vector["enc"])
    receiver = recipient_context(suite, private_key(_h(vector["skRm"])), enc, info)
    if vector["aead_id"] != EXPORT_ONLY:
        for case in vector["encryptions"]:
            ct = sender.seal(_h(case["pt"]), _h(case["aad"]))
            assert ct == _h(case["ct"])
            assert receiver.open(ct, _h(case["aad"])) == _h(case["pt"])
    for case in vector["exports"]:
        ctx_bytes, length = _h(case["exporter_context"]), case["L"]
        assert sender.export(ctx_bytes, length) == _h(case["exported_value"])
        assert receiver.export(ctx_bytes, length) == _h(case["exported_value"])


@pytest.mark.parametrize("vector", OTHER_MODES)
def test_psk_and_auth_mode_vector_in_pyhpke(vector: Any) -> None:
    _need(vector)
    suite = CipherSuite.new(KEMId(vector["kem_id"]), KDFId(vector["kdf_id"]), AEADId(vector["aead_id"]))
    sk_r = suite.kem.deserialize_private_key(_h(vector["skRm"]))
    pks = suite.kem.deserialize_public_key(_h(vector["pkSm"])) if "pkSm" in vector else None
    receiver = suite.create_recipient_context(
        _h(vector["enc"]),
        sk_r,
        info=_h(vector["info"]),
        pks=pks,
        psk=_h(vector.get("psk", "")),
        psk_id=_h(vector.get("psk_id", "")),
    )
    if vector["aead_id"] != EXPORT_ONLY:
        for case in vector["encryptions"]:
            assert receiver.open(_h(case["ct"]), _h(case["aad"])) == _h(case["pt"])
    for case in vector["exports"]:
        got = receiver.export(_h(case["exporter_context"]), case["L"])
        assert got == _h(case["exported_value"])


def _first_base_vector() -> Any:
    data = load_vector("hpke", "rfc9180-x25519-hkdfsha256.json")
    return next(v for v in data if v["mode"] == 0 and v["aead_id"] == 1)


def _receiver(vector: Any, sk_hex: str | None = None, info: bytes | None = None) -> Any:
    suite = Suite(vector["kem_id"], vector["kdf_id"], vector["aead_id"])
    sk = private_key(_h(sk_hex or vector["skRm"]))
    return recipient_context(suite, sk, _h(vector["enc"]), _h(vector["info"]) if info is None else info)


def _open(receiver: Any, ct: bytes, aad: bytes) -> bytes:
    from proxy.ohttp._hpke import crypto_errors

    with crypto_errors():
        return bytes(receiver.open(ct, aad))


def test_wrong_key_fails_as_decrypt_error() -> None:
    vector = _first_base_vector()
    case = vector["encryptions"][0]
    receiver = _receiver(vector, sk_hex=vector["skEm"])
    with pytest.raises(OHTTPError) as err:
        _open(receiver, _h(case["ct"]), _h(case["aad"]))
    assert err.value.code == "ohttp_decrypt_failed"


def test_wrong_aad_and_wrong_info_fail_the_same_way() -> None:
    vector = _first_base_vector()
    case = vector["encryptions"][0]
    messages = set()
    for receiver, aad in (
        (_receiver(vector), _h(case["aad"]) + b"x"),
        (_receiver(vector, info=b"other info"), _h(case["aad"])),
    ):
        with pytest.raises(OHTTPError) as err:
            _open(receiver, _h(case["ct"]), aad)
        messages.add(str(err.value))
    assert messages == {"ohttp_decrypt_failed: message could not be decrypted"}


@pytest.mark.parametrize("position", [0, 7, -17, -1])
def test_bit_flip_and_truncation_fail(position: int) -> None:
    vector = _first_base_vector()
    case = vector["encryptions"][0]
    ct = bytearray(_h(case["ct"]))
    ct[position] ^= 0x01
    for candidate in (bytes(ct), _h(case["ct"])[:-1], b""):
        with pytest.raises(OHTTPError, match=r"^ohttp_decrypt_failed: "):
            _open(_receiver(vector), candidate, _h(case["aad"]))
