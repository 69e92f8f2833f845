"""RFC 9458 Appendix A and the chunked OHTTP draft example, byte for byte, both sides."""

from __future__ import annotations

from typing import Any

import pytest
from pyhpke import AEADId, CipherSuite, KDFId, KEMId
from pyhpke.kem_key import KEMKeyPair

from proxy.ohttp import (
    ChunkedRequestOpener,
    ChunkedRequestSealer,
    ChunkedResponseOpener,
    ChunkedResponseSealer,
    GatewayKey,
    KeyConfig,
    decapsulate_request,
    decode_key_configs,
    encapsulate_request,
    encode_key_configs,
)
from tests.ohttp._vectors import h, ohttp_vector

RFC9458 = "rfc9458-appendix-a.json"
CHUNKED = "chunked-ohttp-draft-example.json"


def _gateway_key(vector: Any) -> GatewayKey:
    suites = KeyConfig.decode(h(vector["key_config"])).suites
    return GatewayKey.from_private_bytes(vector["key_id"], h(vector["gateway_sk_r"]), suites)


@pytest.mark.parametrize("name", [RFC9458, CHUNKED])
def test_key_config_encoding(name: str) -> None:
    vector = ohttp_vector(name)
    config = KeyConfig.decode(h(vector["key_config"]))
    assert config.public_key == h(vector["gateway_public_key"])
    assert config.key_id == vector["key_id"]
    assert _gateway_key(vector).config == config
    assert config.encode() == h(vector["key_config"])
    assert decode_key_configs(encode_key_configs([config, config])) == [config, config]


def test_rfc9458_request_client_side() -> None:
    vector = ohttp_vector(RFC9458)
    config = KeyConfig.decode(h(vector["key_config"]))
    encapsulated, _ = encapsulate_request(
        config, h(vector["bhttp_request"]), ephemeral_sk_for_testing=h(vector["client_sk_e"])
    )
    assert encapsulated == h(vector["encapsulated_request"])


def test_rfc9458_exchange_gateway_side_and_back() -> None:
    vector = ohttp_vector(RFC9458)
    key = _gateway_key(vector)
    request, server = decapsulate_request(h(vector["encapsulated_request"]), {1: key}.get)
    assert request == h(vector["bhttp_request"])
    assert server.enc == h(vector["client_pk_e"])
    response = server.seal_response(
        h(vector["bhttp_response"]), response_nonce_for_testing=h(vector["response_nonce"])
    )
    assert response == h(vector["encapsulated_response"])
    _, client = encapsulate_request(
        key.config, h(vector["bhttp_request"]), ephemeral_sk_for_testing=h(vector["client_sk_e"])
    )
    assert client.commitment_key == server.commitment_key
    assert len(client.commitment_key) == 32
    assert client.open_response(response) == h(vector["bhttp_response"])


def _pyhpke_commitment_keys(vector: Any) -> tuple[bytes, bytes]:
    """docs/protocol.md "Commitment key": Export("sealgate commitment key", 32) of the request's
    HPKE context, computed by pyhpke alone from the vector's keys and HPKE info, on the
    recipient side (gateway key, enc) and on the sender side (the client's ephemeral key)."""
    suite_ids = vector["suite"]
    suite = CipherSuite.new(KEMId(suite_ids["kem_id"]), KDFId(suite_ids["kdf_id"]),
                            AEADId(suite_ids["aead_id"]))
    info = h(vector["hpke_info"])
    recipient = suite.create_recipient_context(
        h(vector["client_pk_e"]), suite.kem.deserialize_private_key(h(vector["gateway_sk_r"])),
        info=info)
    ephemeral = KEMKeyPair(suite.kem.deserialize_private_key(h(vector["client_sk_e"])),
                           suite.kem.deserialize_public_key(h(vector["client_pk_e"])))
    enc, sender = suite.create_sender_context(
        suite.kem.deserialize_public_key(h(vector["gateway_public_key"])), info=info, eks=ephemeral)
    assert enc == h(vector["client_pk_e"])
    label = b"sealgate commitment key"
    return recipient.export(label, 32), sender.export(label, 32)


