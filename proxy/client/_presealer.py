"""Sender setups made ahead of time, so that sealing a request does not wait for HPKE.

Setting up the sender side of an exchange (a fresh ephemeral X25519 key, the Diffie-Hellman
and the HPKE key schedule) is the costliest step of sealing, and it does not depend on the
request. A :class:`Presealer` keeps one setup ready for the pinned key configuration and each
request framing the caller has used (plain, chunked), made on a background thread while the
caller waits on the network. Each setup serves one request and is then gone; a different key
configuration discards whatever was ready. When nothing is ready the caller sets up as before.

A forked child starts empty: a setup made before the fork must never serve a request in both
processes (the same ephemeral key and AEAD nonces twice). The background thread holds its
presealer only weakly: a transport dropped without ``close()`` takes its ready setups with it,
and the thread ends.
"""

from __future__ import annotations

import os
import threading
import weakref

from proxy.ohttp import KeyConfig, OHTTPError, SenderSetup, prepare_sender

__all__ = ["Presealer"]

_LIVE: weakref.WeakSet[Presealer] = weakref.WeakSet()
_IDLE_CHECK_S = 1.0  # how often an idle thread looks whether its presealer is still in use


def _forget_in_child() -> None:
    for presealer in list(_LIVE):
        presealer._forget()


os.register_at_fork(after_in_child=_forget_in_child)


class Presealer:
    """One ready sender setup per (key configuration, framing); see the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._config: KeyConfig | None = None
        self._wanted: set[bool] = set()
        self._ready: dict[bool, SenderSetup] = {}
        self._thread: threading.Thread | None = None
        self._closed = False
        _LIVE.add(self)

    def take(self, config: KeyConfig, *, chunked: bool) -> SenderSetup | None:
        """The ready setup for ``config`` and this framing, if any (it is removed); a new one
        is started in the background either way."""
        with self._lock:
            if self._closed:
                return None
            if config != self._config:
                self._config, self._ready = config, {}
            self._wanted.add(chunked)
            setup = self._ready.pop(chunked, None)
            self._ensure_thread()
        self._wake.set()
        return setup

    def close(self) -> None:
        """Drop what is ready and stop the background thread."""
        with self._lock:
            self._closed, self._ready = True, {}
        self._wake.set()

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=_serve, args=(weakref.ref(self), self._wake),
                                            name="sealgate-presealer", daemon=True)
            self._thread.start()

    def _forget(self) -> None:
        """In a forked child: nothing made before the fork, fresh lock, no thread yet."""
        self._lock, self._wake = threading.Lock(), threading.Event()
        self._ready, self._thread = {}, None

    def _missing(self) -> tuple[KeyConfig, bool] | None:
        with self._lock:
            if self._closed or self._config is None:
                return None
            for chunked in sorted(self._wanted):
                if chunked not in self._ready:
                    return self._config, chunked
        return None

    def _fill(self) -> bool:
        """Make every missing setup; False once closed."""
        if self._closed:
            return False
        while (missing := self._missing()) is not None:
            config, chunked = missing
            try:
                setup = prepare_sender(config, chunked=chunked)
            except OHTTPError:
                break  # the caller's own setup reports it
            with self._lock:
                if config == self._config and not self._closed:
                    self._ready[chunked] = setup
        return True


def _serve(ref: weakref.ref[Presealer], wake: threading.Event) -> None:
    """The background thread: fills its presealer when woken, until it is closed or gone."""
    while True:
        woken = wake.wait(_IDLE_CHECK_S)
        presealer = ref()
        if presealer is None:
            return
        if woken:
            wake.clear()
            if not presealer._fill():
                return
        del presealer  # only a weak reference while waiting
