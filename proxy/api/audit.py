"""Transparency-log routes: checkpoint, proofs and (tenant-scoped) records.

The log comes from Litestar DI as ``audit_log``; the records route also takes the
authenticated ``tenant`` (an object with ``.id`` and ``.pseudonym``). Errors are the audit
package's, mapped to OpenAI error envelopes by the app's single exception handler.
"""

from __future__ import annotations

from typing import Any

from litestar import Response, get
from litestar.params import Parameter

from audit import AuditLog, RecordNotFound

__all__ = ["audit_handlers"]

_TAGS = ["audit"]


# ``log``: the log id (8 hex) of a receipt. Replicas sharing one database each keep their own
# log; any replica serves checkpoints and proofs of all of them. Default: this replica's log.
_LOG = Parameter(query="log", default=None, pattern=r"^[0-9a-f]{8}\Z")


@get("/v1/audit/logs", summary="Every log in the store (id, origin, verifier key)", tags=_TAGS)
async def get_logs(audit_log: AuditLog) -> dict[str, Any]:
    return {"current": audit_log.log_id, "logs": await audit_log.logs()}


@get("/v1/audit/checkpoint", summary="Latest signed checkpoint (C2SP tlog-checkpoint)", tags=_TAGS)
async def get_checkpoint(audit_log: AuditLog, log: str | None = _LOG) -> Response[str]:
    checkpoint = await audit_log.checkpoint(log)
    return Response(checkpoint.note, media_type="text/plain")


@get("/v1/audit/proof/inclusion", summary="RFC 9162 inclusion proof", tags=_TAGS)
async def get_inclusion_proof(
    audit_log: AuditLog,
    index: int = Parameter(ge=0),
    size: int | None = Parameter(default=None, ge=1),
    log: str | None = _LOG,
) -> dict[str, Any]:
    proof = await audit_log.inclusion_proof(index, size, log)
    return proof.to_json()


@get("/v1/audit/proof/consistency", summary="RFC 9162 consistency proof", tags=_TAGS)
async def get_consistency_proof(
    audit_log: AuditLog,
    old: int = Parameter(query="from", ge=1),
    new: int | None = Parameter(query="to", default=None, ge=1),
    log: str | None = _LOG,
) -> dict[str, Any]:
    proof = await audit_log.consistency_proof(old, new, log)
    return proof.to_json()


@get("/v1/audit/requests/{request_id:str}", summary="The records of one request", tags=_TAGS)
async def get_request_records(audit_log: AuditLog, tenant: Any, request_id: str) -> dict[str, Any]:
    """Intent and completion (or denial) records of a request the caller's tenant made, found
    by the ``x-request-id`` of its response; each with its log and leaf index."""
    pseudonym = getattr(tenant, "pseudonym", None)
    if not isinstance(pseudonym, str):
        raise RecordNotFound("no such request")
    records = await audit_log.request_records(pseudonym, request_id)
    if not records:
        raise RecordNotFound("no such request")
    return {"request_id": request_id, "records": records}


@get("/v1/audit/records/{record_id:str}", summary="A record's DSSE envelope", tags=_TAGS)
async def get_record(audit_log: AuditLog, tenant: Any, record_id: str) -> Response[bytes]:
    pseudonym = getattr(tenant, "pseudonym", None)
    if not isinstance(pseudonym, str):
        raise RecordNotFound("no such record")
    envelope = await audit_log.get_record(record_id, tenant=pseudonym)
    return Response(envelope, media_type="application/json")


audit_handlers = [get_logs, get_request_records, get_checkpoint, get_inclusion_proof,
                  get_consistency_proof, get_record]
