"""Hypothesis strategies for BHTTP messages, and the fuzz budget."""

from __future__ import annotations

import os

from hypothesis import settings
from hypothesis import strategies as st

from proxy.ohttp import BHTTPRequest, BHTTPResponse, InformationalResponse


def fuzz_examples() -> int:
    """Examples per fuzzed decoder: 2,000 by default, ``SEALGATE_FUZZ_EXAMPLES`` to scale up."""
    return int(os.environ.get("SEALGATE_FUZZ_EXAMPLES", "2000"))


ROUND_TRIP = settings(max_examples=200, deadline=None, database=None)

_token = st.binary(min_size=1, max_size=12)
# Field lines as RFC 9292 §3.6 admits them (validated as HTTP/2 fields, RFC 9113 §8.2.1): any
# other name or value makes the message invalid (tests/ohttp/test_bhttp_vectors.py).
_NAME_BYTES = bytes(b for b in range(0x21, 0x7F) if not 0x41 <= b <= 0x5A and b != 0x3A)
_name = st.lists(st.sampled_from(_NAME_BYTES), min_size=1, max_size=12).map(bytes)
_value = st.binary(max_size=20).map(lambda v: v.translate(None, b"\x00\r\n").strip(b" \t"))
fields = st.lists(st.tuples(_name, _value), max_size=4).map(tuple)

requests = st.builds(
    BHTTPRequest,
    method=_token,
    scheme=st.sampled_from([b"https", b"http"]),
    authority=st.binary(max_size=20),
    path=st.binary(max_size=30),
    headers=fields,
    content=st.binary(max_size=300),
    trailers=fields,
)

responses = st.builds(
    BHTTPResponse,
    status=st.integers(200, 599),
    headers=fields,
    content=st.binary(max_size=300),
    trailers=fields,
    informational=st.lists(st.builds(InformationalResponse, st.integers(100, 199), fields), max_size=2).map(
        tuple
    ),
)
