"""``sealgate attest``: verify attestation evidence or a live enclave identity."""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import secrets
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from proxy.attestation import (
    Collateral,
    Evidence,
    EvidenceVerdict,
    VerificationError,
    VerificationPolicy,
    VerifiedIdentity,
    verify_evidence,
    verify_identity,
)

__all__ = ["register"]

_IDENTITY_PATH = "/.well-known/sealgate/identity"


def register(subparsers: Any) -> None:
    """Add ``attest verify`` and ``attest identity``."""
    attest = subparsers.add_parser("attest", help="verify enclave attestation")
    sub = attest.add_subparsers(dest="attest_command", metavar="ACTION")
    sub.required = True
    verify = sub.add_parser("verify", help="verify an evidence file or identity document")
    verify.add_argument("--evidence", required=True, type=Path, help="report, quote or JSON")
    verify.add_argument("--platform", default="auto",
                        choices=["auto", "sev-snp", "tdx", "nvidia", "simulated"])
    _common(verify)
    verify.set_defaults(func=_cmd_verify)
    identity = sub.add_parser("identity", help="fetch and verify a live identity document")
    identity.add_argument("url", help="server base URL or the identity URL")
    _common(identity)
    identity.set_defaults(func=_cmd_identity)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--collateral", type=Path, help="folder with certificates/TCB info/CRLs")
    parser.add_argument("--policy", type=Path, help="verification policy (JSON or TOML)")
    parser.add_argument("--at", help="verify as of this ISO 8601 time (collateral validity)")
    parser.add_argument("--json", action="store_true", help="print the verdict as JSON")
    parser.add_argument("--allow-simulated", action="store_true",
                        help="accept the insecure simulated provider (development only)")
    parser.add_argument("--allow-any-measurement", action="store_true",
                        help="accept any launch measurement when the policy lists none")


def _policy(args: argparse.Namespace) -> VerificationPolicy:
    policy = VerificationPolicy.from_file(args.policy) if args.policy else VerificationPolicy()
    if args.allow_simulated:
        policy = dataclasses.replace(policy, allow_simulated=True)
    if args.allow_any_measurement:
        policy = dataclasses.replace(policy, allow_any_measurement=True)
    return policy


def _at(args: argparse.Namespace) -> datetime | None:
    if not args.at:
        return None
    try:
        value = datetime.fromisoformat(args.at)
    except ValueError as exc:
        raise VerificationError("usage", "--at must be an ISO 8601 time") from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _sniff(raw: bytes, platform: str) -> Evidence:
    """Raw evidence file → Evidence (JSON evidence objects are handled by the caller)."""
    if platform == "auto":
        if len(raw) == 1184:
            platform = "sev-snp"
        elif raw[:2] in (b"\x04\x00", b"\x05\x00") and raw[4:5] == b"\x81":
            platform = "tdx"
        elif raw[:4].lower() == b"11e0":
            platform = "nvidia"
        else:
            raise VerificationError("report_malformed", "cannot tell the evidence platform")
    if platform == "nvidia" and raw[:4].lower() == b"11e0":
        try:
            raw = bytes.fromhex(raw.decode("ascii").strip())
        except ValueError as exc:  # also UnicodeDecodeError
            raise VerificationError("report_malformed", "NVIDIA evidence is not hex") from exc
    return Evidence(platform=platform, report=raw)


def _load(path: Path, platform: str) -> dict[str, Any] | Evidence:
    raw = path.read_bytes()
    if raw.lstrip()[:1] == b"{":
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise VerificationError("document_malformed", "evidence file is not JSON") from exc
        return doc if "evidence" in doc else Evidence.from_json(doc)
    return _sniff(raw, platform)


def _with_collateral_certs(evidence: Evidence, collateral: Collateral | None) -> Evidence:
    if evidence.platform == "nvidia" and not evidence.certificates and collateral:
        return Evidence(platform="nvidia", report=evidence.report,
                        certificates=collateral.certificates)
    return evidence


