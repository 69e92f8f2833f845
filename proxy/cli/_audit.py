"""``sealgate audit …``: offline verification and inspection of the proof-of-secrecy log."""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from proxy.cli._common import add_config_arg

    audit = sub.add_parser("audit", help="verify and inspect the audit log")
    cmd = audit.add_subparsers(dest="audit_command", metavar="COMMAND", required=True)
    verify = cmd.add_parser("verify", help="recompute and check the whole log")
    verify.add_argument("--from-checkpoint", metavar="FILE",
                        help="a signed checkpoint kept earlier; the log must extend it")
    verify.add_argument("--vkey", help="pin the log's note verifier key (name+id+key)")
    show = cmd.add_parser("show", help="print one record (envelope and statement), or every "
                                       "record of one request")
    show.add_argument("id", help="a record id (a receipt's), or a request id (x-request-id)")
    checkpoint = cmd.add_parser("checkpoint", help="print the latest signed checkpoint")
    for parser in (verify, show, checkpoint):
        parser.add_argument("--db", metavar="URL", default=None,
                            help="audit database URL (default: the configured audit_url, else "
                                 "audit.db in the configured data directory)")
        add_config_arg(parser)
        parser.add_argument("--json", action="store_true", help="machine-readable output")
    verify.set_defaults(func=_verify)
    show.set_defaults(func=_show)
    checkpoint.set_defaults(func=_checkpoint)


def _with_store(args: argparse.Namespace, action: Any) -> int:
    from sqlalchemy.engine import make_url

    from audit import AuditError, LogStore
    from proxy.cli._common import fail_json, load_settings

    url = args.db or load_settings(args).audit_db_url
    try:
        parsed = make_url(url)
    except Exception:
        return fail_json(args, "invalid audit database URL")
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file():
        return fail_json(args, f"no audit database at {parsed.database}", code="state_unavailable")
    try:
        store = LogStore.open(url, read_only=True)
    except AuditError as exc:
        return fail_json(args, str(exc))
    try:
        status: int = action(store)
        return status
    except AuditError as exc:
        return fail_json(args, str(exc))
    finally:
        store.close()


def _progress(done: int, total: int) -> None:
    if total >= 10_000 and sys.stderr.isatty():
        end = "\n" if done >= total else ""
        print(f"\rverifying {done}/{total} records", end=end, file=sys.stderr, flush=True)


def _verify(args: argparse.Namespace) -> int:
    from audit import verify_log
    from proxy.cli._common import fail_json

    trusted = None
    if args.from_checkpoint:
        try:
            trusted = Path(args.from_checkpoint).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            return fail_json(args, f"cannot read the checkpoint file {args.from_checkpoint}: {reason}")

    def action(store: Any) -> int:
        reports = verify_log(store, trusted, _progress, vkey=args.vkey)
        out = [{"log_id": r.log_id, "origin": r.origin, "records": r.records,
                "integrated": r.integrated, "checkpoints": r.checkpoints,
                "size": r.latest.size if r.latest else 0,
                "root_hash": base64.b64encode(r.latest.root_hash).decode() if r.latest else None}
               for r in reports]  # fmt: skip
        if args.json:
            print(json.dumps({"ok": True, "logs": out}, indent=2))
        else:
            for r in out:
                print(f"ok: log {r['log_id']} ({r['origin']}): {r['records']} records, "
                      f"{r['checkpoints']} checkpoints verified, tree size {r['size']}")
        return 0

    return _with_store(args, action)


def _show(args: argparse.Namespace) -> int:
    from proxy.cli._common import fail_json

    def shown(row: Any) -> dict[str, Any] | None:
        try:  # shown as stored; `sealgate audit verify` checks its signature
            envelope = json.loads(bytes(row.envelope))
            statement = json.loads(base64.b64decode(envelope["payload"], validate=True))
        except (ValueError, KeyError, TypeError, RecursionError, binascii.Error):
            return None
        return {"record_id": row.record_id, "log_id": row.log_id, "leaf_index": row.leaf_index,
                "envelope": envelope, "statement": statement}  # fmt: skip

    def action(store: Any) -> int:
        row = store.get_record(args.id)
        rows = [row] if row is not None else store.records_for_request(None, args.id)
        if not rows:
            return fail_json(args, "no record or request with this id (a receipt's record id, "
                                   "or a response's x-request-id)", code="record_not_found")
        out = [shown(r) for r in rows]
        if None in out:
            return fail_json(args, f"a record of {args.id} is malformed in the store",
                             code="record_malformed")
        document = out[0] if row is not None else {"request_id": args.id, "records": out}
        print(json.dumps(document, indent=None if args.json else 2, sort_keys=True))
        return 0

    return _with_store(args, action)


def _checkpoint(args: argparse.Namespace) -> int:
    from audit import SignedCheckpoint, VerificationError
    from proxy.cli._common import fail_json

    def action(store: Any) -> int:
        notes = []
        for log_id, _origin, vkey, _size in store.logs():
            latest = store.latest_checkpoint(log_id)
            if latest is None:
                continue
            try:  # a stored note is printed only once it verifies under its log's key
                signed = SignedCheckpoint.parse(latest[2], vkey)
            except VerificationError as exc:
                return fail_json(args, f"the latest checkpoint of log {log_id} does not verify: "
                                       f"{exc.detail}", code=exc.code)
            notes.append({"log_id": log_id, "vkey": vkey, "size": signed.size, "note": latest[2]})
        if not notes:
            return fail_json(args, "no checkpoint published yet", code="no_checkpoint")
        if args.json:
            print(json.dumps(notes, indent=2))
        else:
            print("\n".join(n["note"] for n in notes), end="")
        return 0

    return _with_store(args, action)