def test_rfc9458_commitment_key_known_answer() -> None:
    """Both ends' commitment_key for the RFC 9458 exchange equals the documented export."""
    vector = ohttp_vector(RFC9458)
    by_recipient, by_sender = _pyhpke_commitment_keys(vector)
    assert by_recipient == by_sender and len(by_recipient) == 32
    _, server = decapsulate_request(h(vector["encapsulated_request"]), {1: _gateway_key(vector)}.get)
    _, client = encapsulate_request(KeyConfig.decode(h(vector["key_config"])),
                                    h(vector["bhttp_request"]),
                                    ephemeral_sk_for_testing=h(vector["client_sk_e"]))
    assert server.commitment_key == by_recipient
    assert client.commitment_key == by_recipient


def test_chunked_commitment_key_known_answer() -> None:
    """The chunked exchange exports the same label from its own context (docs/protocol.md)."""
    vector = ohttp_vector(CHUNKED)
    by_recipient, by_sender = _pyhpke_commitment_keys(vector)
    assert by_recipient == by_sender and len(by_recipient) == 32
    opener = ChunkedRequestOpener({1: _gateway_key(vector)}.get)
    assert opener.feed(h(vector["encapsulated_request"])) and opener.context is not None
    sealer = ChunkedRequestSealer(KeyConfig.decode(h(vector["key_config"])),
                                  ephemeral_sk_for_testing=h(vector["client_sk_e"]))
    assert opener.context.commitment_key == by_recipient
    assert sealer.context.commitment_key == by_recipient


def _chunked_request_parts(vector: Any) -> list[bytes]:
    bhttp = h(vector["bhttp_request"])
    return [bhttp[:12], bhttp[12:]]


def test_chunked_request_client_side() -> None:
    vector = ohttp_vector(CHUNKED)
    parts = vector["encapsulated_request_parts"]
    sealer = ChunkedRequestSealer(
        KeyConfig.decode(h(vector["key_config"])),
        ephemeral_sk_for_testing=h(vector["client_sk_e"]),
    )
    first, second = (sealer.seal(chunk) for chunk in _chunked_request_parts(vector))
    last = sealer.seal(b"", final=True)
    chunks = [h(c) for c in parts["chunks_with_varint_length_prefix"]]
    assert first == h(parts["header"]) + h(parts["enc"]) + chunks[0]
    assert [second, last] == chunks[1:]
    assert first + second + last == h(vector["encapsulated_request"])


def test_chunked_exchange_gateway_side_and_back() -> None:
    vector = ohttp_vector(CHUNKED)
    opener = ChunkedRequestOpener({1: _gateway_key(vector)}.get)
    data = h(vector["encapsulated_request"])
    opened = [pt for i in range(0, len(data), 5) for pt in opener.feed(data[i : i + 5])]
    assert opened == _chunked_request_parts(vector)
    assert opener.close() == b""
    assert opener.context is not None
    response_sealer = ChunkedResponseSealer(
        opener.context,
        response_nonce_for_testing=h(vector["encapsulated_response_parts"]["response_nonce"]),
    )
    bhttp = h(vector["bhttp_response"])
    sealed = [response_sealer.seal(bhttp[:1]), response_sealer.seal(bhttp[1:])]
    sealed.append(response_sealer.seal(b"", final=True))
    expected = vector["encapsulated_response_parts"]["chunks_with_varint_length_prefix"]
    assert sealed == [h(c) for c in expected]
    body = response_sealer.response_nonce + b"".join(sealed)
    assert body == h(vector["encapsulated_response"])

    sealer = ChunkedRequestSealer(
        KeyConfig.decode(h(vector["key_config"])),
        ephemeral_sk_for_testing=h(vector["client_sk_e"]),
    )
    assert sealer.context.commitment_key == opener.context.commitment_key
    response_opener = ChunkedResponseOpener(sealer.context)
    got = [pt for b in body for pt in response_opener.feed(bytes((b,)))]
    assert got == [bhttp[:1], bhttp[1:]]
    assert response_opener.close() == b""
