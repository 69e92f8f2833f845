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
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import regopy

from ._bundle import PolicyBundle, load_bundle
from ._decision import Decision
from ._engine import ENTRYPOINT, PolicyEngine, fail_closed
from ._errors import PolicyBundleError, PolicyUnavailable
from ._input import PolicyInput
from ._regopy_capi import ResultError, make_input, query_entrypoint

__all__ = ["RegopyEngine", "compile_bundle"]

# Builtins whose result is not a function of input and data; a bundle using one is not cached.
_NONDETERMINISTIC = re.compile(r"\b(time\.now_ns|http\.send|rand\.|uuid\.|opa\.runtime|net\.)")
# rego-cpp 1.5 aborts the whole process when it compiles `with` in a planned bundle, so policy
# modules may not use it (unit tests may: they are evaluated apart, see _rego_tests.py).
_WITH = re.compile(r"\bwith\s+(input|data)\b")
_STRINGS_AND_COMMENTS = re.compile(r'"(?:[^"\\\n]|\\.)*"|`[^`]*`|#[^\n]*')


class _Compiled:
    """One compiled bundle with its own interpreter and decision cache."""

    def __init__(self, bundle: PolicyBundle, cache_size: int) -> None:
        self.bundle = bundle
        self.program = compile_bundle(bundle)
        self.interpreter = regopy.Interpreter()
        cacheable = not any(_NONDETERMINISTIC.search(src) for src in bundle.modules.values())
        self.cache_size = cache_size if cacheable else 0
        self.cache: OrderedDict[PolicyInput, Decision] = OrderedDict()
        self.lock = threading.Lock()  # guards the cache
        self.eval_lock = threading.Lock()  # one evaluation at a time per interpreter

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

    def evaluate(self, doc: Mapping[str, Any]) -> Decision:
        """Run the compiled entrypoint (regopy interpreters are not safe to share)."""
        with self.eval_lock, fail_closed("policy evaluation"):
            self.interpreter.set_input(make_input(doc))
            try:
                # Read from the engine's node tree, not its rendering (see _regopy_capi).
                document = query_entrypoint(self.interpreter, self.program, ENTRYPOINT)
            except ResultError as exc:
                raise PolicyUnavailable("the policy produced no decision") from exc
            return Decision.from_document(document, self.bundle.digest)


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
    ) -> None:
        self._timeout_s = timeout_s
        self._cache_size = cache_size
        self._state = _Compiled(bundle if bundle is not None else load_bundle(), cache_size)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sealgate-policy")

    @property
    def bundle(self) -> PolicyBundle:
        return self._state.bundle

    def reload(self, bundle: PolicyBundle) -> None:
        # Compile first; the swap is one reference assignment, so a decision sees either the
        # old bundle or the new one, and its digest says which.
        self._state = _Compiled(bundle, self._cache_size)

    def cached(self, input: PolicyInput) -> Decision | None:
        state = self._state
        return state.lookup(input) if state.cache_size else None

    def decide_sync(self, input: PolicyInput | Mapping[str, Any]) -> Decision:
        """Decide on the calling thread (CLI, benchmarks); no timeout applies."""
        state, key = self._state, _validated(input)
        hit = state.lookup(key) if state.cache_size else None
        if hit is None:
            hit = state.evaluate(key.to_dict())
            if state.cache_size:
                state.store(key, hit)
        return hit

    async def decide(self, input: PolicyInput | Mapping[str, Any]) -> Decision:
        state, key = self._state, _validated(input)
        hit = state.lookup(key) if state.cache_size else None
        if hit is not None:
            return hit
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, state.evaluate, key.to_dict())
        try:
            decision = await asyncio.wait_for(future, self._timeout_s)
        except TimeoutError as exc:
            raise PolicyUnavailable("the policy engine did not answer in time") from exc
        if state.cache_size:
            state.store(key, decision)
        return decision

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _validated(input: PolicyInput | Mapping[str, Any]) -> PolicyInput:
    """The input as a ``PolicyInput`` (a mapping is parsed and validated)."""
    return input if isinstance(input, PolicyInput) else PolicyInput.from_dict(input)
