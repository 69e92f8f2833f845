"""RFC 9292 §5 examples, byte for byte, plus malformed inputs."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.ohttp import (
    BHTTPRequest,
    BHTTPResponse,
    InformationalResponse,
    OHTTPError,
    ResponseDecoder,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from tests.ohttp._vectors import fields, h, ohttp_vector

EXAMPLES = "rfc9292-bhttp-examples.json"


def _example(name: str) -> Any:
    return next(e for e in ohttp_vector(EXAMPLES)["examples"] if e["name"] == name)


def _request_from(decoded: Any) -> BHTTPRequest:
    return BHTTPRequest(
        decoded["method"].encode(),
        decoded["scheme"].encode(),
        decoded["authority"].encode(),
        decoded["path"].encode(),
        fields(decoded["header_fields"]),
        decoded["content"].encode(),
        fields(decoded["trailer_fields"]),
    )


def _response_from(decoded: Any) -> BHTTPResponse:
    info = tuple(InformationalResponse(i["status"], fields(i["fields"])) for i in decoded["informational"])
    return BHTTPResponse(
        decoded["status"],
        fields(decoded["header_fields"]),
        decoded["content"].encode(),
        fields(decoded["trailer_fields"]),
        info,
    )


@pytest.mark.parametrize("name", ["request_known_length", "request_indeterminate_length"])
def test_request_example(name: str) -> None:
    example = _example(name)
    decoded = example["decoded"]
    request = _request_from(decoded)
    assert decode_request(h(example["hex"])) == request
    encoded = encode_request(
        request,
        indeterminate=decoded["framing_indicator"] == 2,
        padding=decoded["trailing_padding_bytes"],
    )
    assert encoded == h(example["hex"])


@pytest.mark.parametrize(
    "name", ["response_indeterminate_length_with_informational", "response_known_length_chunked_example"]
)
def test_response_example(name: str) -> None:
    example = _example(name)
    decoded = example["decoded"]
    response = _response_from(decoded)
    assert decode_response(h(example["hex"])) == response
    encoded = encode_response(response, indeterminate=decoded["framing_indicator"] == 3)
    assert encoded == h(example["hex"])


@pytest.mark.parametrize(
    "name", ["response_indeterminate_length_with_informational", "response_known_length_chunked_example"]
)
def test_response_example_byte_at_a_time(name: str) -> None:
    data = h(_example(name)["hex"])
    decoder = ResponseDecoder()
    events = [event for i in range(len(data)) for event in decoder.feed(data[i : i + 1])]
    events += decoder.close()
    kinds = [e.kind for e in events]
    assert kinds[-1] == "end" and kinds.count("head") == 1
    body = b"".join(e.data for e in events if e.kind == "body")
    assert body == _example(name)["decoded"]["content"].encode()


def test_truncated_known_length_request_is_allowed_rfc9292_3_8() -> None:
    full = h(_example("request_known_length")["hex"])
    assert decode_request(full[:-2]) == decode_request(full)


def test_rfc9458_appendix_a_messages_truncated_after_control_data() -> None:
    """RFC 9458 Appendix A's request ends after its control data and its response after the
    status: every section they omit is empty (RFC 9292 §3.8), in both framings."""
    vector = ohttp_vector("rfc9458-appendix-a.json")
    request = decode_request(h(vector["bhttp_request"]))
    assert request == BHTTPRequest(b"GET", b"https", b"example.com", b"/", (), b"", ())
    indeterminate = b"\x02" + h(vector["bhttp_request"])[1:]
    assert decode_request(indeterminate) == request
    assert decode_request(h(vector["bhttp_request"]) + bytes(4)) == request  # and padded
    for data in (h(vector["bhttp_response"]), b"\x03\x40\xc8", b"\x03\x40\x64\x00\x40\xc8"):
        response = decode_response(data)
        assert (response.status, response.headers, response.content, response.trailers) == (
            200, (), b"", ())
        decoder = ResponseDecoder()
        events = [e for b in data for e in decoder.feed(bytes([b]))] + decoder.close()
        assert [(e.kind, e.status) for e in events][-2:] == [("head", 200), ("end", 0)]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x01", id="response-framing-as-request"),
        pytest.param(b"\x04", id="unknown-framing"),
        pytest.param(b"\x00\x03GE", id="truncated-control-data"),
        pytest.param(b"\x00\x00\x00\x00\x00\x05\x01a", id="section-overrun"),
        pytest.param(b"\x00\x00\x00\x00\x00\x00\x00\x00\x01", id="non-zero-padding"),
    ],
)
def test_malformed_request(data: bytes) -> None:
    with pytest.raises(OHTTPError) as err:
        decode_request(data)
    assert err.value.code == "bhttp_malformed"
    assert str(err.value).startswith("bhttp_malformed: ")
    assert err.value.status == 400


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x01\x40", id="truncated-status"),
        pytest.param(b"\x01\x40\x63\x00", id="status-99"),
        pytest.param(b"\x01\x42\x58\x00", id="status-600"),
        pytest.param(b"\x01\x40\x64\x00", id="only-informational"),
        pytest.param(b"\x01\x40\x64", id="truncated-after-informational-status"),
        pytest.param(b"\x01\x40\xc8\x05", id="truncated-header-section"),
        pytest.param(b"\x01\x40\xc8\x00\x05ab", id="truncated-content"),
        pytest.param(b"\x03\x40\xc8\x00\x02ab", id="truncated-indeterminate-content"),
    ],
)
def test_malformed_response(data: bytes) -> None:
    with pytest.raises(OHTTPError) as err:
        decode_response(data)
    assert err.value.code == "bhttp_malformed"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        pytest.param(b":method", b"GET", id="pseudo-field"),
        pytest.param(b":status", b"200", id="status-pseudo-field"),
        pytest.param(b"Content-Type", b"text/plain", id="uppercase-name"),
        pytest.param(b"x y", b"1", id="space-in-name"),
        pytest.param(b"x\xc3\xa9", b"1", id="non-ascii-name"),
        pytest.param(b"x-a", b"1\r\nx-b: 2", id="crlf-in-value"),
        pytest.param(b"x-a", b"1\x00", id="nul-in-value"),
        pytest.param(b"x-a", b" 1", id="leading-space"),
        pytest.param(b"x-a", b"1\t", id="trailing-tab"),
    ],
)
@pytest.mark.parametrize("indeterminate", [False, True], ids=["known", "indeterminate"])
@pytest.mark.parametrize("where", ["headers", "trailers"])
def test_field_line_that_http2_refuses_makes_the_message_invalid(
        name: bytes, value: bytes, indeterminate: bool, where: str) -> None:
    # RFC 9292 §3.6: field lines are validated as in HTTP/2 (RFC 9113 §8.2.1), and pseudo-fields
    # make a message invalid; requests and responses alike.
    fields = ((b"x-ok", b"a b"), (name, value))
    request = BHTTPRequest(b"GET", b"https", b"a.example", b"/", **{where: fields})
    response = BHTTPResponse(200, **{where: fields})
    for decode, data in ((decode_request, encode_request(request, indeterminate=indeterminate)),
                         (decode_response, encode_response(response, indeterminate=indeterminate))):
        with pytest.raises(OHTTPError) as err:
            decode(data)  # type: ignore[operator]
        assert err.value.code == "bhttp_malformed"
        assert value not in str(err.value).encode()  # the refusal does not echo the field
