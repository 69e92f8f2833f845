"""The embedded engine: rego-cpp through regopy, compiled once per bundle.

Fastest repeated path measured with regopy 1.5 (tests/bench/bench_policy.py): compile the
bundle once with ``Interpreter.build`` for the one entrypoint, then per decision
``set_input`` with an input built by :func:`make_input` (half the cost of ``regopy.Input``, a
third of ``set_input_term`` on a JSON string, which re-parses it) and
``query_bundle_entrypoint``. ``Interpreter.query`` recompiles on every call and is ~10x slower.
Decisions are pure functions of (input, bundle), so a small exact cache keyed on the validated
input (``PolicyInput`` is frozen and hashable: equal inputs are equal documents) sits
in front, for bundles that call no non-deterministic builtin.
"""

from __future__ import annotations

import asyncio
import json
import queue
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

import regopy
import structlog

from ._bundle import PolicyBundle, load_bundle
from ._decision import Decision
from ._engine import ENTRYPOINT, PolicyEngine, fail_closed
from ._errors import PolicyBundleError, PolicyUnavailable
from ._input import PolicyInput
from ._native import ALLOCATOR_CONFLICT
from ._regopy_capi import ResultError, make_input, query_entrypoint

__all__ = ["RegopyEngine", "compile_bundle"]

# Builtins whose result is not a function of input and data (some read the clock to check
# expiries); a bundle using one is not cached.
_NONDETERMINISTIC = re.compile(r"\b(time\.now_ns|http\.send|rand\.|uuid\.|opa\.runtime|net\.|"
                               r"io\.jwt\.decode_verify|crypto\.x509\.parse_and_verify)")
# rego-cpp 1.5 aborts the whole process when it compiles `with` in a planned bundle, so policy
# modules may not use it (unit tests may: they are evaluated apart, see _rego_tests.py).
_WITH = re.compile(r"\bwith\s+(input|data)\b")
_STRINGS_AND_COMMENTS = re.compile(r'"(?:[^"\\\n]|\\.)*"|`[^`]*`|#[^\n]*')
_log = structlog.get_logger("sealgate.policy")


class _Evaluator:
    """A compiled program and an interpreter: rego-cpp objects used by one thread at a time."""

    def __init__(self, bundle: PolicyBundle, program: regopy.Bundle | None = None) -> None:
        self.bundle = bundle
        self.program = program if program is not None else compile_bundle(bundle)
        self.interpreter = regopy.Interpreter()

    def evaluate(self, doc: Mapping[str, Any]) -> Decision:
        with fail_closed("policy evaluation"):
            self.interpreter.set_input(make_input(doc))
            try:
                # Read from the engine's node tree, not its rendering (see _regopy_capi).
                document = query_entrypoint(self.interpreter, self.program, ENTRYPOINT)
            except ResultError as exc:
                raise PolicyUnavailable("the policy produced no decision") from exc
            return Decision.from_document(document, self.bundle.digest)


class _Compiled:
    """One bundle: its decision cache, and the program compiled when it was loaded (the first
    thread to evaluate the bundle takes it; any other compiles its own)."""

    def __init__(self, bundle: PolicyBundle, cache_size: int) -> None:
        self.bundle = bundle
        self.program: regopy.Bundle | None = compile_bundle(bundle)
        cacheable = not any(_NONDETERMINISTIC.search(src) for src in bundle.modules.values())
        self.cache_size = cache_size if cacheable else 0
        self.cache: OrderedDict[PolicyInput, Decision] = OrderedDict()
        self.lock = threading.Lock()  # guards the cache and the spare program
        self.here: _Evaluator | None = None  # the calling thread's evaluator (decide_sync)
        self.here_lock = threading.Lock()

    def lookup(self, key: PolicyInput) -> Decision | None:
        with self.lock:
            hit = self.cache.get(key)
            if hit is not None:
                self.cache.move_to_end(key)
            return hit

    def store(self, key: PolicyInput, decision: Decision) -> None:
        with self.lock:
            self.cache[key] = decision
            if len(self.cache) > self.cache_size:
                self.cache.popitem(last=False)

    def evaluator(self) -> _Evaluator:
        with self.lock:
            program, self.program = self.program, None
        with fail_closed("policy compilation"):
            try:
                return _Evaluator(self.bundle, program)
            except PolicyBundleError as exc:  # compiled once already; fail closed regardless
                raise PolicyUnavailable("the policy bundle did not compile again") from exc

    def evaluate_here(self, doc: Mapping[str, Any]) -> Decision:
        with self.here_lock:
            if self.here is None:
                self.here = self.evaluator()
            return self.here.evaluate(doc)


