"""The last checkpoint a log's key signed, kept beside that key, outside the store.

The store's own checkpoint rows tell a restarted gateway what it signed last, unless they went
with the store: a database removed, or replaced by an older copy, would start the log again at
a smaller size under the same key (a rollback that clients holding a newer checkpoint can
prove). This file keeps, per log, the size and root of the last checkpoint signed; at start-up
the stored tree must extend it, or the log is refused. It is rewritten whole (a new file moved
into place) after each publication; without an fsync, a power loss may leave it one
publication behind, which only weakens the check for that one checkpoint.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import structlog

from ._errors import AuditUnavailable

__all__ = ["Witness"]

_log = structlog.get_logger("sealgate.audit")


class Witness:
    """Size and root of the last checkpoint signed, per log id, in one small JSON file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.failing = False

    def _entries(self) -> dict[str, dict[str, object]]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise AuditUnavailable(f"cannot read {self.path.name} ({type(exc).__name__})") from exc
        try:
            entries = json.loads(text)
        except ValueError:
            entries = None
        if not isinstance(entries, dict) or not all(isinstance(v, dict) for v in entries.values()):
            raise AuditUnavailable(f"{self.path.name} is not a checkpoint witness")
        return entries

    def last_signed(self, log_id: str) -> tuple[int, bytes] | None:
        """The last (size, root hash) signed for ``log_id``, if recorded."""
        entry = self._entries().get(log_id)
        if entry is None:
            return None
        size, root = entry.get("size"), entry.get("root")
        try:
            if type(size) is not int or size < 0 or not isinstance(root, str):
                raise ValueError
            digest = bytes.fromhex(root)
            if len(digest) != 32:
                raise ValueError
        except ValueError:
            raise AuditUnavailable(f"{self.path.name} is not a checkpoint witness") from None
        return size, digest

    def signed(self, log_id: str, size: int, root: bytes) -> None:
        """Record a checkpoint just signed. A failure is logged (once until it works again):
        the store keeps the checkpoint either way."""
        try:
            entries = self._entries()
            entries[log_id] = {"size": size, "root": root.hex()}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
            try:
                with os.fdopen(fd, "w") as fh:
                    json.dump(entries, fh, sort_keys=True)
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except (OSError, AuditUnavailable) as exc:
            if not self.failing:
                self.failing = True
                _log.error("checkpoint_witness_not_written", log_id=log_id,
                           error_type=type(exc).__name__)
            return
        self.failing = False
