"""The result of verifying a bundle: one row per check, each naming the file it concerns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._errors import kind_of

__all__ = ["BundleVerdict", "Check", "printable", "unexpected"]


def printable(text: str) -> str:
    """``text`` with every non-printable character escaped as Python would (``\\r``,
    ``\\x1b``, ``\\u202e``, ``\\ud800``): names and details come from the bundle, and a carriage
    return or an ANSI escape must not overwrite the verdict a terminal shows."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def unexpected(exc: Exception) -> str:
    """The detail of a check that raised something it does not handle: failing the check keeps
    the verdict, and naming the exception keeps a verifier bug from passing for bad input."""
    return f"unexpected {kind_of(exc)} while checking: {str(exc)[:200]}"


@dataclass(frozen=True)
class Check:
    """One verification step."""

    name: str
    """Stable check name, e.g. ``manifest signature``, ``file hash``, ``inclusion``."""
    ok: bool
    detail: str
    file: str | None = None
    """The bundle file the check concerns."""
    insecure: bool = False
    """Passed, but only because simulated (development) evidence was accepted."""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "file": self.file,
                "insecure": self.insecure}


@dataclass(frozen=True)
class BundleVerdict:
    """Every check that ran; the bundle verifies when all of them passed."""

    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def insecure(self) -> bool:
        return any(c.insecure for c in self.checks)

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "insecure": self.insecure,
                "checks": [c.to_json() for c in self.checks]}

    def table(self) -> str:
        """A fixed-width verdict table for terminals, one line per check: what the bundle
        supplied (file names, details) is escaped, see :func:`printable`."""
        width = max((len(c.name) for c in self.checks), default=5)
        lines = [f"{'check':<{width}}  result    file / detail"]
        for c in self.checks:
            mark = "FAIL" if not c.ok else ("INSECURE" if c.insecure else "ok")
            where = f"{c.file}: " if c.file else ""
            lines.append(printable(f"{c.name:<{width}}  {mark:<8}  {where}{c.detail}"))
        verdict = "FAILED" if not self.ok else ("PASSED (insecure: simulated evidence)"
                                                if self.insecure else "PASSED")
        lines.append(f"verdict: {verdict}")
        return "\n".join(lines)
