"""``sealgate evidence …``: export a procurement evidence bundle, and verify one offline."""

from __future__ import annotations

import argparse
import json
import os
import signal
import stat
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from proxy.cli._common import add_config_arg

    evidence = sub.add_parser("evidence", help="procurement evidence bundles")
    cmd = evidence.add_subparsers(dest="evidence_command", metavar="COMMAND", required=True)
    export = cmd.add_parser("export", help="export a signed evidence bundle for a time window")
    export.add_argument("--from", dest="start", required=True, metavar="DATE",
                        help="window start, ISO 8601 date or time (UTC unless an offset is given)")
    export.add_argument("--to", dest="end", required=True, metavar="DATE",
                        help="window end (exclusive); a bare date means the end of that day")
    export.add_argument("--tenant", help="only this tenant's records (tenant name)")
    export.add_argument("--sample", type=int, metavar="N", help="a random sample of N records")
    export.add_argument("--server", metavar="URL", help="fetch the identity document it serves")
    export.add_argument("-o", "--output", required=True, metavar="FILE", help="bundle.zip")
    add_config_arg(export)
    export.set_defaults(func=_export)
    verify = cmd.add_parser("verify", help="verify a bundle offline")
    verify.add_argument("bundle")
    verify.add_argument("--vkey", help="pin the expected log verifier key (recommended)")
    verify.add_argument("--policy", metavar="FILE",
                        help="attestation verification policy (allowed measurements, minimum TCB)")
    verify.add_argument("--allow-any-measurement", action="store_true",
                        help="accept hardware evidence of any measurement (no allowlist)")
    verify.add_argument("--allow-simulated", action="store_true",
                        help="accept simulated (development, insecure) enclave evidence")
    verify.add_argument("--collateral", type=Path, metavar="DIR",
                        help="platform collateral for the identity documents (TDX TCB info, "
                             "QE identity, CRLs; SEV-SNP certificates), see docs/attestation.md")
    verify.add_argument("--json", action="store_true", help="machine-readable verdict")
    verify.set_defaults(func=_verify)


def parse_when(text: str, *, end: bool = False) -> datetime:
    """An ISO date or time; naive means UTC; a bare date (``2024-01-01`` or ``20240101``) as an
    end means the next midnight. ``ValueError`` (or ``OverflowError`` past year 9999) if not."""
    from datetime import date, timedelta

    try:
        day = date.fromisoformat(text)
    except ValueError:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start + timedelta(days=1) if end else start


def _progress(stage: str, done: int, total: int) -> None:
    if total:
        width = 30
        filled = int(width * done / total)
        bar = "#" * filled + "-" * (width - filled)
        line = f"\r{stage:<17} [{bar}] {done}/{total}"
    else:
        line = f"\r{stage:<17} {done}"
    print(line, end="\n" if total and done >= total else "", file=sys.stderr, flush=True)


def _server_document(url: str) -> Any:
    import httpx

    response = httpx.get(url.rstrip("/") + "/.well-known/sealgate/identity", timeout=30.0)
    response.raise_for_status()
    return response.json()


def _export(args: argparse.Namespace) -> int:
    from audit import AuditError, LogStore, load_or_create_signing_key
    from proxy.cli._common import fail, load_settings, missing_state
    from proxy.evidence import EvidenceError, ExportOptions, write_bundle
    from proxy.tenants import TenantStore

    try:
        start, end = parse_when(args.start), parse_when(args.end, end=True)
    except (ValueError, OverflowError):
        return fail("--from and --to must be ISO 8601 dates or times up to 9999-12-30")
    output = Path(args.output)
    if not output.parent.is_dir():  # known before a long export, not after
        return fail(f"cannot write {output}: no folder {output.parent}")
    if args.sample is not None and args.sample < 1:
        return fail("--sample must be at least 1")
    settings = load_settings(args)
    key_path = settings.data_dir / "keys" / "log-signing-key.pem"
    if not key_path.exists():
        return fail(f"no log signing key in {settings.data_dir}")
    try:
        tenant = None
        if args.tenant is not None:  # an empty name (an unset variable) names no tenant
            if (missing := missing_state(settings)) is not None:
                return fail(missing)
            store = TenantStore(settings.tenants_url)
            try:
                tenant = store.tenant(args.tenant).pseudonym
            finally:
                store.close()
        document = _server_document(args.server) if args.server else None
        log = LogStore.open(settings.audit_db_url, read_only=True)  # an export changes nothing
        try:
            options = ExportOptions(start, end, tenant, args.sample, document,
                                    settings.policy_bundle, settings.log_origin,
                                    args.tenant if tenant is not None else None)
            key = load_or_create_signing_key(key_path)
            _write_whole(output, lambda out: write_bundle(log, settings.data_dir, key, options,
                                                          out, _progress))
        finally:
            log.close()
    except (EvidenceError, AuditError) as exc:
        return fail(str(exc))
    except OSError as exc:
        where = exc.filename if exc.filename is not None else output
        return fail(f"export failed: {where}: {exc.strerror or exc}")
    except Exception as exc:
        return fail(f"export failed: {exc}")
    print(f"wrote {output} ({output.stat().st_size} bytes)", file=sys.stderr)
    return 0


def _write_whole(output: Path, write: Callable[[IO[bytes]], None]) -> None:
    """``write`` into a new file beside ``output`` (created exclusively: no link followed, no
    other export's file shared), renamed into place once whole; an existing output's mode is
    kept. A failed or interrupted export (SIGTERM included) leaves no partial file, and an
    existing bundle is replaced only by a complete one."""
    fd, name = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".partial")
    partial = Path(name)
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
        try:
            os.chmod(partial, stat.S_IMODE(output.stat().st_mode))
        except FileNotFoundError:
            os.chmod(partial, 0o644 & ~_umask())
        partial.replace(output)
    finally:
        partial.unlink(missing_ok=True)
        signal.signal(signal.SIGTERM, previous)


def _terminated(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _verify(args: argparse.Namespace) -> int:
    from proxy.attestation import VerificationError, VerificationPolicy, load_collateral
    from proxy.cli._common import fail_json
    from proxy.evidence import EvidenceError, verify_bundle

    try:
        collateral = load_collateral(args.collateral)
    except ValueError as exc:
        return fail_json(args, str(exc))
    try:
        policy = VerificationPolicy.from_file(args.policy) if args.policy else VerificationPolicy()
        if args.allow_any_measurement:
            policy = replace(policy, allow_any_measurement=True)
        verdict = verify_bundle(args.bundle, vkey=args.vkey, allow_simulated=args.allow_simulated,
                                policy=policy, collateral=collateral)
    except (EvidenceError, VerificationError) as exc:
        return fail_json(args, str(exc))
    if args.json:
        print(json.dumps(verdict.to_json(), indent=2))
    else:
        print(verdict.table())
    return 0 if verdict.ok else 1
