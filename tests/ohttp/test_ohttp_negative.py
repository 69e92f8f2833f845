"""Wrong key, wrong AAD, truncation, bit flips and unknown keys/suites, both framings."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from proxy.ohttp import (
    BHTTPRequest,
    ChunkedRequestOpener,
    ChunkedRequestSealer,
    ChunkedResponseOpener,
    ChunkedResponseSealer,
    GatewayKey,
    KeyConfig,
    OHTTPError,
    decapsulate_request,
    decode_key_configs,
    decode_request,
    encapsulate_request,
    encode_request,
)
from proxy.ohttp._bhttp import MAX_CONTENT_CHUNKS, MAX_FIELD_LINES
from proxy.ohttp._chunked import MAX_REQUEST_CHUNKS
from proxy.ohttp._varint import encode_varint

DECRYPT = "ohttp_decrypt_failed: message could not be decrypted"
REQUEST = b"\x00\x04POST\x05https\x09localhost\x01/" + b"x" * 64


@pytest.fixture
def key() -> GatewayKey:
    return GatewayKey.generate(7)


def _flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x80
    return bytes(out)


def _error(call: object, *args: object) -> OHTTPError:
    with pytest.raises(OHTTPError) as err:
        call(*args)  # type: ignore[operator]
    return err.value


def test_wrong_gateway_key_same_id(key: GatewayKey) -> None:
    sealed, _ = encapsulate_request(key.config, REQUEST)
    impostor = GatewayKey.generate(7)
    assert str(_error(decapsulate_request, sealed, {7: impostor}.get)) == DECRYPT


def test_unknown_key_id(key: GatewayKey) -> None:
    sealed, _ = encapsulate_request(key.config, REQUEST)
    err = _error(decapsulate_request, sealed, {8: key}.get)
    assert err.code == "ohttp_unknown_key" and err.status == 400


def test_unsupported_suite(key: GatewayKey) -> None:
    sealed, _ = encapsulate_request(key.config, REQUEST)
    export_only = sealed[:5] + b"\xff\xff" + sealed[7:]
    assert _error(decapsulate_request, export_only, {7: key}.get).code == "ohttp_unsupported_suite"
    restricted = GatewayKey(KeyConfig(7, 0x20, key.config.public_key, ((1, 3),)), key.secret)
    assert _error(decapsulate_request, sealed, {7: restricted}.get).code == "ohttp_unsupported_suite"


def test_every_bit_flip_after_the_header_is_the_same_error(key: GatewayKey) -> None:
    sealed, _ = encapsulate_request(key.config, REQUEST)
    for index in range(7, len(sealed)):
        assert str(_error(decapsulate_request, _flip(sealed, index), {7: key}.get)) == DECRYPT


@pytest.mark.parametrize("cut", [0, 3, 7, 38, 39 + 15])
def test_truncated_request_is_malformed(key: GatewayKey, cut: int) -> None:
    sealed, _ = encapsulate_request(key.config, REQUEST)
    assert _error(decapsulate_request, sealed[:cut], {7: key}.get).code == "ohttp_malformed"


def test_truncated_ciphertext_fails_to_decrypt(key: GatewayKey) -> None:
    sealed, _ = encapsulate_request(key.config, REQUEST)
    assert str(_error(decapsulate_request, sealed[:-1], {7: key}.get)) == DECRYPT


def test_response_bit_flips_truncation_and_other_exchange(key: GatewayKey) -> None:
    sealed, client = encapsulate_request(key.config, REQUEST)
    _, server = decapsulate_request(sealed, {7: key}.get)
    response = server.seal_response(b"\x01\x40\xc8")
    for bad in (_flip(response, 0), _flip(response, len(response) - 1), response[:-1]):
        _, fresh = encapsulate_request(key.config, REQUEST)
        assert str(_error(fresh.open_response, bad)) == DECRYPT
    assert str(_error(client.open_response, response[:20])).startswith("ohttp_malformed")


def test_chunked_request_without_final_chunk_is_truncated(key: GatewayKey) -> None:
    sealer = ChunkedRequestSealer(key.config)
    data = sealer.seal(b"part one") + sealer.seal(b"part two")
    opener = ChunkedRequestOpener({7: key}.get)
    assert opener.feed(data) == [b"part one", b"part two"]
    assert _error(opener.close).code == "ohttp_malformed"


def test_chunked_request_final_chunk_cannot_be_a_middle_one(key: GatewayKey) -> None:
    sealer = ChunkedRequestSealer(key.config)
    first = sealer.seal(b"part one")
    # Re-frame the non-final chunk as final: its AAD was "" so opening with "final" must fail.
    ct = first[39 + 1 :]
    opener = ChunkedRequestOpener({7: key}.get)
    opener.feed(first[:39] + b"\x00" + ct)
    assert str(_error(opener.close)) == DECRYPT


def _empty_middle_chunk(seal: Callable[[bytes, bool], bytes]) -> bytes:
    """A non-final chunk of no plaintext, framed as a sender that ignores the draft would
    (length prefix, then the sealed empty plaintext with the non-final AAD)."""
    return encode_varint(16) + seal(b"", False)


def test_an_empty_chunk_before_the_last_is_a_decryption_error(key: GatewayKey) -> None:
    """The chunked draft (§6): a non-final chunk MUST NOT be empty, and a receiver MUST treat
    one as a decryption error; it was opened as b"" and the request served. Senders refuse
    to make one."""
    sealer = ChunkedRequestSealer(key.config)
    with pytest.raises(ValueError, match="must not be empty"):
        sealer.seal(b"")
    head = sealer.seal(b"part one")
    hpke = sealer._hpke
    assert hpke is not None
    opener = ChunkedRequestOpener({7: key}.get)
    assert opener.feed(head) == [b"part one"]
    assert str(_error(opener.feed, _empty_middle_chunk(lambda pt, _: hpke.seal(pt, b"")))) == DECRYPT

    response_sealer, response_opener = _chunked_exchange(key)
    with pytest.raises(ValueError, match="must not be empty"):
        response_sealer.seal(b"")
    assert response_opener.feed(response_sealer.response_nonce + response_sealer.seal(b"one")) == [b"one"]
    aead = response_sealer._aead
    empty = _empty_middle_chunk(lambda pt, final: aead.seal(pt, final))
    assert str(_error(response_opener.feed, empty)) == DECRYPT


def _chunked_exchange(key: GatewayKey) -> tuple[ChunkedResponseSealer, ChunkedResponseOpener]:
    sealer = ChunkedRequestSealer(key.config)
    opener = ChunkedRequestOpener({7: key}.get)
    opener.feed(sealer.seal(b"", final=True))
    assert opener.close() == b""
    assert opener.context is not None
    return ChunkedResponseSealer(opener.context), ChunkedResponseOpener(sealer.context)


def test_chunked_response_reordered_chunks_fail(key: GatewayKey) -> None:
    sealer, opener = _chunked_exchange(key)
    one, two = sealer.seal(b"one"), sealer.seal(b"two")
    opener.feed(sealer.response_nonce)
    assert str(_error(opener.feed, two + one)) == DECRYPT


def test_chunked_response_truncated_or_flipped(key: GatewayKey) -> None:
    sealer, opener = _chunked_exchange(key)
    body = sealer.response_nonce + sealer.seal(b"token") + sealer.seal(b"", final=True)
    assert opener.feed(body[:-17]) == [b"token"]
    assert _error(opener.close).code == "ohttp_malformed"
    sealer, opener = _chunked_exchange(key)
    body = sealer.response_nonce + sealer.seal(b"token") + sealer.seal(b"", final=True)
    opener.feed(_flip(body, len(body) - 1))
    assert str(_error(opener.close)) == DECRYPT


def test_chunk_length_limit(key: GatewayKey) -> None:
    sealer = ChunkedRequestSealer(key.config)
    opener = ChunkedRequestOpener({7: key}.get, max_chunk_size=16)
    assert _error(opener.feed, sealer.seal(b"y" * 17)).code == "ohttp_malformed"


@pytest.mark.parametrize("split", [1, 2, 40, 81])
def test_chunk_of_the_largest_size_opens_however_it_arrives(key: GatewayKey, split: int) -> None:
    # The limit is on the chunk, not on the length prefix (here two bytes) before it.
    sealer = ChunkedRequestSealer(key.config)
    first = sealer.seal(b"y" * 64)
    opener = ChunkedRequestOpener({7: key}.get, max_chunk_size=64)
    header = 7 + 32  # key config header and enc
    stream = first[:header + split], first[header + split:], sealer.seal(b"", final=True)
    assert [plain for part in stream for plain in opener.feed(part)] == [b"y" * 64]
    assert opener.close() == b""


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00", b"\x00\x05\x01\x00\x20", b"\x00\x2a" + b"\x01\x00\x20" + b"k" * 32 + b"\x00\x03abc"],
)
def test_malformed_key_configs(data: bytes) -> None:
    assert _error(decode_key_configs, data).code == "ohttp_key_config_malformed"


@pytest.mark.parametrize("known", [True, False])
def test_a_section_of_too_many_field_lines_is_malformed(known: bool) -> None:
    """A megabyte of one-byte field lines decodes before any authentication: past the cap the
    decoder stops, with the codec's own error."""
    many = tuple((b"x", b"") for _ in range(MAX_FIELD_LINES + 1))
    request = BHTTPRequest(b"POST", b"https", b"x", b"/v1/chat/completions", many, b"{}")
    data = encode_request(request, indeterminate=not known)
    with pytest.raises(OHTTPError) as info:
        decode_request(data)
    assert info.value.code == "bhttp_malformed"
    fits = BHTTPRequest(b"POST", b"https", b"x", b"/", many[:MAX_FIELD_LINES], b"{}")
    assert decode_request(encode_request(fits, indeterminate=not known)).headers == fits.headers