class _Worker:
    """One evaluation thread. A daemon: an evaluation that never ends never holds up exit."""

    def __init__(self, pool: _Workers) -> None:
        self.pool = pool
        self.started: float | None = None  # monotonic start of the evaluation under way
        self.abandoned = False
        self.thread = threading.Thread(target=self._run, name="sealgate-policy", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        pool, evaluator, source = self.pool, None, None
        while True:
            job = pool.jobs.get()
            if job is None:
                return
            state, doc, future = job
            if not future.set_running_or_notify_cancel():
                continue  # its caller gave up while it waited
            with pool.lock:
                self.started = time.monotonic()
            try:
                if evaluator is None or source is not state:
                    evaluator, source = state.evaluator(), state
                future.set_result(evaluator.evaluate(doc))
            except BaseException as exc:  # handed to the waiting caller, as an executor does
                future.set_exception(exc)
            with pool.lock:
                self.started = None
                if self.abandoned:
                    pool.abandoned.discard(self)
                    return


class _Workers:
    """The evaluation queue and the thread that serves it, replaced when it is stuck.

    rego-cpp evaluates without the GIL, so the caller's loop keeps running and its timeout
    fires; but an evaluation past its timeout may take much longer still (a policy that is slow
    on some input), and every decision queued behind it would fail too. So a decision that gave
    up while the serving thread's evaluation had been running for half the timeout or longer
    (evaluations take a few milliseconds) abandons that thread (it ends after that evaluation)
    and starts a fresh one, with its own interpreter, on the same queue. At most
    ``max_abandoned`` abandoned threads run at once; past that, decisions wait for one to end,
    and fail closed on their timeouts meanwhile.
    """

    def __init__(self, max_abandoned: int) -> None:
        self.jobs: queue.SimpleQueue[tuple[_Compiled, Mapping[str, Any], Future[Decision]] | None]
        self.jobs = queue.SimpleQueue()
        self.lock = threading.Lock()  # guards active, abandoned, each worker's started/abandoned
        self.max_abandoned = max_abandoned
        self.abandoned: set[_Worker] = set()
        self.closed = False
        self.active = _Worker(self)

    def submit(self, state: _Compiled, doc: Mapping[str, Any]) -> Future[Decision]:
        if self.closed:
            raise PolicyUnavailable("the policy engine is closed")
        future: Future[Decision] = Future()
        self.jobs.put((state, doc, future))
        return future

    def rescue(self, overrun_s: float) -> None:
        """After a decision gave up: abandon the serving thread if its evaluation has run for
        ``overrun_s`` or longer."""
        with self.lock:
            worker = self.active
            started = worker.started
            if self.closed or started is None or time.monotonic() - started < overrun_s:
                return
            if len(self.abandoned) >= self.max_abandoned:
                stuck = len(self.abandoned)
            else:
                worker.abandoned = True
                self.abandoned.add(worker)
                self.active, stuck = _Worker(self), 0
        if stuck:
            _log.error("policy_evaluations_stuck", engine="regopy", count=stuck)
        else:
            _log.warning("policy_evaluation_abandoned", engine="regopy", count=len(self.abandoned))

    def close(self) -> None:
        """Fail what waits (closed engines fail closed, as any other engine failure), then stop
        the serving thread (an abandoned one ends on its own)."""
        with self.lock:
            self.closed = True
        while True:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None and job[2].set_running_or_notify_cancel():
                job[2].set_exception(PolicyUnavailable("the policy engine is closed"))
        self.jobs.put(None)


def compile_bundle(bundle: PolicyBundle) -> regopy.Bundle:
    """Compile the bundle's policy modules and data for the decision entrypoint."""
    for name, source in bundle.modules.items():
        if _WITH.search(_STRINGS_AND_COMMENTS.sub("", source)):
            raise PolicyBundleError(f"policy module {name} uses `with`, which is not supported")
    interpreter = regopy.Interpreter()
    try:
        for name, source in bundle.modules.items():
            interpreter.add_module(name, source)
        interpreter.add_data_json(json.dumps(dict(bundle.data)))
        program = interpreter.build(None, [ENTRYPOINT])
    except (regopy.RegoError, ValueError, TypeError) as exc:
        raise PolicyBundleError("the policy bundle does not compile") from exc
    if not program.ok():
        raise PolicyBundleError("the policy bundle does not compile")
    return program


class RegopyEngine(PolicyEngine):
    """In-process engine (default). Evaluation runs on one worker thread, bounded by a timeout."""

    def __init__(
        self,
        bundle: PolicyBundle | None = None,
        *,
        timeout_s: float = 0.25,
        cache_size: int = 1024,
        max_abandoned: int = 2,
    ) -> None:
        if ALLOCATOR_CONFLICT:
            _log.error("policy_engine_allocator_conflict", engine="regopy",
                       reason="libstdc++_loaded_before_rego_cpp")
        self._timeout_s = timeout_s
        self._cache_size = cache_size
        self._state = _Compiled(bundle if bundle is not None else load_bundle(), cache_size)
        self._workers = _Workers(max_abandoned)

    @property
    def bundle(self) -> PolicyBundle:
        return self._state.bundle

    def reload(self, bundle: PolicyBundle) -> None:
        # Compile first; the swap is one reference assignment, so a decision sees either the
        # old bundle or the new one, and its digest says which.
        self._state = _Compiled(bundle, self._cache_size)

    def cached(self, input: PolicyInput) -> Decision | None:
        state = self._state
        return state.lookup(input) if state.cache_size and not self._workers.closed else None

    def decide_sync(self, input: PolicyInput | Mapping[str, Any]) -> Decision:
        """Decide on the calling thread (CLI, benchmarks); no timeout applies."""
        self._check_open()
        state, key = self._state, _validated(input)
        hit = state.lookup(key) if state.cache_size else None
        if hit is None:
            hit = state.evaluate_here(key.to_dict())
            if state.cache_size:
                state.store(key, hit)
        return hit

    async def decide(self, input: PolicyInput | Mapping[str, Any]) -> Decision:
        self._check_open()
        state, key = self._state, _validated(input)
        hit = state.lookup(key) if state.cache_size else None
        if hit is not None:
            return hit
        future = self._workers.submit(state, key.to_dict())
        try:
            async with asyncio.timeout(self._timeout_s):  # no extra task, unlike wait_for
                decision = await asyncio.wrap_future(future)
        except TimeoutError as exc:
            raise PolicyUnavailable("the policy engine did not answer in time") from exc
        finally:
            if not future.done() or future.cancelled():  # timed out, or its caller gave up
                # Its own evaluation started a little after it was asked for, and an outer
                # deadline (the gateway's) can end the wait a little before this one: half the
                # timeout tells an overrun from a wait that merely ran out.
                self._workers.rescue(self._timeout_s / 2)
        if state.cache_size:
            state.store(key, decision)
        return decision

    @property
    def abandoned(self) -> int:
        """Evaluations abandoned after overrunning the timeout that are still running."""
        return len(self._workers.abandoned)

    async def aclose(self) -> None:
        self._workers.close()

    def _check_open(self) -> None:
        """A closed engine decides nothing, not even from its cache: it fails closed, as any
        other engine failure."""
        if self._workers.closed:
            raise PolicyUnavailable("the policy engine is closed")


def _validated(input: PolicyInput | Mapping[str, Any]) -> PolicyInput:
    """The input as a ``PolicyInput`` (a mapping is parsed and validated)."""
    return input if isinstance(input, PolicyInput) else PolicyInput.from_dict(input)
