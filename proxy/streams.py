"""Streamed response bodies that end with their response."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from litestar.background_tasks import BackgroundTask
from litestar.response import Stream

__all__ = ["closing_stream"]


def closing_stream(body: AsyncGenerator[bytes, None], **kwargs: Any) -> Stream:
    """A :class:`Stream` of ``body`` that closes it once the response is over, however it ended.

    Litestar stops iterating a stream whose client left while a chunk was being sent, but does
    not close it: the generator's ``finally`` (the backend call closed, the lease released, the
    completion record written) would wait for the garbage collector. The response's background
    task closes it instead; closing a generator that already finished does nothing.
    """
    return Stream(body, background=BackgroundTask(_close, body), **kwargs)


async def _close(body: AsyncGenerator[bytes, None]) -> None:
    # A coroutine function: Litestar runs any other callable (a bound ``aclose``) on a thread.
    await body.aclose()