def _cmd_verify(args: argparse.Namespace) -> int:
    trace: list[str] = []
    try:
        policy, at = _policy(args), _at(args)
        collateral = Collateral.from_dir(args.collateral) if args.collateral else None
        loaded = _load(args.evidence, args.platform)
        if isinstance(loaded, Evidence):
            evidence = _with_collateral_certs(loaded, collateral)
            verdict = verify_evidence(evidence, collateral=collateral, at=at, trace=trace)
            notes = policy.check(verdict) if verdict.platform != "nvidia" else [
                "GPU evidence alone: CPU policy not applied"]
            return _report_verdict(args, verdict, notes)
        identity = verify_identity(loaded, policy, now=at, collateral=collateral, trace=trace)
        return _report_identity(args, identity)
    except VerificationError as err:
        return _report_failure(args, trace, err)
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        return _report_failure(args, trace, VerificationError("io_error", f"{exc.strerror}{where}"))


def _identity_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.path in ("", "/"):
        return url.rstrip("/") + _IDENTITY_PATH
    return url


def _cmd_identity(args: argparse.Namespace) -> int:
    trace: list[str] = []
    nonce = secrets.token_bytes(32)
    try:
        policy, at = _policy(args), _at(args)
        collateral = Collateral.from_dir(args.collateral) if args.collateral else None
        try:
            response = httpx.post(_identity_url(args.url), timeout=30.0,
                                  json={"nonce": base64.b64encode(nonce).decode("ascii")})
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise VerificationError("fetch_failed", f"cannot fetch identity: {exc}") from exc
        trace.append("identity document fetched with a fresh 32-byte nonce")
        identity = verify_identity(document, policy, nonce=nonce, now=at,
                                   collateral=collateral, trace=trace)
        return _report_identity(args, identity)
    except VerificationError as err:
        return _report_failure(args, trace, err)


def _emit(args: argparse.Namespace, checks: list[str], summary: dict[str, Any],
          error: VerificationError | None) -> None:
    if args.json:
        out = {"ok": error is None, **summary, "checks": checks,
               "error": None if error is None else {"code": error.code, "detail": error.detail}}
        print(json.dumps(out, indent=2, sort_keys=True, default=str))
        return
    for check in checks:
        print(f"✓ {check}")
    if error is not None:
        print(f"✗ {error}")
        print("FAILED")
        return
    for note in summary.get("notes", []):
        print(f"! {note}")
    for key in ("platform", "measurement", "tcb_status", "evidence_digest"):
        if summary.get(key) is not None:
            print(f"  {key}: {summary[key]}")
    print("VERIFIED")


def _report_verdict(args: argparse.Namespace, verdict: EvidenceVerdict, notes: list[str]) -> int:
    summary = {"platform": verdict.platform, "measurement": verdict.measurement or None,
               "report_data": verdict.report_data.hex(), "tcb": dict(verdict.tcb),
               "tcb_status": verdict.tcb_status, "simulated": verdict.simulated,
               "claims": dict(verdict.claims), "notes": notes}
    _emit(args, list(verdict.checks), summary, None)
    return 0


def _report_identity(args: argparse.Namespace, identity: VerifiedIdentity) -> int:
    summary = {"platform": identity.platform, "measurement": identity.measurement,
               "tcb_status": identity.tcb_status, "simulated": identity.simulated,
               "policy_digest": identity.policy_digest,
               "evidence_digest": identity.evidence_digest,
               "audit_public_key": base64.b64encode(identity.audit_public_key).decode(),
               "notes": list(identity.notes), "gpus": [dict(g) for g in identity.gpus]}
    _emit(args, list(identity.checks), summary, None)
    return 0


def _report_failure(args: argparse.Namespace, trace: list[str], err: VerificationError) -> int:
    _emit(args, trace, {}, err)
    sys.stdout.flush()
    return 1
