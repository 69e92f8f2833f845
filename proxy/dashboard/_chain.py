"""The log health check: every checkpoint's signature, and a consistency proof between each
checkpoint and the one before it, checked once and resumed where the last view stopped.

A log publishes up to one checkpoint a second under load, millions in a few months, so a view
never reads them all: it checks at most ``budget`` new ones within ``seconds``, so the page stays
fast, and leaves the rest to a background task that checks in slices of the same length with
pauses three times as long between them (its thread holds the GIL while it hashes, which slows
the gateway's event loop), until it has caught up: about 20,000 checkpoints a minute on a
2-core machine. What is kept in memory is the last checkpoint reached and
the problems found, not one entry per checkpoint.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import structlog

from audit import AuditError, AuditUnavailable, SignedCheckpoint, TreeReader, verify_consistency

__all__ = ["ChainCheck", "ChainStatus"]

MAX_PROBLEMS = 100  # problems listed; later ones are counted
_log = structlog.get_logger("sealgate.dashboard")


@dataclass(frozen=True)
class ChainStatus:
    """What a view shows: how far the chain is checked and what failed."""

    checkpoints: int  # published checkpoints of a non-empty tree
    checked: int  # of those, checked so far (signature, and consistency with the one before)
    problems: list[str]
    more_problems: int  # problems found beyond the listed ones

    @property
    def pairs(self) -> int:
        return max(self.checkpoints - 1, 0)

    @property
    def unchecked(self) -> int:
        """Consecutive pairs whose consistency proof is not checked yet."""
        return self.pairs - max(self.checked - 1, 0)


@dataclass
class ChainCheck:
    """The check's progress through one log (started over when the log changes)."""

    log_id: str | None = None
    last: tuple[int, bytes] | None = None  # (size, root) of the last checkpoint checked
    checked: int = 0
    problems: list[str] = field(default_factory=list)
    found: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one check at a time
    guard: threading.Lock = field(default_factory=threading.Lock)  # progress vs. a snapshot
    task: asyncio.Task[None] | None = None  # the background catch-up, while one runs

    async def view(self, log: Any, budget: int, seconds: float, *,
                   background: bool = True) -> ChainStatus:
        """Check a slice now, or, while the background catch-up runs, say how far it got;
        when checkpoints remain, start one."""
        if self.task is not None and not self.task.done():
            return await asyncio.to_thread(self._status, log)
        status = await self.advance(log, budget, seconds)
        if background and status.unchecked:
            self.task = asyncio.create_task(self._catch_up(log, budget, seconds))
        return status

    async def _catch_up(self, log: Any, budget: int, seconds: float) -> None:
        try:
            while (await self.advance(log, budget, seconds)).unchecked:
                await asyncio.sleep(3 * seconds)
        except AuditError as exc:  # the store failed: the next view starts a new catch-up
            _log.warning("log_health_check_paused", error_type=type(exc).__name__)

    async def aclose(self) -> None:
        """Stop the background catch-up (before the log closes)."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def advance(self, log: Any, budget: int, seconds: float) -> ChainStatus:
        """Check up to ``budget`` more checkpoints of ``log`` (an ``AuditLog``) for at most
        about ``seconds`` (at least one), off the event loop, which serves the gateway's
        requests too."""
        async with self.lock:
            return await asyncio.to_thread(self._advance, log, budget, seconds)

    def _advance(self, log: Any, budget: int, seconds: float) -> ChainStatus:
        deadline = time.monotonic() + seconds
        store = log.store
        if self.log_id != log.log_id:
            with self.guard:
                self.log_id, self.last, self.checked, self.problems, self.found = (
                    log.log_id, None, 0, [], 0)
        after = self.last[0] if self.last else 0  # a tree of size 0 has nothing to check
        reader = TreeReader(store, log.log_id)
        for done, (size, root, note) in enumerate(
                store.checkpoints(log.log_id, after=after, limit=budget)):
            if done and time.monotonic() > deadline:
                break
            found: list[str] = []
            if self.last is not None:
                old, old_root = self.last
                try:
                    proof = reader.consistency(old, size, size)
                    verify_consistency(old, size, old_root, root, proof.hashes)
                except AuditUnavailable:  # the store, not the chain: checked again next time
                    raise
                except AuditError as exc:
                    found.append(f"{old} → {size}: {exc}")
            try:
                SignedCheckpoint.parse(note, log.vkey)
            except AuditError:
                found.append(f"checkpoint {size}: signature does not verify")
            with self.guard:
                self.found += len(found)
                self.problems += found[:MAX_PROBLEMS - len(self.problems)]
                self.last, self.checked = (size, root), self.checked + 1
        return self._status(log)

    def _status(self, log: Any) -> ChainStatus:
        with self.guard:
            if self.log_id != log.log_id:
                return ChainStatus(0, 0, [], 0)
            last, checked, problems, found = self.last, self.checked, list(self.problems), self.found
        remaining = log.store.count_checkpoints(log.log_id, after=last[0] if last else 0)
        return ChainStatus(checked + remaining, checked, problems, found - len(problems))
