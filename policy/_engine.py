"""The one interface every policy engine implements, and the fail-closed seam they share."""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from ._bundle import PolicyBundle
from ._decision import Decision
from ._errors import PolicyError, PolicyUnavailable
from ._input import PolicyInput

__all__ = ["ENTRYPOINT", "PolicyEngine", "as_document", "fail_closed"]

# The rule every engine evaluates: data.sealgate.authz.decision (docs/policy.md).
PACKAGE = "sealgate.authz"
RULE = "decision"
ENTRYPOINT = "sealgate/authz/decision"


class PolicyEngine(abc.ABC):
    """Evaluates the policy bundle for one request.

    ``decide`` either returns a ``Decision`` or raises ``PolicyUnavailable``; a failing engine
    never yields ``allow=True`` (DESIGN.md, invariant 2).
    """

    @property
    @abc.abstractmethod
    def bundle(self) -> PolicyBundle:
        """The bundle that decides now."""

    @property
    def bundle_digest(self) -> str:
        """Digest of the bundle that decides now."""
        return self.bundle.digest

    @property
    def wanted_digest(self) -> str:
        """Digest of the bundle the engine was last given: the one that decides now, or one
        still waiting to be installed on a policy server (the ``opa`` engine)."""
        return self.bundle_digest

    @abc.abstractmethod
    async def decide(self, input: PolicyInput | Mapping[str, Any]) -> Decision:
        """Decide on one input document."""

    def cached(self, input: PolicyInput) -> Decision | None:
        """The decision for ``input`` if the engine already holds it (no evaluation, no
        waiting); ``None`` otherwise. Engines without a decision cache always say ``None``."""
        return None

    @abc.abstractmethod
    def reload(self, bundle: PolicyBundle) -> None:
        """Switch to ``bundle`` atomically; in-flight decisions finish on the old one."""

    async def settle(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Bring a policy server up to date with the bundle (the ``opa`` engine installs it);
        ``PolicyUnavailable`` when it cannot. Decisions do the same when they need to."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release connections or threads."""


def as_document(input: PolicyInput | Mapping[str, Any]) -> dict[str, Any]:
    """The validated input document; a mapping is parsed through ``PolicyInput``."""
    if isinstance(input, PolicyInput):
        return input.to_dict()
    return PolicyInput.from_dict(input).to_dict()


@contextmanager
def fail_closed(what: str) -> Iterator[None]:
    """Translate any engine failure into ``PolicyUnavailable`` (policy errors pass through)."""
    try:
        yield
    except PolicyError:
        raise
    except Exception as exc:
        raise PolicyUnavailable(f"{what} failed ({type(exc).__name__})") from exc