def _chunked(key: GatewayKey, pieces: int) -> bytes:
    sealer = ChunkedRequestSealer(key.config)
    body = b"".join(sealer.seal(b"x") for _ in range(pieces - 1))
    return body + sealer.seal(b"y", final=True)


def test_a_request_of_too_many_chunks_is_malformed(key: GatewayKey) -> None:
    """Every chunk costs an HPKE open before anything is authenticated: past the cap the opener
    stops at the framing, before opening any chunk of the body."""
    opener = ChunkedRequestOpener({7: key}.get)
    with pytest.raises(OHTTPError) as info:
        opener.feed(_chunked(key, MAX_REQUEST_CHUNKS + 1))
    assert info.value.code == "ohttp_malformed" and info.value.status == 400
    fits = ChunkedRequestOpener({7: key}.get)
    opened = fits.feed(_chunked(key, MAX_REQUEST_CHUNKS))
    assert b"".join(opened) + fits.close() == b"x" * (MAX_REQUEST_CHUNKS - 1) + b"y"


def test_a_request_of_too_many_content_chunks_is_malformed() -> None:
    """Indeterminate-length content is a series of chunks, each a decode step before any
    authentication: past the cap the decoder stops, with the codec's own error."""
    head = b"\x02\x04POST\x05https\x01x\x01/\x00"  # framing 2, no header fields

    def content(chunks: int) -> bytes:
        return head + b"\x01z" * chunks + b"\x00\x00"  # then the end of content, no trailers

    with pytest.raises(OHTTPError) as info:
        decode_request(content(MAX_CONTENT_CHUNKS + 1))
    assert info.value.code == "bhttp_malformed"
    assert decode_request(content(MAX_CONTENT_CHUNKS)).content == b"z" * MAX_CONTENT_CHUNKS
