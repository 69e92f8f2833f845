"""The embedded engine when one evaluation overruns its timeout by far (a policy that is slow on
some input): that decision fails closed, the stuck thread is abandoned, and the decisions after
it are made by a fresh thread instead of failing behind it, up to a cap on abandoned threads."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from policy import PolicyUnavailable, RegopyEngine, load_bundle
from tests.policy.conftest import patched

# Seconds of rego-cpp work, only for tenants whose name starts with "slow".
SLOW_RULE = """package sealgate.authz

slow if count([x | some x in numbers.range(1, 400000); x > 0]) > 0

deny contains {"rule": "SG-SLOW-001", "message": "slow"} if {
\tstartswith(input.tenant.name, "slow")
\tnot slow
}
"""


@pytest.fixture
def slow_engine(bundle_dir: Path) -> Iterator[Callable[..., RegopyEngine]]:
    root = bundle_dir
    (root / "rego" / "slow.rego").write_text(SLOW_RULE)
    engines: list[RegopyEngine] = []

    def make(**options: Any) -> RegopyEngine:
        engines.append(RegopyEngine(load_bundle(root), cache_size=0, **options))
        return engines[-1]

    yield make
    for engine in engines:
        started = time.monotonic()
        asyncio.run(engine.aclose())
        assert time.monotonic() - started < 1.0  # closing never waits for a stuck evaluation


async def _eventually(check: Callable[[], Any], within_s: float = 90.0) -> Any:
    deadline = time.monotonic() + within_s
    while True:
        try:
            result = await check()
        except PolicyUnavailable:
            result = None
        if result:
            return result
        assert time.monotonic() < deadline, "the engine did not recover"
        await asyncio.sleep(0.1)


async def _abandoned_threads_end(engine: RegopyEngine) -> None:
    async def ended() -> bool:
        return engine.abandoned == 0

    await _eventually(ended)


def test_decisions_after_a_stuck_one_are_made_by_a_fresh_thread(
    slow_engine: Callable[..., RegopyEngine], base_input: dict[str, Any]
) -> None:
    engine = slow_engine(timeout_s=0.3)
    expected = engine.decide_sync(base_input).to_dict()

    async def scenario() -> None:
        started = time.monotonic()
        with capture_logs() as events, pytest.raises(PolicyUnavailable, match="in time"):
            await engine.decide(patched(base_input, {"tenant.name": "slowpoke"}))
        assert time.monotonic() - started < 1.5
        assert [e["event"] for e in events] == ["policy_evaluation_abandoned"]
        assert engine.abandoned == 1
        # Within the same timeout, while the abandoned evaluation still runs.
        assert (await engine.decide(base_input)).to_dict() == expected
        assert engine.abandoned == 1
        await _abandoned_threads_end(engine)

    asyncio.run(scenario())


def test_past_the_cap_decisions_fail_closed_until_a_stuck_thread_ends(
    slow_engine: Callable[..., RegopyEngine], base_input: dict[str, Any]
) -> None:
    engine = slow_engine(timeout_s=0.15, max_abandoned=1)
    expected = engine.decide_sync(base_input).to_dict()

    async def scenario() -> None:
        with capture_logs() as events:
            for name in ("slow-a", "slow-b"):
                with pytest.raises(PolicyUnavailable):
                    await engine.decide(patched(base_input, {"tenant.name": name}))
            # One abandoned thread runs slow-a; the serving one is stuck on slow-b: the cap.
            with pytest.raises(PolicyUnavailable):
                await engine.decide(base_input)
        assert [e["event"] for e in events] == [
            "policy_evaluation_abandoned", "policy_evaluations_stuck", "policy_evaluations_stuck"]
        assert all(e["count"] == 1 for e in events)

        async def decided() -> dict[str, Any]:
            return (await engine.decide(base_input)).to_dict()

        assert await _eventually(decided) == expected
        await _abandoned_threads_end(engine)

    asyncio.run(scenario())


def test_closing_stops_the_serving_thread_and_refuses_decisions(
    slow_engine: Callable[..., RegopyEngine], base_input: dict[str, Any]
) -> None:
    engine = slow_engine(timeout_s=5.0)

    async def scenario() -> None:
        await engine.decide(base_input)
        serving = engine._workers.active.thread
        slow = asyncio.create_task(engine.decide(patched(base_input, {"tenant.name": "slow-c"})))
        await asyncio.sleep(0.3)  # evaluating
        queued = asyncio.create_task(engine.decide(patched(base_input, {"tenant.name": "q"})))
        await asyncio.sleep(0.1)  # waiting behind it
        await engine.aclose()
        with pytest.raises(PolicyUnavailable, match="closed"):  # not a cancellation
            await queued
        slow.cancel()
        serving.join(5.0)
        assert not serving.is_alive()
        with pytest.raises(PolicyUnavailable, match="closed"):
            await engine.decide(base_input)

    asyncio.run(scenario())
