"""The dashboard's Enclave page (``/dashboard/enclave``, proxy/dashboard/_pages.py
``enclave_page``): a verdict for every identity document the gateway kept in its data directory
(``identity/<sha256>.json``), and the evidence digests its records cite, a reviewer seeing
only those its own tenant's records cite.

Its own gateway, started twice on one data directory: each start publishes a new identity
document (new OHTTP keys, new evidence), so the records of the two runs cite two evidence
digests. Tenant ``acme`` makes requests in the first run only, ``globex`` in both.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import sqlite3
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import rfc8785

from proxy.tenants import TenantStore
from proxy.users import UserStore
from tests.dashboard.conftest import PASSWORD, sign_in
from tests.server import Gateway, fast_config, start_fast_upstream, start_gateway

_ADDRESS = "127.0.0.21"  # its own client address (the sign-in limit counts per address)
USERS = {"enc-auditor": ("auditor", None), "enc-rev-acme": ("reviewer", "acme"),
         "enc-rev-globex": ("reviewer", "globex")}
_EVIDENCE_ROW = re.compile(r"<tr><td><code>([^<]*)</code></td><td>[^<]*</td><td>[^<]*</td>"
                           r"<td>(\d+)</td></tr>")
_IDENTITY_ROW = re.compile(r"<tr><td>([^<]*)</td><td>([^<]*)</td><td><code>([^<]*)</code>.*?"
                           r'<td class="(ok|bad)">([^<]*)</td>', re.S)


@dataclass
class EnclaveSetup:
    gateway: Gateway
    requests: dict[str, list[str]]  # tenant → x-request-id of each of its requests


def _chat(gw: Gateway, key: str) -> str:
    response = httpx.post(f"{gw.url}/v1/chat/completions", timeout=30,
                          headers={"Authorization": f"Bearer {key}"},
                          json={"model": "fast", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 200, response.text
    return response.headers["x-request-id"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnclaveSetup]:
    workdir = tmp_path_factory.mktemp("enclave")
    upstream = start_fast_upstream(workdir)
    config = fast_config(upstream.port, allow_plaintext=True, checkpoint_every_ms=100)
    try:
        first = start_gateway(workdir, config)
        try:
            tenants = TenantStore(f"sqlite:///{first.data_dir / 'sealgate.db'}")
            try:
                for name in ("acme", "globex"):
                    tenants.create_tenant(name, exist_ok=True)
                keys = {name: tenants.create_key(name)[1] for name in ("acme", "globex")}
            finally:
                tenants.close()
            requests = {"acme": [_chat(first, keys["acme"]) for _ in range(2)],
                        "globex": [_chat(first, keys["globex"])]}
        finally:
            first.stop()
        gw = start_gateway(workdir, config, data_dir=first.data_dir)
        try:
            requests["globex"] += [_chat(gw, keys["globex"]) for _ in range(2)]
            users = UserStore(f"sqlite:///{gw.data_dir / 'sealgate.db'}")
            try:
                for name, (role, tenant) in USERS.items():
                    users.create(name, role, PASSWORD, tenant)
            finally:
                users.close()
            yield EnclaveSetup(gw, requests)
        finally:
            gw.stop()
    finally:
        upstream.stop()


def _cited(setup: EnclaveSetup) -> dict[str, Counter[str]]:
    """Evidence digest → records citing it, by tenant: read from the stored envelopes of the
    requests each tenant made (both their intent and completion records)."""
    db = sqlite3.connect(f"file:{setup.gateway.data_dir / 'audit.db'}?mode=ro", uri=True)
    out: dict[str, Counter[str]] = {}
    try:
        for tenant, ids in setup.requests.items():
            counts: Counter[str] = Counter()
            for request_id in ids:
                rows = db.execute("SELECT envelope FROM audit_records WHERE request_id = ?",
                                  (request_id,)).fetchall()
                assert len(rows) == 2, request_id  # intent and completion
                for (envelope,) in rows:
                    payload = json.loads(base64.b64decode(json.loads(envelope)["payload"]))
                    counts[payload["predicate"]["evidence_digest"]] += 1
            out[tenant] = counts
    finally:
        db.close()
    return out


def _page(setup: EnclaveSetup, user: str) -> str:
    client = sign_in(setup.gateway.url, user, _ADDRESS)
    try:
        response = client.get("/dashboard/enclave")
    finally:
        client.close()
    assert response.status_code == 200, response.text[:300]
    return response.text


def _evidence_seen(page: str) -> dict[str, int]:
    section = page.split("Evidence cited by records", 1)[1]
    return {digest: int(n) for digest, n in _EVIDENCE_ROW.findall(section)}


def _identities(page: str) -> list[dict[str, Any]]:
    table = page.split('id="identities"', 1)[1].split("</table>", 1)[0]
    return [{"created": c, "platform": p, "measurement": html.unescape(m), "ok": cls == "ok",
             "verdict": html.unescape(v)} for c, p, m, cls, v in _IDENTITY_ROW.findall(table)]


def _kept(setup: EnclaveSetup) -> dict[str, Path]:
    """The identity documents in the data directory, by the evidence digest they carry
    (sha256 over the RFC 8785 encoding of the document's ``evidence``)."""
    out = {}
    for path in sorted((setup.gateway.data_dir / "identity").glob("*.json")):
        evidence = json.loads(path.read_bytes())["evidence"]
        out["sha256:" + hashlib.sha256(rfc8785.dumps(evidence)).hexdigest()] = path
    return out


def test_reviewer_sees_only_the_evidence_its_own_tenant_cites(setup: EnclaveSetup) -> None:
    cited = _cited(setup)
    everything = cited["acme"] + cited["globex"]
    # Two runs, two evidence digests, each that of one kept identity document.
    assert len(everything) == 2 and set(everything) == set(_kept(setup))
    assert len(cited["acme"]) == 1 and set(cited["acme"]) < set(cited["globex"])
    assert _evidence_seen(_page(setup, "enc-auditor")) == dict(everything)
    assert _evidence_seen(_page(setup, "enc-rev-acme")) == dict(cited["acme"])
    assert _evidence_seen(_page(setup, "enc-rev-globex")) == dict(cited["globex"])


def test_kept_identity_documents_are_verified(setup: EnclaveSetup) -> None:
    rows = _identities(_page(setup, "enc-rev-acme"))
    assert len(rows) == len(_kept(setup)) == 2
    assert all(row["ok"] and row["verdict"].startswith("✓ verified") for row in rows), rows


def _plant(setup: EnclaveSetup, edit: Any) -> Path:
    """What an attacker with write access to the data directory can do: copy a kept identity
    document, edit it, and store it beside the others under its own content hash, as the
    gateway names them."""
    original = next(iter(_kept(setup).values()))
    doc = json.loads(original.read_bytes())
    edit(doc)
    raw = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    path = original.with_name(hashlib.sha256(raw).hexdigest() + ".json")
    path.write_bytes(raw)
    return path


def _claim_measurement(doc: dict[str, Any]) -> None:
    doc["measurement"] = "a" * 96  # a release measurement the evidence does not carry


def _edit_evidence(doc: dict[str, Any]) -> None:
    report = json.loads(base64.b64decode(doc["evidence"]["report"]))
    report["body"]["measurement"] = "a" * 96
    doc["evidence"]["report"] = base64.b64encode(rfc8785.dumps(report)).decode()


def _drop_policy(doc: dict[str, Any]) -> None:
    doc["policy_digest"] = "sha256:" + "0" * 64  # another policy than the one bound


@pytest.mark.parametrize("edit", [_claim_measurement, _edit_evidence, _drop_policy])
def test_a_tampered_identity_document_gets_a_failed_verdict(setup: EnclaveSetup,
                                                            edit: Any) -> None:
    planted = _plant(setup, edit)
    try:
        rows = _identities(_page(setup, "enc-auditor"))
        assert len(rows) == 3
        failed = [row for row in rows if not row["ok"]]
        assert len(failed) == 1, rows
        assert failed[0]["verdict"].startswith("✗ ") and "verified" not in failed[0]["verdict"]
        assert sum(row["ok"] for row in rows) == 2  # the genuine ones still pass
    finally:
        planted.unlink()


def test_a_document_edited_in_place_after_a_view_gets_a_failed_verdict(
        setup: EnclaveSetup) -> None:
    """Verdicts are cached by name and content: one edited in place is verified again."""
    _page(setup, "enc-auditor")  # a first view: every kept document verified
    path = next(iter(_kept(setup).values()))
    original = path.read_bytes()
    doc = json.loads(original)
    _claim_measurement(doc)
    path.write_bytes(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())
    try:
        rows = _identities(_page(setup, "enc-auditor"))
        edited = [row for row in rows if row["measurement"] == doc["measurement"]]
        assert len(edited) == 1, rows  # the page shows the edited measurement …
        assert not edited[0]["ok"], edited  # … and must not call it verified
    finally:
        path.write_bytes(original)
