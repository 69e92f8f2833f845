"""The attestation error family: every failure is a `VerificationError` with a stable code."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

__all__ = ["VerificationError", "translate", "translated"]

_P = ParamSpec("_P")
_R = TypeVar("_R")
# What parsing hostile evidence can raise besides VerificationError: malformed values, an
# unknown key type, a certificate or CRL with a bad version field (cryptography's InvalidVersion
# is not a ValueError), JSON nested past the recursion limit.
_FOREIGN = (ValueError, TypeError, KeyError, IndexError, UnicodeError, UnsupportedAlgorithm,
            x509.InvalidVersion, RecursionError)


class VerificationError(Exception):
    """Root of every attestation error; ``code`` is stable, ``str(err)`` is ``"CODE: detail"``.

    Codes used by this package (the detail text may change, the codes do not):
    ``report_malformed``, ``quote_malformed``, ``report_signature_invalid``,
    ``quote_signature_invalid``, ``qe_report_invalid``, ``cert_chain_invalid``,
    ``root_not_trusted``, ``collateral_expired``, ``collateral_invalid``, ``collateral_missing``,
    ``crl_revoked``, ``fmspc_mismatch``, ``tcb_revoked``, ``tcb_status_not_allowed``,
    ``qe_identity_mismatch``, ``chip_id_mismatch``, ``tcb_mismatch``, ``tcb_below_minimum``,
    ``debug_enabled``, ``migration_agent_allowed``, ``measurement_not_allowed``, ``claim_not_allowed``,
    ``measurement_mismatch``, ``report_data_mismatch``, ``nonce_mismatch``, ``gpu_nonce_mismatch``,
    ``simulated_not_allowed``, ``platform_not_allowed``, ``document_malformed``,
    ``document_expired``, ``policy_invalid``, ``evidence_unavailable``, ``evidence_race``,
    ``no_evidence_provider``.
    """

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@contextmanager
def translate(code: str, what: str) -> Iterator[None]:
    """Turn a foreign parsing/crypto exception into a `VerificationError` at the seam."""
    try:
        yield
    except VerificationError:
        raise
    except _FOREIGN as exc:
        raise VerificationError(code, f"{what}: {type(exc).__name__}") from exc


def translated(code: str, what: str) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Decorate a public verifier: nothing but a `VerificationError` leaves it, whatever the
    evidence holds (a clear refusal, never a traceback)."""

    def wrap(fn: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(fn)
        def verified(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            with translate(code, what):
                return fn(*args, **kwargs)

        return verified

    return wrap
