"""Fuzz the decoders: random and mutated input raises only OHTTPError, and never hangs.

A seeded mutation fuzzer (so a failure replays exactly): each decoder gets
``SEALGATE_FUZZ_EXAMPLES`` inputs (2,000 by default), a quarter random bytes and the rest valid
messages with flipped, inserted, deleted or cut bytes, fed whole and in random pieces.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable

import pytest

from proxy.ohttp import (
    BHTTPRequest,
    BHTTPResponse,
    ChunkedRequestOpener,
    ChunkedRequestSealer,
    ChunkedResponseOpener,
    ChunkedResponseSealer,
    GatewayKey,
    InformationalResponse,
    OHTTPError,
    ResponseDecoder,
    decapsulate_request,
    decode_key_configs,
    decode_request,
    decode_response,
    encapsulate_request,
    encode_key_configs,
    encode_request,
    encode_response,
)
from tests.ohttp._strategies import fuzz_examples

pytestmark = pytest.mark.timeout(1800)

SEED = int(os.environ.get("SEALGATE_FUZZ_SEED", "9458"))
KEY = GatewayKey.generate(5)
KEYS = {5: KEY}.get


def _mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        pos = rng.randint(0, len(out))
        kind = rng.randrange(4)
        if kind == 0 and pos < len(out):
            out[pos] ^= 1 << rng.randrange(8)
        elif kind == 1:
            out[pos:pos] = rng.randbytes(rng.randint(1, 3))
        elif kind == 2:
            del out[pos : pos + rng.randint(1, 3)]
        elif kind == 3 and rng.random() < 0.5:
            del out[pos:]
    return bytes(out)


def _pieces(rng: random.Random, data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        step = rng.randint(1, 64)
        out.append(data[pos : pos + step])
        pos += step
    return out


def _fuzz(corpus: list[bytes], target: Callable[[random.Random, bytes], object]) -> int:
    """Run ``target`` on fuzz inputs; only OHTTPError may escape it. Returns the error count."""
    rng = random.Random(SEED)
    rejected = 0
    for i in range(fuzz_examples()):
        if i % 4 == 0:
            data = rng.randbytes(rng.randint(0, 200))
        else:
            data = _mutate(rng, rng.choice(corpus))
        try:
            target(rng, data)
        except OHTTPError:
            rejected += 1
        except Exception as exc:  # pragma: no cover - the failure report
            raise AssertionError(f"input {data.hex()} raised {exc!r}") from exc
    return rejected


def _messages() -> tuple[list[bytes], list[bytes]]:
    rng = random.Random(1)
    requests, responses = [], []
    for i in range(12):
        content = rng.randbytes(rng.choice([0, 1, 70, 300]))
        headers = tuple((f"h{j}".encode(), rng.randbytes(j * 3)) for j in range(i % 4))
        request = BHTTPRequest(b"POST", b"https", b"example.com", b"/v1/x", headers, content)
        requests.append(encode_request(request, indeterminate=bool(i % 2), padding=i % 3))
        info = (InformationalResponse(103, headers),) if i % 3 == 0 else ()
        response = BHTTPResponse(200 + i, headers, content, headers[:1], info)
        responses.append(encode_response(response, indeterminate=bool(i % 2), padding=i % 3))
    return requests, responses


REQUESTS, RESPONSES = _messages()


def test_fuzz_bhttp_request_decoder() -> None:
    assert _fuzz(REQUESTS, lambda rng, data: decode_request(data)) > 0


def _decode_incrementally(rng: random.Random, data: bytes) -> None:
    decoder = ResponseDecoder()
    for piece in _pieces(rng, data):
        decoder.feed(piece)
    decoder.close()


def test_fuzz_bhttp_response_decoders() -> None:
    assert _fuzz(RESPONSES, lambda rng, data: decode_response(data)) > 0
    assert _fuzz(RESPONSES, _decode_incrementally) > 0


def test_fuzz_ohttp_request_decapsulation() -> None:
    corpus = [encapsulate_request(KEY.config, r)[0] for r in REQUESTS[:4]]
    assert _fuzz(corpus, lambda rng, data: decapsulate_request(data, KEYS)) > 0


def _open_request_chunks(rng: random.Random, data: bytes) -> None:
    opener = ChunkedRequestOpener(KEYS)
    for piece in _pieces(rng, data):
        opener.feed(piece)
    opener.close()


def test_fuzz_chunked_request_opener() -> None:
    corpus = []
    for message in REQUESTS[:4]:
        sealer = ChunkedRequestSealer(KEY.config)
        corpus.append(sealer.seal(message[:10]) + sealer.seal(message[10:], final=True))
    assert _fuzz(corpus, _open_request_chunks) > 0


def test_fuzz_response_openers() -> None:
    # One real exchange gives the corpus; each input is opened by a fresh client context of
    # the same exchange, rebuilt from the pinned ephemeral key, so mutations hit the AEAD path.
    ephemeral = bytes(range(32))
    sealer = ChunkedRequestSealer(KEY.config, ephemeral_sk_for_testing=ephemeral)
    opener = ChunkedRequestOpener(KEYS)
    opener.feed(sealer.seal(b"", final=True))
    opener.close()
    assert opener.context is not None
    response_sealer = ChunkedResponseSealer(opener.context)
    body = response_sealer.response_nonce + b"".join(response_sealer.seal(m[:40]) for m in RESPONSES[:3])
    body += response_sealer.seal(b"", final=True)

    def open_chunked(rng: random.Random, data: bytes) -> None:
        client = ChunkedRequestSealer(KEY.config, ephemeral_sk_for_testing=ephemeral)
        response = ChunkedResponseOpener(client.context)
        for piece in _pieces(rng, data):
            response.feed(piece)
        response.close()

    def open_plain(rng: random.Random, data: bytes) -> None:
        _, client = encapsulate_request(KEY.config, b"", ephemeral_sk_for_testing=ephemeral)
        client.open_response(data)

    assert _fuzz([body], open_chunked) > 0
    assert _fuzz([body[:60]], open_plain) > 0


def test_fuzz_key_config_decoder() -> None:
    corpus = [encode_key_configs([KEY.config, GatewayKey.generate(9).config])]
    assert _fuzz(corpus, lambda rng, data: decode_key_configs(data)) > 0
