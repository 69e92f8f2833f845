"""The enclave's identity document: key configs, audit key and policy digest, bound to evidence."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from ._binding import compute_report_data
from ._evidence import EvidenceProvider

__all__ = ["DOCUMENT_VERSION", "IdentityService", "TokenBucket"]

DOCUMENT_VERSION = 1


class TokenBucket:
    """Per-key token bucket: ``rate`` tokens per second, at most ``burst`` stored."""

    def __init__(self, rate: float, burst: int, *, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._rate, self._burst, self._max_keys, self._clock = rate, burst, max_keys, clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, key: str) -> bool:
        """Take one token for ``key``; False when none is left. Memory stays bounded: past
        ``max_keys`` keys the refilled buckets are dropped (they hold nothing a fresh one would
        not), and while every bucket still owes, a new key waits too (none is forgiven)."""
        now = self._clock()
        tokens, last = self._buckets.get(key, (float(self._burst), now))
        tokens = min(float(self._burst), tokens + (now - last) * self._rate)
        if len(self._buckets) >= self._max_keys and key not in self._buckets:
            self._buckets = {k: (t, w) for k, (t, w) in self._buckets.items()
                             if t + (now - w) * self._rate < self._burst}
            if len(self._buckets) >= self._max_keys:
                return False
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        return True


class IdentityService:
    """Builds identity documents; the no-nonce one is cached until an input changes."""

    def __init__(
        self,
        provider: EvidenceProvider,
        key_configs: Callable[[], bytes],
        audit_public_key: bytes,
        policy_digest: Callable[[], str],
        release_measurement: str,
        *,
        gpu_providers: Sequence[EvidenceProvider] = (),
        nonce_rate: float = 2.0,
        nonce_burst: int = 10,
    ) -> None:
        self.provider = provider
        self._key_configs = key_configs
        self._audit_key = audit_public_key
        self._policy_digest = policy_digest
        self._measurement = release_measurement
        self._gpus = tuple(gpu_providers)
        self._cache: tuple[tuple[bytes, str], dict[str, Any]] | None = None
        self._lock = asyncio.Lock()
        self.nonce_limiter = TokenBucket(nonce_rate, nonce_burst)
        """Rate limit for nonce (fresh evidence) requests, keyed by client address."""

    async def document(self, nonce: bytes | None = None) -> dict[str, Any]:
        """The identity document; with a nonce it is always fresh."""
        inputs = (self._key_configs(), self._policy_digest())
        if nonce is not None:
            return await self._build(inputs, nonce)
        async with self._lock:
            if self._cache is None or self._cache[0] != inputs:
                self._cache = (inputs, await self._build(inputs, None))
            return dict(self._cache[1])

    async def _build(self, inputs: tuple[bytes, str], nonce: bytes | None) -> dict[str, Any]:
        key_configs, digest = inputs
        created = datetime.now(UTC).isoformat(timespec="seconds")  # bound into REPORT_DATA
        report_data = compute_report_data(key_configs, self._audit_key, digest,
                                          self._measurement, nonce, created)
        evidence = await self.provider.evidence(report_data)
        if self._gpus:
            gpus = await asyncio.gather(*(g.evidence(report_data) for g in self._gpus))
            evidence = replace(evidence, gpus=tuple(gpus))
        return {
            "version": DOCUMENT_VERSION,
            "platform": evidence.platform,
            "key_configs": base64.b64encode(key_configs).decode("ascii"),
            "audit_public_key": base64.b64encode(self._audit_key).decode("ascii"),
            "policy_digest": digest,
            "measurement": self._measurement,
            "nonce": None if nonce is None else base64.b64encode(nonce).decode("ascii"),
            "evidence": evidence.to_json(),
            "created": created,
            "report_data": report_data.hex(),
        }
