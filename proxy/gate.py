"""The enforcement point: policy decision and audit records around every forwarded request.

Order (DESIGN.md): decide → durable intent record → (forward) → completion record. A denial is
one record. No decision, or no durable intent record, means nothing is forwarded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from audit import AuditLog, AuditUnavailable, InvalidRecord, RecordBuilder
from policy import Decision, PolicyEngine, PolicyInput, PolicyUnavailable, RequestParams
from proxy.errors import PolicyDenied
from proxy.pipeline import Admission, CallContext, Outcome

__all__ = ["EnclaveFacts", "PolicyAuditGate"]

_log = structlog.get_logger("sealgate.gate")
_MAX_COUNT = 2**53 - 1


@dataclass(frozen=True, slots=True)
class EnclaveFacts:
    """What the policy input and the records say about the enclave serving the request."""

    platform: str
    measurement: str
    simulated: bool
    debug: bool
    evidence_digest: str
    policy_digest: str
    """The policy bundle digest that evidence binds (its REPORT_DATA)."""


_KEPT_FACTS = 4  # enclave facts kept per policy digest: the current bundle's and a few before


class _MinuteClock:
    """Decision time at minute resolution (truncated): equal request shapes within a minute
    share one cached decision (the policy is deterministic). Contract expiries are whole
    minutes (the bundle refuses others), so "before the expiry" is still judged exactly.
    The string is formatted once per minute."""

    def __init__(self) -> None:
        self._minute, self._stamp = -1, ""

    def now(self) -> str:
        now = time.time()
        if int(now // 60) != self._minute:
            self._stamp = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:00Z")
            self._minute = int(now // 60)
        return self._stamp


class PolicyAuditGate:
    """Implements :class:`proxy.api.openai.Gate` with a policy engine and the audit log."""

    def __init__(self, engine: PolicyEngine, audit: AuditLog, enclave: EnclaveFacts, *,
                 mode: str, region: str, allow_plaintext: bool, timeout_s: float) -> None:
        self.engine = engine
        self._audit = audit
        self._bound: dict[str, EnclaveFacts] = {}  # policy digest -> the latest facts binding it
        self._changed = asyncio.Event()
        self.enclave = enclave
        self._mode = mode
        self._region = region
        self._allow_plaintext = allow_plaintext
        self._timeout = timeout_s
        self._pending: set[asyncio.Task[None]] = set()
        self._clock = _MinuteClock()

    @property
    def enclave(self) -> EnclaveFacts:
        """The enclave facts of the current identity document (new evidence after a policy
        reload or a key rotation replaces them)."""
        return self._enclave

    @enclave.setter
    def enclave(self, facts: EnclaveFacts) -> None:
        self._enclave = facts
        self._bound.pop(facts.policy_digest, None)
        self._bound[facts.policy_digest] = facts
        while len(self._bound) > _KEPT_FACTS:
            del self._bound[next(iter(self._bound))]
        self._changed.set()
        self._changed = asyncio.Event()

    async def _facts_for(self, digest: str) -> EnclaveFacts:
        """The enclave facts whose evidence binds the policy bundle ``digest``, for a record of
        a decision made on it. A reload switches the engine to a new bundle before the evidence
        that binds it is collected (a hardware report can take a while): a decision on the new
        bundle waits for that evidence, within the policy timeout, and fails closed
        (``policy_unavailable``) without it, so that no record pairs one bundle's digest with
        evidence that binds another."""
        facts = self._bound.get(digest)
        if facts is not None:
            return facts
        try:
            async with asyncio.timeout(self._timeout):
                while (facts := self._bound.get(digest)) is None:
                    await self._changed.wait()
        except TimeoutError as exc:
            raise PolicyUnavailable("no enclave evidence binds the policy bundle yet") from exc
        return facts

    def policy_input(self, ctx: CallContext, params: Mapping[str, Any], *,
                     lenient: bool = False) -> PolicyInput:
        assert ctx.tenant is not None
        route = ctx.route
        return PolicyInput(
            channel=ctx.channel, tenant_id=ctx.tenant.pseudonym, tenant_name=ctx.tenant.name,
            # A NUL (%00) can reach only refused paths: it becomes U+FFFD, so the request still
            # gets a decision, and a denial its record.
            method=ctx.method, path=ctx.path.replace("\x00", "\ufffd"),
            model=route.name if route else None,
            request=RequestParams.from_body(params, lenient=lenient),
            backend_name=route.backend if route else "",
            retention_tier=route.retention_tier.value if route else "none",
            enclave_platform=self.enclave.platform,
            enclave_measurement=self.enclave.measurement,
            enclave_simulated=self.enclave.simulated, enclave_debug=self.enclave.debug,
            mode="production" if self._mode == "production" else "development",
            region=self._region, allow_plaintext=self._allow_plaintext, time=self._clock.now())

    async def decide(self, ctx: CallContext, params: Mapping[str, Any], *,
                     lenient: bool = False) -> Decision:
        """The decision, or :class:`PolicyUnavailable` (fail closed) within the timeout."""
        document = self.policy_input(ctx, params, lenient=lenient)
        hit = self.engine.cached(document)
        if hit is not None:
            return hit
        try:
            # asyncio.timeout, not wait_for: no extra task on the hot path. Engines also bound
            # their own calls; this is the backstop.
            async with asyncio.timeout(self._timeout):
                return await self.engine.decide(document)
        except TimeoutError as exc:
            raise PolicyUnavailable("the policy engine did not decide in time") from exc

    def _base(self, kind: str, ctx: CallContext, decision: Decision,
              enclave: EnclaveFacts) -> RecordBuilder:
        """The fields every record of ``ctx`` carries; ``enclave``: the facts whose evidence
        binds ``decision``'s bundle."""
        assert ctx.tenant is not None
        builder = RecordBuilder(kind).set(
            tenant=ctx.tenant.pseudonym, request_id=ctx.request_id, endpoint=ctx.endpoint,
            decision="allow" if decision.allow else "deny", channel=ctx.channel,
            rule_ids=list(decision.rule_ids), obligations=sorted(decision.obligations),
            policy_bundle_digest=decision.bundle_digest,
            evidence_digest=enclave.evidence_digest, platform=enclave.platform,
            request_commitment=ctx.request_commitment)
        if ctx.route is not None:
            builder = builder.set(model=ctx.route.name, backend=ctx.route.backend,
                                  retention_tier=ctx.route.retention_tier.value)
        return builder

    async def admit(self, ctx: CallContext, params: Mapping[str, Any]) -> Admission:
        decision = await self.decide(ctx, params)
        if not decision.allow:
            await self._record_denial(ctx, decision)
            raise PolicyDenied([d.rule for d in decision.deny], [d.message for d in decision.deny])
        enclave = await self._facts_for(decision.bundle_digest)
        record = self._base("intent", ctx, decision, enclave).set(
            stream=bool(params.get("stream"))).build()
        receipt = await self._audit.append(record)  # AuditUnavailable → 503, nothing forwarded
        return Admission(obligations=decision.obligations, decision=decision,
                         receipt=receipt.to_header(), intent_id=receipt.record_id)

    async def deny_or_pass(self, ctx: CallContext, params: Mapping[str, Any]) -> None:
        """Decide for a request that will not be forwarded: a denial is raised and recorded.
        Its body was checked by no schema, so malformed optional fields count as absent."""
        decision = await self.decide(ctx, params, lenient=True)
        if not decision.allow:
            await self._record_denial(ctx, decision)
            raise PolicyDenied([d.rule for d in decision.deny], [d.message for d in decision.deny])

    async def _record_denial(self, ctx: CallContext, decision: Decision) -> None:
        try:
            enclave = await self._facts_for(decision.bundle_digest)
            record = self._base("denial", ctx, decision, enclave).set(
                status=403, latency_ms=max(ctx.elapsed_ms(), 0.001)).build()
            await self._audit.append(record)
        except (AuditUnavailable, PolicyUnavailable):
            _log.error("denial_not_recorded", request_id=ctx.request_id)

    async def finish(self, ctx: CallContext, admission: Admission, outcome: Outcome) -> None:
        """The completion record; written even when the client went away mid-stream."""
        decision = admission.decision
        if not isinstance(decision, Decision):
            return
        fields: dict[str, Any] = {
            "status": outcome.status, "prompt_tokens": _count(outcome.prompt_tokens),
            "completion_tokens": _count(outcome.completion_tokens),
            "latency_ms": max(ctx.elapsed_ms(), 0.001)}
        if outcome.response_commitment is not None:
            fields["response_commitment"] = outcome.response_commitment
        if outcome.aborted is not None:
            fields["abort_reason"] = outcome.aborted
        # Off the response path: the intent record was durable before forwarding; this one is
        # built, signed and appended in the background and drained at shutdown, whatever the
        # client does. Its time and the enclave facts are the request's end's, taken now: the
        # latest that bind its decision's bundle (the intent record's, or newer evidence of the
        # same bundle).
        fields["time"] = datetime.now(UTC)
        enclave = self._bound.get(decision.bundle_digest, self.enclave)
        task = asyncio.create_task(self._append_completion(ctx, decision, enclave, fields))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _append_completion(self, ctx: CallContext, decision: Decision,
                                 enclave: EnclaveFacts, fields: dict[str, Any]) -> None:
        try:
            record = self._base("completion", ctx, decision, enclave).set(**fields).build()
            await self._audit.append(record)
        except (InvalidRecord, AuditUnavailable):
            _log.error("completion_not_recorded", request_id=ctx.request_id)

    async def drain(self) -> None:
        """Wait for every completion record still being written."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)


def _count(value: object) -> int:
    """A token count as records hold it: an integer in [0, 2**53 - 1] (clamped)."""
    return min(max(value, 0), _MAX_COUNT) if type(value) is int else 0
