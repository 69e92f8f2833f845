"""The receipt a client gets for a durable record, and its compact header form."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from ._errors import VerificationError

__all__ = ["Receipt"]

_RECORD_ID = re.compile(r"^[0-9a-f]{32}$")
_LOG_ID = re.compile(r"^[0-9a-f]{8}$")
_LEAF = re.compile(r"^(0|[1-9][0-9]{0,18})$")


@dataclass(frozen=True)
class Receipt:
    """Record id, leaf index, envelope signature (base64) and the log id that signed it."""

    record_id: str
    leaf_index: int
    signature: str
    log_id: str

    def to_header(self) -> str:
        """``id=<hex32>; leaf=<n>; log=<hex8>; sig=<base64>``."""
        return (
            f"id={self.record_id}; leaf={self.leaf_index}; "
            f"log={self.log_id}; sig={self.signature}"
        )

    @classmethod
    def parse(cls, header: str) -> Receipt:
        parts: dict[str, str] = {}
        for item in header.split(";"):
            key, sep, value = item.strip().partition("=")
            if not sep or key in parts:
                raise VerificationError("malformed receipt header")
            parts[key] = value
        if set(parts) != {"id", "leaf", "log", "sig"}:
            raise VerificationError("malformed receipt header")
        if not (
            _RECORD_ID.fullmatch(parts["id"])
            and _LEAF.fullmatch(parts["leaf"])
            and _LOG_ID.fullmatch(parts["log"])
        ):
            raise VerificationError("malformed receipt header")
        try:
            if len(base64.b64decode(parts["sig"], validate=True)) != 64:
                raise VerificationError("malformed receipt signature")
        except (ValueError, binascii.Error) as exc:
            raise VerificationError("malformed receipt signature") from exc
        return cls(parts["id"], int(parts["leaf"]), parts["sig"], parts["log"])
