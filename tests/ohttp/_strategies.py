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
fields = st.lists(st.tuples(_token, st.binary(max_size=20)), max_size=4).map(tuple)

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
