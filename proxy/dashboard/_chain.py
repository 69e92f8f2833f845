"""The log health check: every checkpoint's signature, and a consistency proof between each
checkpoint and the one before it, checked once and resumed where the last slice stopped.

A log publishes up to one checkpoint a second under load, millions in a few months: the check
runs in bounded slices (see ``_backlog``), about 20,000 checkpoints a minute on a 2-core machine
once a view has started it, and what is kept in memory is the last checkpoint reached and the
problems found, not one entry per checkpoint.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from audit import AuditError, AuditUnavailable, SignedCheckpoint, TreeReader, verify_consistency

from ._backlog import Backlog

__all__ = ["ChainCheck", "ChainStatus"]

MAX_PROBLEMS = 100  # problems listed; later ones are counted


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
    last: tuple[int, bytes] | None = None  # signed (size, root) of the last sound checkpoint
    reached: int = 0  # the size of the last checkpoint checked, sound or not: resume after it
    checked: int = 0
    problems: list[str] = field(default_factory=list)
    found: int = 0
    guard: threading.Lock = field(default_factory=threading.Lock)  # progress vs. a snapshot
    backlog: Backlog = field(default_factory=lambda: Backlog("log_health"))

    async def view(self, log: Any, budget: int, seconds: float, *,
                   background: bool = True) -> ChainStatus:
        """Check up to ``budget`` more checkpoints of ``log`` (an ``AuditLog``) for about
        ``seconds`` (at least one), or let the background catch-up go on; then say how far the
        check got."""
        sliced: ChainStatus | None = None  # what the view's own slice found, if it ran one

        def work() -> bool:
            nonlocal sliced
            sliced = self._advance(log, budget, seconds)
            return sliced.unchecked == 0

        await self.backlog.view(work, background=background)
        # (a catch-up it starts has not run yet: that is still the view's own slice)
        return sliced if sliced is not None else await asyncio.to_thread(self._status, log)

    async def aclose(self) -> None:
        await self.backlog.aclose()

    def _advance(self, log: Any, budget: int, seconds: float) -> ChainStatus:
        deadline = time.monotonic() + seconds
        store = log.store
        if self.log_id != log.log_id:
            with self.guard:
                self.log_id, self.last, self.reached, self.checked, self.problems, self.found = (
                    log.log_id, None, 0, 0, [], 0)
        after = self.reached  # a tree of size 0 has nothing to check
        reader = TreeReader(store, log.log_id)
        for done, (size, root, note) in enumerate(
                store.checkpoints(log.log_id, after=after, limit=budget)):
            if done and time.monotonic() > deadline:
                break
            found: list[str] = []
            # The signed note, not the row's columns, says what the log committed to: a row
            # whose columns were rewritten with the tree (and its old note kept) must not pass.
            try:
                signed = SignedCheckpoint.parse(note, log.vkey)
            except AuditError:
                signed = None
                found.append(f"checkpoint {size}: signature does not verify")
            if signed is not None and (signed.size, signed.root_hash) != (size, bytes(root)):
                found.append(f"checkpoint {size}: its columns differ from its signed note")
                signed = None
            if self.last is not None and signed is not None:
                old, old_root = self.last
                try:
                    proof = reader.consistency(old, size, size)
                    verify_consistency(old, size, old_root, signed.root_hash, proof.hashes)
                except AuditUnavailable:  # the store, not the chain: checked again next time
                    raise
                except AuditError as exc:
                    found.append(f"{old} → {size}: {exc}")
            with self.guard:
                self.found += len(found)
                self.problems += found[:MAX_PROBLEMS - len(self.problems)]
                if signed is not None:  # the next one is checked against a signed root only
                    self.last = (signed.size, signed.root_hash)
                self.reached, self.checked = size, self.checked + 1
        return self._status(log)

    def _status(self, log: Any) -> ChainStatus:
        with self.guard:
            if self.log_id != log.log_id:
                return ChainStatus(0, 0, [], 0)
            reached, checked, problems, found = (self.reached, self.checked, list(self.problems),
                                                 self.found)
        remaining = log.store.count_checkpoints(log.log_id, after=reached)
        return ChainStatus(checked + remaining, checked, problems, found - len(problems))
