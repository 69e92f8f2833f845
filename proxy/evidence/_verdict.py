"""The result of verifying a bundle: one row per check, each naming the file it concerns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["BundleVerdict", "Check"]


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
        """A fixed-width verdict table for terminals."""
        width = max((len(c.name) for c in self.checks), default=5)
        lines = [f"{'check':<{width}}  result    file / detail"]
        for c in self.checks:
            mark = "FAIL" if not c.ok else ("INSECURE" if c.insecure else "ok")
            where = f"{c.file}: " if c.file else ""
            lines.append(f"{c.name:<{width}}  {mark:<8}  {where}{c.detail}")
        verdict = "FAILED" if not self.ok else ("PASSED (insecure: simulated evidence)"
                                                if self.insecure else "PASSED")
        lines.append(f"verdict: {verdict}")
        return "\n".join(lines)
