"""Canary: a unique prompt string (and the completion text) never reaches disk or logs.

Not as raw bytes in any file, not base64-encoded in any file (at any alignment), and not in
any stored record: records are DSSE envelopes whose statement is base64 in ``payload``, so a
field with no plain column of its own would not show as raw bytes; each is decoded."""

from __future__ import annotations

import base64
import json
import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai

from tests.integration.conftest import MODEL, request_records
from tests.server import Gateway


def files_containing(root: Path, needle: bytes) -> list[Path]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if needle in path.read_bytes():
                    hits.append(path)
            except OSError:
                continue
    return hits


def base64_forms(needle: bytes) -> list[bytes]:
    """The base64 text that ``needle`` becomes wherever it lies in encoded data: at each of the
    three offsets mod 3, the run of whole 4-character groups made of its bytes alone, in the
    standard and the URL-safe alphabet."""
    forms: list[bytes] = []
    for shift in range(3):
        data = b"\0" * shift + needle
        start, end = -(-shift // 3) * 4, len(data) // 3 * 4
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            form = encode(data)[start:end]
            if form not in forms:
                forms.append(form)
    return forms


def _audit_databases(root: Path) -> Iterator[Path]:
    """Every SQLite file under ``root`` that holds an ``audit_records`` table."""
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        with path.open("rb") as file:
            if file.read(16) != b"SQLite format 3\0":
                continue
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                          "AND name = 'audit_records'").fetchone():
                yield path
        finally:
            db.close()


def stored_statements(root: Path) -> Iterator[tuple[Path, str, bytes]]:
    """(database, record id, statement JSON) of every record stored under ``root``: each
    envelope's ``payload`` decoded from base64. A payload that does not decode is itself a
    finding: it is given back whole, undecoded."""
    for path in _audit_databases(root):
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            for record_id, envelope in db.execute("SELECT record_id, envelope FROM audit_records"):
                raw = bytes(envelope)
                try:
                    yield path, record_id, base64.b64decode(json.loads(raw)["payload"],
                                                            validate=True)
                except (ValueError, KeyError, TypeError):
                    yield path, record_id, raw
        finally:
            db.close()


def records_containing(root: Path, needle: bytes) -> list[tuple[Path, str]]:
    return [(path, record_id) for path, record_id, statement in stored_statements(root)
            if needle in statement]


def _request_id(statement: bytes) -> object:
    try:
        return json.loads(statement)["predicate"]["request_id"]
    except (ValueError, KeyError, TypeError):
        return None


def files_containing_base64(root: Path, needle: bytes) -> list[Path]:
    forms = base64_forms(needle)
    return [path for form in forms for path in files_containing(root, form)]


def test_canary_never_written(gateway: Gateway, api_key: str, workdir: Path) -> None:
    canary = "CANARY" + secrets.token_hex(16)
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=api_key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, max_tokens=16, messages=[{"role": "user", "content": f"Repeat: {canary}"}])
    chat, chat_id = raw.parse(), raw.headers["x-request-id"]
    list(client.chat.completions.create(
        model=MODEL, max_tokens=8, stream=True, messages=[{"role": "user", "content": canary}]))
    client.completions.create(model=MODEL, prompt=canary, max_tokens=4)
    client.embeddings.create(model=MODEL, input=canary)
    # Error paths must not echo it either.
    headers = {"Authorization": f"Bearer {api_key}"}
    for body in ({"model": MODEL, "messages": [{"role": canary, "content": canary}]},
                 {"model": canary, "messages": [{"role": "user", "content": canary}]},
                 {"model": MODEL, "messages": [{"role": "user", "content": canary}], "n": canary}):
        response = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=headers)
        assert response.status_code in (400, 404) and canary not in response.text
    completion = chat.choices[0].message.content or ""
    needles = [canary.encode()]
    if len(completion.strip()) >= 12:
        needles.append(completion.strip().encode())
    # The chat's records are stored (the completion is appended in the background) and are
    # among those decoded below: the record scan reads what it has to.
    assert set(request_records(gateway, api_key, chat_id)) == {"intent", "completion"}
    decoded = {(path, _request_id(statement)) for path, _, statement in stored_statements(workdir)}
    assert (gateway.data_dir / "audit.db", chat_id) in decoded
    for needle in needles:
        assert files_containing(workdir, needle) == []
        assert records_containing(workdir, needle) == []
    assert files_containing_base64(workdir, canary.encode()) == []
    assert canary not in gateway.output()
    assert canary not in httpx.get(f"{gateway.url}/metrics").text
