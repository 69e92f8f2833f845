"""Round-trip properties: BHTTP both framings, incremental decoding, OHTTP and chunked OHTTP."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from proxy.ohttp import (
    BHTTPRequest,
    BHTTPResponse,
    ChunkedRequestOpener,
    ChunkedRequestSealer,
    ChunkedResponseOpener,
    ChunkedResponseSealer,
    GatewayKey,
    ResponseDecoder,
    ResponseStreamEncoder,
    decapsulate_request,
    decode_request,
    decode_response,
    encapsulate_request,
    encode_request,
    encode_response,
)
from tests.ohttp._strategies import ROUND_TRIP, requests, responses

KEY = GatewayKey.generate(3)


@ROUND_TRIP
@given(requests, st.booleans(), st.integers(0, 20))
def test_request_round_trip(request: BHTTPRequest, indeterminate: bool, padding: int) -> None:
    encoded = encode_request(request, indeterminate=indeterminate, padding=padding)
    assert decode_request(encoded) == request


@ROUND_TRIP
@given(responses, st.booleans(), st.integers(0, 20), st.lists(st.integers(1, 40), max_size=30))
def test_response_round_trip_in_any_pieces(
    response: BHTTPResponse, indeterminate: bool, padding: int, cuts: list[int]
) -> None:
    encoded = encode_response(response, indeterminate=indeterminate, padding=padding)
    assert decode_response(encoded) == response
    decoder, events, pos = ResponseDecoder(), [], 0
    for cut in cuts:
        events += decoder.feed(encoded[pos : pos + cut])
        pos += cut
    events += decoder.feed(encoded[pos:]) + decoder.close()
    assert b"".join(e.data for e in events if e.kind == "body") == response.content
    assert [e.status for e in events if e.kind == "head"] == [response.status]


@ROUND_TRIP
@given(responses, st.lists(st.binary(max_size=50), max_size=6))
def test_stream_encoder_matches_decoder(response: BHTTPResponse, pieces: list[bytes]) -> None:
    encoder = ResponseStreamEncoder()
    parts = [encoder.informational(i.status, i.headers) for i in response.informational]
    parts.append(encoder.head(response.status, response.headers))
    parts += [encoder.body(p) for p in pieces]
    parts.append(encoder.end(response.trailers))
    expected = BHTTPResponse(
        response.status, response.headers, b"".join(pieces), response.trailers, response.informational
    )
    assert decode_response(b"".join(parts)) == expected


@ROUND_TRIP
@given(st.binary(max_size=2000), st.binary(max_size=2000))
def test_ohttp_round_trip(request: bytes, response: bytes) -> None:
    sealed, client = encapsulate_request(KEY.config, request)
    opened, server = decapsulate_request(sealed, {3: KEY}.get)
    assert opened == request
    assert client.commitment_key == server.commitment_key
    assert client.open_response(server.seal_response(response)) == response


@ROUND_TRIP
@given(  # non-final chunks are never empty (chunked draft, §6)
    st.lists(st.binary(min_size=1, max_size=200), max_size=5),
    st.lists(st.binary(min_size=1, max_size=200), max_size=5),
    st.integers(1, 64),
)
def test_chunked_round_trip(request: list[bytes], response: list[bytes], step: int) -> None:
    sealer = ChunkedRequestSealer(KEY.config)
    wire = b"".join(sealer.seal(c) for c in request) + sealer.seal(b"tail", final=True)
    opener = ChunkedRequestOpener({3: KEY}.get)
    got = [pt for i in range(0, len(wire), step) for pt in opener.feed(wire[i : i + step])]
    assert [*got, opener.close()] == [*request, b"tail"]
    assert opener.context is not None
    assert opener.context.commitment_key == sealer.context.commitment_key
    response_sealer = ChunkedResponseSealer(opener.context)
    body = response_sealer.response_nonce + b"".join(response_sealer.seal(c) for c in response)
    body += response_sealer.seal(b"", final=True)
    response_opener = ChunkedResponseOpener(sealer.context)
    out = [pt for i in range(0, len(body), step) for pt in response_opener.feed(body[i : i + step])]
    assert [*out, response_opener.close()] == [*response, b""]
