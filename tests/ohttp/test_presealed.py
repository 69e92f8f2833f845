"""Sender setups made ahead of time: each serves exactly one request, only for the key and
framing it was made for, and the gateway opens what they seal like any other request."""

from __future__ import annotations

import gc
import os
import time
import warnings
import weakref

import httpx2
import pytest

from proxy.client._core import gateway_failure, wants_stream
from proxy.client._presealer import Presealer
from proxy.gateway import KeyManager
from proxy.ohttp import (
    ChunkedRequestOpener,
    ChunkedRequestSealer,
    KeyConfig,
    SenderSetup,
    decapsulate_request,
    decode_key_configs,
    encapsulate_request,
    prepare_sender,
)


def _config(keys: KeyManager) -> KeyConfig:
    return decode_key_configs(keys.key_configs())[0]


def _ready(presealer: Presealer, config: KeyConfig, *, chunked: bool) -> SenderSetup:
    """Wait for the background setup, then take it."""
    for _ in range(500):
        setup = presealer.take(config, chunked=chunked)
        if setup is not None:
            return setup
        time.sleep(0.01)
    raise AssertionError("no sender setup was made in the background")


def test_prepared_setup_seals_a_request_the_gateway_opens() -> None:
    keys = KeyManager()
    config = _config(keys)
    setup = prepare_sender(config, chunked=False)
    sealed, context = encapsulate_request(config, b"inner request", prepared=setup)
    assert sealed[7 : 7 + len(setup.exchange.enc)] == setup.exchange.enc
    opened, server = decapsulate_request(sealed, keys.lookup)
    assert opened == b"inner request"
    assert server.commitment_key == context.commitment_key
    response = server.seal_response(b"inner response")
    assert context.open_response(response) == b"inner response"


def test_prepared_chunked_setup_round_trip() -> None:
    keys = KeyManager()
    config = _config(keys)
    sealer = ChunkedRequestSealer(config, prepared=prepare_sender(config, chunked=True))
    wire = sealer.seal(b"part one ", final=False) + sealer.seal(b"part two", final=True)
    opener = ChunkedRequestOpener(keys.lookup)
    parts = opener.feed(wire)
    parts.append(opener.close())
    assert b"".join(parts) == b"part one part two"


def test_a_setup_only_serves_its_own_key_and_framing() -> None:
    keys = KeyManager()
    config = _config(keys)
    other = _config(KeyManager())
    with pytest.raises(ValueError, match="another key or request framing"):
        encapsulate_request(other, b"x", prepared=prepare_sender(config, chunked=False))
    with pytest.raises(ValueError, match="another key or request framing"):
        encapsulate_request(config, b"x", prepared=prepare_sender(config, chunked=True))
    with pytest.raises(ValueError, match="another key or request framing"):
        ChunkedRequestSealer(config, prepared=prepare_sender(config, chunked=False))


def test_presealer_hands_each_setup_out_once() -> None:
    keys = KeyManager()
    config = _config(keys)
    presealer = Presealer()
    try:
        assert presealer.take(config, chunked=False) is None  # nothing yet: the caller sets up
        first = _ready(presealer, config, chunked=False)
        second = _ready(presealer, config, chunked=False)
        assert first is not second
        assert first.exchange.enc != second.exchange.enc  # a fresh ephemeral key each time
        chunked = _ready(presealer, config, chunked=True)
        assert chunked.chunked
    finally:
        presealer.close()


def test_presealer_drops_setups_for_a_replaced_key() -> None:
    old, new = _config(KeyManager()), _config(KeyManager())
    presealer = Presealer()
    try:
        presealer.take(old, chunked=False)
        _ready(presealer, old, chunked=False)
        presealer.take(old, chunked=False)  # one is being made for the old key
        time.sleep(0.05)
        setup = _ready(presealer, new, chunked=False)
        assert setup.config == new
    finally:
        presealer.close()


def test_closed_presealer_makes_nothing() -> None:
    config = _config(KeyManager())
    presealer = Presealer()
    presealer.take(config, chunked=False)
    presealer.close()
    time.sleep(0.05)
    assert presealer.take(config, chunked=False) is None


def test_forked_child_starts_without_the_parents_setups() -> None:
    config = _config(KeyManager())
    presealer = Presealer()
    try:
        presealer.take(config, chunked=False)
        _ready(presealer, config, chunked=False)
        presealer.take(config, chunked=False)
        time.sleep(0.2)  # a setup is ready in the parent now
        read, write = os.pipe()
        with warnings.catch_warnings():  # Python >= 3.12 warns about fork with threads running
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: its first take must find nothing inherited
            os.close(read)
            inherited = presealer.take(config, chunked=False) is not None
            made = _ready(presealer, config, chunked=False) is not None
            os.write(write, bytes([inherited, made]))
            os._exit(0)
        os.close(write)
        answer = os.read(read, 2)
        os.waitpid(pid, 0)
        os.close(read)
        assert answer == bytes([False, True])
        assert presealer.take(config, chunked=False) is not None  # the parent keeps its own
    finally:
        presealer.close()


def test_a_presealer_dropped_without_closing_ends_its_thread() -> None:
    """A transport dropped without ``close()`` leaves no thread, and no ready setup (an
    ephemeral private key) alive."""
    config = _config(KeyManager())
    presealer = Presealer()
    _ready(presealer, config, chunked=False)
    presealer.take(config, chunked=False)  # the thread makes the next one
    thread, gone = presealer._thread, weakref.ref(presealer)
    assert thread is not None and thread.is_alive()
    del presealer
    gc.collect()
    assert gone() is None
    thread.join(timeout=5)
    assert not thread.is_alive()


@pytest.mark.parametrize(("body", "content_type", "expected"), [
    (b'{"model": "m", "stream": true}', "application/json", True),
    (b'{"model": "m", "\\u0073tream": true}', "application/json", True),  # an escaped key
    (b'{"model": "m", "stream": false}', "application/json", False),
    (b'{"model": "m"}', "application/json", False),
    # the gateway reads the body whatever its type (curl -d sends form-urlencoded)
    (b'{"model": "m", "stream": true}', "text/plain", True),
    (b'{"model": "m", "stream": true}', "application/x-www-form-urlencoded", True),
    (b'{"stream": tru', "application/json", False),
    (b"", "application/json", False),
    (b'{"stream": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "application/json", False),
])
def test_streaming_requests_are_recognised(body: bytes, content_type: str, expected: bool) -> None:
    request = httpx2.Request("POST", "http://x/v1/chat/completions", content=body,
                             headers={"content-type": content_type})
    assert wants_stream(request, body) is expected


@pytest.mark.parametrize(("content", "code"), [
    (b'{"error": {"code": "ohttp_unknown_key"}}', "ohttp_unknown_key"),
    (b"<html>bad gateway</html>", "unknown"),
    (b'{"error": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "unknown"),  # from any relay
])
def test_a_refusal_is_a_gateway_rejection_whatever_its_body(content: bytes, code: str) -> None:
    error = gateway_failure(502, content)
    assert error.code == "gateway_rejected" and error.gateway_code == code
