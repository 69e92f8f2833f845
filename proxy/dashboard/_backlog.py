"""Catch-up work the dashboard does in slices, so no page waits for all of it.

A log grows by up to thousands of records a second and publishes a checkpoint a second, and the
dashboard starts from nothing after every restart: folding every record into the aggregates, or
checking every checkpoint, can take minutes to hours. So a view runs one slice of about
``SLICE_S`` (a small backlog is done before the page renders), and when work remains a background
task goes on with the same slices, pausing three times as long between them (its thread holds
the GIL while it works, which slows the gateway's event loop), until it has caught up. Pages say
how far it got.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

__all__ = ["SLICE_S", "Backlog"]

SLICE_S = 0.15
_log = structlog.get_logger("sealgate.dashboard")


class Backlog:
    """One kind of catch-up work: at most one slice runs at a time."""

    def __init__(self, reason: str) -> None:
        self.reason = reason  # names the work in logs
        self.lock = asyncio.Lock()
        self.task: asyncio.Task[None] | None = None  # the background catch-up, while one runs

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    async def step(self, work: Callable[[], bool]) -> bool:
        """Run one slice of ``work`` off the event loop; true when it has caught up."""
        async with self.lock:
            return await asyncio.to_thread(work)

    async def view(self, work: Callable[[], bool], *, background: bool = True) -> None:
        """A page wants the work done: run a slice unless the background catch-up is under way
        (the page then shows how far it got), and start one when work remains."""
        if self.running:
            return
        if not await self.step(work) and background:
            self.task = asyncio.create_task(self._go_on(work))

    async def _go_on(self, work: Callable[[], bool]) -> None:
        try:
            while not await self.step(work):
                await asyncio.sleep(3 * SLICE_S)
        except Exception as exc:  # the store failed: the next view starts a new catch-up
            _log.warning("dashboard_catch_up_paused", reason=self.reason,
                         error_type=type(exc).__name__)

    async def aclose(self) -> None:
        """Stop the background catch-up (before the log closes)."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
