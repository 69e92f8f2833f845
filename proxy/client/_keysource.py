"""Where the client gets the gateway's key configuration: pinned, or verified by attestation.

There is no fallback: if no verified key can be had, :class:`SealedTransportError` with code
``enclave_unverified`` is raised before anything is sent.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import httpx2

from proxy.ohttp import KeyConfig, OHTTPError, decode_key_configs

from ._errors import SealedTransportError

__all__ = ["IDENTITY_PATH", "AttestedKeySource", "InsecureEnclaveWarning", "KeySource",
           "StaticKeySource"]

IDENTITY_PATH = "/.well-known/sealgate/identity"
VerifyFn = Callable[..., Any]


@runtime_checkable
class KeySource(Protocol):
    """Gives the key configuration to seal to; ``invalidate`` drops any cached one."""

    def key_config(self) -> KeyConfig: ...

    async def akey_config(self) -> KeyConfig: ...

    def invalidate(self) -> None: ...


def _unverified(detail: str) -> SealedTransportError:
    return SealedTransportError("enclave_unverified", detail)


def _first_config(data: bytes) -> KeyConfig:
    try:
        configs = decode_key_configs(data)
        for config in configs:
            try:
                config.select_suite()
            except OHTTPError:
                continue
            return config
    except OHTTPError as exc:
        raise _unverified(f"unusable key configuration ({exc.code})") from exc
    raise _unverified("no key configuration with a supported suite")


class StaticKeySource:
    """A pinned ``application/ohttp-keys`` value (for tests and tools)."""

    def __init__(self, config_bytes: bytes) -> None:
        self._config = _first_config(config_bytes)

    def key_config(self) -> KeyConfig:
        return self._config

    async def akey_config(self) -> KeyConfig:
        return self._config

    def invalidate(self) -> None:
        """A pinned key cannot be refreshed."""


class InsecureEnclaveWarning(UserWarning):
    """The enclave was accepted under a policy a production client must not use: simulated
    evidence, or any measurement (no allowlist). ``SEALGATE_ALLOW_SIMULATED`` and
    ``SEALGATE_ALLOW_ANY_MEASUREMENT`` relax the default policy this way."""


def _warn_insecure(notes: Any) -> None:
    """Say what the verifying policy let through that a production client must not: a
    variable left set in the environment would otherwise relax the SDK without a word. Python
    shows a warning once per place it comes from, unless told otherwise."""
    for note in notes if isinstance(notes, tuple | list) else ():
        if isinstance(note, str) and (note.startswith("INSECURE") or "no measurement allowlist" in note):
            warnings.warn(f"sealgate accepted the enclave insecurely ({note})",
                          InsecureEnclaveWarning, stacklevel=4)


def _default_verify() -> VerifyFn:
    try:
        from proxy.attestation import verify_identity
    except ImportError as exc:
        raise _unverified("no attestation verifier is available") from exc
    return verify_identity


def _default_policy() -> Any:
    from proxy.attestation import VerificationPolicy

    return VerificationPolicy.from_env()


class AttestedKeySource:
    """Fetches the enclave identity with a fresh nonce, verifies it, and caches its keys.

    ``verify(document, policy, nonce=...)`` must return an object whose ``key_configs`` is the
    verified ``application/ohttp-keys`` value; any exception means "not verified". The default
    is ``proxy.attestation.verify_identity``, and the default ``policy`` is
    ``VerificationPolicy.from_env()`` (strict unless the environment relaxes it).
    ``collateral``, when given, is passed to ``verify`` as ``collateral=``: the platform
    collateral the client fetched itself (``proxy.attestation.Collateral``: TDX TCB info, QE
    identity and CRLs, which the strict policy needs for TDX evidence; SEV-SNP certificates).
    """

    def __init__(
        self,
        identity_url: str,
        policy: Any = None,
        verify: VerifyFn | None = None,
        *,
        lifetime: float = 300.0,
        timeout: float = 10.0,
        transport: httpx2.BaseTransport | None = None,
        async_transport: httpx2.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        collateral: Any = None,
    ) -> None:
        base = identity_url.rstrip("/")
        self.identity_url = base if base.endswith(IDENTITY_PATH) else base + IDENTITY_PATH
        self._policy = policy
        self._verify = verify
        self._lifetime = lifetime
        self._timeout = timeout
        self._transport = transport
        self._async_transport = async_transport
        self._clock = clock
        self._collateral = collateral
        self._cached: tuple[KeyConfig, float] | None = None
        # One identity fetch at a time: concurrent callers wait for it and share its key (the
        # gateway rate-limits identity requests, so a stampede would be refused).
        self._lock = threading.Lock()
        self._fetches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[KeyConfig]]
        self._fetches = weakref.WeakKeyDictionary()
        self.verified: Any = None
        """The last verified identity (``proxy.attestation.VerifiedIdentity``): its
        ``audit_public_key`` is the key receipts must be signed with."""

    def invalidate(self) -> None:
        self._cached = None

    def _fresh(self) -> KeyConfig | None:
        if self._cached and self._clock() < self._cached[1]:
            return self._cached[0]
        return None

    def _accept(self, status: int, content: bytes, nonce: bytes) -> KeyConfig:
        if status != 200:
            raise _unverified(f"identity endpoint answered {status}")
        try:
            document = json.loads(content)
        except (ValueError, RecursionError) as exc:
            raise _unverified("identity document is not JSON") from exc
        if not isinstance(document, Mapping):
            raise _unverified("identity document is not an object")
        verify = self._verify or _default_verify()
        extra = {} if self._collateral is None else {"collateral": self._collateral}
        try:
            policy = self._policy if self._policy is not None else _default_policy()
            verified = verify(document, policy, nonce=nonce, **extra)
            key_configs = bytes(verified.key_configs)
        except Exception as exc:
            raise _unverified(f"identity verification failed: {exc}") from exc
        config = _first_config(key_configs)
        self._cached = (config, self._clock() + self._lifetime)
        self.verified = verified
        _warn_insecure(getattr(verified, "notes", ()))
        return config

    def _request_body(self) -> tuple[bytes, bytes]:
        nonce = os.urandom(32)
        return nonce, json.dumps({"nonce": base64.b64encode(nonce).decode()}).encode()

    def key_config(self) -> KeyConfig:
        if (config := self._fresh()) is not None:
            return config
        with self._lock:
            if (config := self._fresh()) is not None:  # another thread fetched it meanwhile
                return config
            nonce, body = self._request_body()
            deadline = _Deadline(IDENTITY_DEADLINE_S)
            try:
                with httpx2.Client(transport=self._transport, timeout=self._timeout) as client, \
                        client.stream("POST", self.identity_url, content=body, headers=_JSON,
                                      extensions={"trace": deadline.trace}) as response:
                    _check_length(response)
                    content = bytearray()
                    for chunk in response.iter_bytes():
                        _grow(content, chunk, deadline.at)
            except httpx2.HTTPError as exc:
                if deadline.expired:
                    raise _unverified("the identity document did not arrive in time") from exc
                raise _unverified(f"identity endpoint unreachable: {type(exc).__name__}") from exc
            finally:
                deadline.cancel()
            return self._accept(response.status_code, bytes(content), nonce)

    async def akey_config(self) -> KeyConfig:
        if (config := self._fresh()) is not None:
            return config
        loop = asyncio.get_running_loop()
        fetch = self._fetches.get(loop)
        if fetch is None or fetch.done():
            fetch = self._fetches[loop] = loop.create_task(self._afetch())
            fetch.add_done_callback(_retrieved)
            # The task holds its loop: the entry goes with it, or every loop that ever fetched
            # (an asyncio.run per call) would be kept.
            fetch.add_done_callback(lambda done: self._forget(loop, done))
        # Shielded: a caller that gives up does not cancel the fetch the others wait for.
        return await asyncio.shield(fetch)

    def _forget(self, loop: asyncio.AbstractEventLoop, done: asyncio.Task[KeyConfig]) -> None:
        if self._fetches.get(loop) is done:
            del self._fetches[loop]

    async def _afetch(self) -> KeyConfig:
        nonce, body = self._request_body()
        try:
            async with asyncio.timeout(IDENTITY_DEADLINE_S), \
                    httpx2.AsyncClient(transport=self._async_transport, timeout=self._timeout) as client, \
                    client.stream("POST", self.identity_url, content=body, headers=_JSON) as response:
                _check_length(response)
                content = bytearray()
                async for chunk in response.aiter_bytes():
                    _grow(content, chunk)  # the deadline is the timeout around it all
        except TimeoutError as exc:
            raise _unverified("the identity document did not arrive in time") from exc
        except httpx2.HTTPError as exc:
            raise _unverified(f"identity endpoint unreachable: {type(exc).__name__}") from exc
        # Verification checks certificate chains: off the event loop, which serves other streams.
        return await asyncio.to_thread(self._accept, response.status_code, bytes(content), nonce)


# An identity document is tens of kilobytes (a report, its certificate chain, GPU reports): the
# ingress answering it is not trusted, and a body without end would be held whole before it
# could be refused, and fetched again after every refusal it forges.
MAX_IDENTITY_BYTES = 4 << 20
IDENTITY_DEADLINE_S = 30.0


class _Deadline:
    """The whole identity fetch's deadline, on the blocking (sync) path. A read timeout bounds
    each read, not the exchange: a server trickling its header bytes would hold the fetch, and
    the lock every thread sharing the key source waits on, for ever. So at the deadline the
    fetch's socket is shut down (which ends a read blocked on it), found through the
    connection's trace events; a transport that reports none is bounded as its body arrives."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds
        self.expired = False
        self._timer: threading.Timer | None = None

    def trace(self, event: str, info: Mapping[str, Any]) -> None:
        if event != "connection.connect_tcp.complete" or self._timer is not None:
            return
        stream = info.get("return_value")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(sock, socket.socket):
            self._timer = threading.Timer(max(self.at - time.monotonic(), 0.0), self._expire, (sock,))
            self._timer.daemon = True
            self._timer.start()

    def _expire(self, sock: socket.socket) -> None:
        self.expired = True
        with contextlib.suppress(OSError):  # already closed: the fetch has ended
            sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


def _check_length(response: httpx2.Response) -> None:
    declared = response.headers.get("content-length", "")
    _check_size(int(declared) if declared.isdigit() else 0)


def _check_size(size: int) -> None:
    if size > MAX_IDENTITY_BYTES:
        raise _unverified(f"identity document larger than {MAX_IDENTITY_BYTES} bytes")


def _grow(content: bytearray, chunk: bytes, deadline: float | None = None) -> None:
    content += chunk
    _check_size(len(content))
    if deadline is not None and time.monotonic() > deadline:
        raise _unverified("the identity document did not arrive in time")


def _retrieved(task: asyncio.Task[KeyConfig]) -> None:
    """Mark a failed fetch's error as seen: every caller may have given up on it."""
    if not task.cancelled():
        task.exception()


_JSON = {"content-type": "application/json", "accept": "application/json"}
