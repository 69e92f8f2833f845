"""The one error root of the OHTTP/BHTTP layer."""

from __future__ import annotations

__all__ = ["OHTTPError"]

# Stable codes and the HTTP status a gateway answers with. Every code maps to a 4xx: these are
# all faults of the message, never of the server.
_STATUS = {
    "ohttp_malformed": 400,
    "ohttp_unknown_key": 400,
    "ohttp_unsupported_suite": 400,
    "ohttp_decrypt_failed": 400,
    "ohttp_key_config_malformed": 400,
    "bhttp_malformed": 400,
}


class OHTTPError(Exception):
    """A message could not be encoded, decoded, sealed or opened.

    ``code`` is one of ``ohttp_malformed``, ``ohttp_unknown_key``, ``ohttp_unsupported_suite``,
    ``ohttp_decrypt_failed``, ``ohttp_key_config_malformed`` or ``bhttp_malformed``;
    ``str(err)`` is ``"CODE: detail"`` and ``status`` is the HTTP status for it.
    Decryption failures carry one fixed detail whatever went wrong, so they are not an oracle.
    """

    def __init__(self, code: str, detail: str) -> None:
        if code not in _STATUS:
            raise ValueError(f"unknown OHTTP error code {code!r}")
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.status = _STATUS[code]


def malformed(detail: str) -> OHTTPError:
    return OHTTPError("ohttp_malformed", detail)


def bhttp_malformed(detail: str) -> OHTTPError:
    return OHTTPError("bhttp_malformed", detail)


def decrypt_failed() -> OHTTPError:
    return OHTTPError("ohttp_decrypt_failed", "message could not be decrypted")
