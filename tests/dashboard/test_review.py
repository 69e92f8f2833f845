"""Review regressions: multipart and oversized forms, an expired sign-in form, the HTML Content-Type, user
names no account can have, and what the log health page claims and where it does its work."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from audit import AuditLog, SignedCheckpoint
from proxy.dashboard import _chain, _pages
from proxy.dashboard._chain import ChainCheck, ChainStatus
from proxy.dashboard._render import html
from proxy.users import InvalidCredentials, UserStore
from tests.audit.conftest import ORIGIN, make_record
from tests.dashboard.conftest import CSRF, PASSWORD, dashboard_client, sign_in
from tests.evidence.conftest import Traffic
from tests.pg import PgCluster, postgresql  # noqa: F401  (session fixture)

# Its own client address: the failed-login limit that test_security trips is per address.
_ADDRESS = "127.0.0.6"


def _client(traffic: Traffic) -> httpx.Client:
    return dashboard_client(traffic.gateway.url, _ADDRESS)


def _sign_in(traffic: Traffic, user: str) -> httpx.Client:
    return sign_in(traffic.gateway.url, user, _ADDRESS)


def _multipart(fields: dict[str, bytes], part_headers: bytes = b"") -> dict[str, Any]:
    body = b"".join(b"--zz\r\nContent-Disposition: form-data; name=\"" + name.encode() + b"\"\r\n"
                    + part_headers + b"\r\n" + value + b"\r\n" for name, value in fields.items())
    return {"content": body + b"--zz--\r\n",
            "headers": {"content-type": "multipart/form-data; boundary=zz"}}


def test_multipart_forms_are_refused_unread(traffic: Traffic, accounts: Any) -> None:
    """The dashboard's forms are URL-encoded: a multipart body, which would be spooled to a
    temporary file past 1 MiB before any token check, is a 415; a larger form a 413."""
    anonymous = _client(traffic)
    token = CSRF.search(anonymous.get("/dashboard/login").text)
    assert token is not None
    fields = {"csrf": token.group(1).encode(), "username": b"admin1", "password": PASSWORD.encode()}
    response = anonymous.post("/dashboard/login", **_multipart(fields))
    assert response.status_code == 415, response.text[:200]
    large = _multipart({"csrf": b"x", "upload": b"CANARY" * 400_000})  # 2.4 MB
    assert anonymous.post("/dashboard/login", **large).status_code in (413, 415)
    stuffed = anonymous.post("/dashboard/login", data={"csrf": "x", "username": "u" * 70_000})
    assert stuffed.status_code == 413, stuffed.text[:200]
    auditor = _sign_in(traffic, "admin1")
    for path in ("/dashboard/logout", "/dashboard/export"):
        response = auditor.post(path, **_multipart({"csrf": b"\xff"}))
        assert response.status_code == 415, (path, response.text[:200])
        undecodable = auditor.post(path, content=b"csrf=%FF%FE&x=\xff",
                                   headers={"content-type": "application/x-www-form-urlencoded"})
        assert undecodable.status_code in (400, 403), (path, undecodable.text[:200])
    assert auditor.get("/dashboard/").status_code == 200  # still signed in


def test_a_sign_in_form_shown_after_its_cookie_expired_works_when_sent_again(
        traffic: Traffic, accounts: Any) -> None:
    client = _client(traffic)  # no pre-session cookie: it expired, or was never set
    expired = client.post("/dashboard/login", data={"csrf": "stale", "username": "admin1",
                                                    "password": PASSWORD})
    assert expired.status_code == 403 and "The form expired" in expired.text
    assert client.cookies.get("sg_login")
    token = CSRF.search(expired.text)
    assert token is not None and token.group(1)
    again = client.post("/dashboard/login", data={"csrf": token.group(1), "username": "admin1",
                                                  "password": PASSWORD})
    assert again.status_code == 303 and again.headers["location"] == "/dashboard"


@pytest.mark.parametrize(("proto", "secure"), [
    ("https", True), ("https, http", True), ("HTTPS", True), ("http", False), ("http, https", False),
])  # fmt: skip
def test_cookies_are_secure_when_the_client_used_https(traffic: Traffic, proto: str,
                                                       secure: bool) -> None:
    """Behind a chain of proxies X-Forwarded-Proto lists every hop's scheme, the client's first:
    that one decides the Secure flag."""
    form = _client(traffic).get("/dashboard/login", headers={"X-Forwarded-Proto": proto})
    assert form.status_code == 200
    assert ("secure" in form.headers["set-cookie"].lower()) is secure


@pytest.mark.parametrize("host", ["x:abc", "x:99999999", "[::1"])
def test_a_host_header_that_is_no_address_is_not_a_500(traffic: Traffic, host: str) -> None:
    """Setting the sign-in cookies reads the scheme from the connection, never by parsing the
    Host header (a port that is not a number made that raise)."""
    form = _client(traffic).get("/dashboard/login", headers={"Host": host})
    assert form.status_code < 500, form.text


def test_html_pages_name_their_charset_once(traffic: Traffic, accounts: Any) -> None:
    client = _sign_in(traffic, "admin1")
    for path in ("/dashboard/login", "/dashboard/", "/dashboard/records?page=0"):
        assert client.get(path).headers["content-type"] == "text/html; charset=utf-8", path


def _user_names_no_account_can_have(url: str) -> None:
    store = UserStore(url)
    try:
        store.create("alice", "admin", PASSWORD)
        for name in ("a\x00b", "alice\x00", "Alice", "alice\n", "\udcff", "x" * 65):
            with pytest.raises(InvalidCredentials):
                store.authenticate(name, PASSWORD)
        assert store.authenticate("alice", PASSWORD).username == "alice"
    finally:
        store.close()


def test_user_names_no_account_can_have_are_invalid_credentials(tmp_path: Path) -> None:
    _user_names_no_account_can_have(f"sqlite:///{tmp_path / 'sealgate.db'}")


def test_a_nul_in_a_user_name_is_invalid_credentials_on_postgresql(
        postgresql: PgCluster) -> None:  # noqa: F811
    """PostgreSQL refuses a NUL in a query parameter; that was a state_unavailable (a 503)."""
    _user_names_no_account_can_have(postgresql.new_database())


def _forge_root(log: AuditLog, key: Ed25519PrivateKey, size: int, root: bytes) -> None:
    """Replace the stored checkpoint of ``size`` with one properly signed over ``root``."""
    forged = SignedCheckpoint.sign(ORIGIN, size, root, key)
    with log.store.engine.begin() as conn:
        conn.execute(text("UPDATE audit_checkpoints SET root_hash = :r, note = :n WHERE size = :s"),
                     {"r": forged.root_hash, "n": forged.note, "s": size})


async def _log_with_checkpoints(folder: Path, records: int) -> tuple[AuditLog, Ed25519PrivateKey]:
    key = Ed25519PrivateKey.generate()
    log = await AuditLog.open(f"sqlite:///{folder / 'audit.db'}?synchronous=normal", key, ORIGIN,
                              checkpoint_every_n=1)
    for i in range(records):  # one checkpoint per record, and none published after
        await log.append(make_record(i))
        await log.publish()
    return log, key


def test_health_page_does_not_claim_unchecked_proofs_verify(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A view checks a bounded number of consistency proofs; the rest are not yet known to
    verify, and a forged checkpoint among them must not read as "all verify"."""
    monkeypatch.setattr(_pages, "_MAX_PAIRS_PER_VIEW", 2)
    monkeypatch.setattr(_pages, "_CATCH_UP", False)

    async def views() -> list[str]:
        log, key = await _log_with_checkpoints(tmp_path, 12)
        try:
            size = log.store.checkpoints(log.log_id)[-1][0]
            _forge_root(log, key, size, b"\x01" * 32)
            svc = SimpleNamespace(audit=log, chain=ChainCheck())
            pages = []
            for _ in range(20):
                data = await _pages.health_page(svc)  # type: ignore[arg-type]
                assert data["pairs"] > 2
                pages.append(str(html("health.html", viewer=None, active="health", **data).content))
            return pages
        finally:
            await log.close()

    pages = asyncio.run(views())
    assert "All " not in pages[0] and "checked so far" in pages[0]
    assert '<span class="bad">✗' in pages[-1] and "All " not in pages[-1]


def test_checkpoint_columns_that_differ_from_their_signed_notes_are_problems(tmp_path: Path) -> None:
    """The signed note says what the log committed to. A store whose ``root_hash`` columns
    were rewritten (with its tree, the old notes kept) must not read as a healthy chain:
    consistency is checked between signed roots, and a column that differs is a problem."""

    async def check() -> ChainStatus:
        log, _key = await _log_with_checkpoints(tmp_path, 6)
        try:
            sizes = [size for size, _root, _note in log.store.checkpoints(log.log_id)]
            with log.store.engine.begin() as conn:
                conn.execute(text("UPDATE audit_checkpoints SET root_hash = :r WHERE size = :s"),
                             {"r": b"\x02" * 32, "s": sizes[2]})
            return await asyncio.to_thread(ChainCheck()._advance, log, 100, 10.0)
        finally:
            await log.close()

    status = asyncio.run(check())
    assert status.checked == 6
    assert any("differ from its signed note" in p for p in status.problems), status.problems


def test_checkpoint_signatures_are_checked_off_the_event_loop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first view checks every checkpoint's signature: on the event loop, that stalls
    every request the gateway serves for as long."""
    threads: list[threading.Thread] = []
    advance = ChainCheck._advance

    def spy(*args: Any) -> ChainStatus:
        threads.append(threading.current_thread())
        return advance(*args)

    monkeypatch.setattr(ChainCheck, "_advance", spy)

    async def view() -> dict[str, Any]:
        log, _ = await _log_with_checkpoints(tmp_path, 3)
        try:
            svc = SimpleNamespace(audit=log, chain=ChainCheck())
            return await _pages.health_page(svc)  # type: ignore[arg-type]
        finally:
            await log.close()

    data = asyncio.run(view())
    assert data["problems"] == [] and data["unchecked"] == 0
    assert threads and threading.main_thread() not in threads


def test_health_views_resume_the_chain_check_and_read_a_bounded_number_of_checkpoints(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A log publishes up to a checkpoint a second: a view must not read them all, nor keep an
    entry per checkpoint. Each view checks a few more, resuming where the last one stopped."""
    monkeypatch.setattr(_pages, "_MAX_PAIRS_PER_VIEW", 4)
    monkeypatch.setattr(_pages, "_MAX_SECONDS_PER_VIEW", 600.0)
    monkeypatch.setattr(_pages, "_CATCH_UP", False)
    monkeypatch.setattr(_chain, "MAX_PROBLEMS", 2)
    read: list[int] = []

    async def views() -> tuple[list[dict[str, Any]], ChainCheck, int]:
        log, _ = await _log_with_checkpoints(tmp_path, 30)
        try:
            sizes = [s for s, _, _ in log.store.checkpoints(log.log_id) if s > 0]
            # forge the signatures of three checkpoints: problems past the listed two are counted
            for size in sizes[5:8]:
                forged = SignedCheckpoint.sign(ORIGIN, size, b"\x02" * 32,
                                               Ed25519PrivateKey.generate())
                with log.store.engine.begin() as conn:
                    conn.execute(text("UPDATE audit_checkpoints SET note = :n WHERE size = :s"),
                                 {"n": forged.note, "s": size})
            checkpoints = log.store.checkpoints

            def counted(*args: Any, **kwargs: Any) -> list[tuple[int, bytes, str]]:
                rows = checkpoints(*args, **kwargs)
                read.append(len(rows))
                return rows

            monkeypatch.setattr(log.store, "checkpoints", counted)
            svc = SimpleNamespace(audit=log, chain=ChainCheck())
            return [await _pages.health_page(svc) for _ in range(12)], svc.chain, len(sizes)
        finally:
            await log.close()

    pages, chain, total = asyncio.run(views())
    assert total == 30 and max(read) <= 10  # 4 checked and the 10 latest listed, per view
    # (the writer may publish one more checkpoint meanwhile)
    assert [p["checkpoints"] - p["unchecked"] for p in pages[:2]] == [4, 8]
    last = pages[-1]
    assert last["unchecked"] == 0 and chain.checked == last["checkpoints"] >= total
    assert len(last["problems"]) == 2 and last["more_problems"] == 1
    assert all("signature does not verify" in p for p in last["problems"])
    page = str(html("health.html", viewer=None, active="health", **last).content)
    assert "✗ 3 problem(s)" in page and "and 1 more" in page


def test_a_health_view_checks_for_a_bounded_time(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Catching up a large log takes many views; each stays fast (and checks at least one)."""
    monkeypatch.setattr(_pages, "_MAX_SECONDS_PER_VIEW", 0.0)
    monkeypatch.setattr(_pages, "_CATCH_UP", False)

    async def views() -> list[dict[str, Any]]:
        log, _ = await _log_with_checkpoints(tmp_path, 8)
        try:
            svc = SimpleNamespace(audit=log, chain=ChainCheck())
            return [await _pages.health_page(svc) for _ in range(3)]
        finally:
            await log.close()

    pages = asyncio.run(views())
    assert [p["checkpoints"] - p["unchecked"] for p in pages] == [1, 2, 3]
    assert pages[-1]["problems"] == [] and pages[-1]["unchecked"] > 0


def test_the_chain_check_goes_on_in_the_background_after_a_view(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One view is enough: the rest of the chain is checked without more views, and a forged
    checkpoint found meanwhile shows on the next one."""
    monkeypatch.setattr(_pages, "_MAX_PAIRS_PER_VIEW", 3)

    async def views() -> tuple[dict[str, Any], dict[str, Any]]:
        log, key = await _log_with_checkpoints(tmp_path, 20)
        try:
            size = log.store.checkpoints(log.log_id)[-2][0]
            _forge_root(log, key, size, b"\x03" * 32)
            svc = SimpleNamespace(audit=log, chain=ChainCheck())
            first = await _pages.health_page(svc)  # type: ignore[arg-type]
            task = svc.chain.backlog.task
            assert task is not None
            await asyncio.wait_for(task, 30)
            second = await _pages.health_page(svc)  # type: ignore[arg-type]
            assert svc.chain.backlog.task is task  # caught up: no new catch-up started
            await svc.chain.aclose()
            return first, second
        finally:
            await log.close()

    first, second = asyncio.run(views())
    assert first["unchecked"] == 20 - 3 and first["problems"] == []
    assert second["unchecked"] == 0
    assert len(second["problems"]) == 2  # the forged root: both proofs that touch it fail


def test_the_record_index_catches_up_in_slices_and_the_pages_say_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Folding a large log takes minutes after a restart: a view folds one slice, the rest is
    folded in the background, and the overview says its counts are not complete meanwhile."""
    from proxy.config import Settings
    from proxy.dashboard import _index, _service
    from proxy.dashboard._service import DashboardService
    from proxy.dashboard._views import overview
    from proxy.tenants import TenantStore

    monkeypatch.setattr(_index, "_CHUNK", 10)
    monkeypatch.setattr(_service, "SLICE_S", 0.0)  # one chunk per slice

    async def run() -> tuple[list[int], int, list[int]]:
        log, _ = await _log_with_checkpoints(tmp_path, 45)
        settings = Settings(data_dir=tmp_path / "state")
        tenants = TenantStore(settings.tenants_url)
        svc = DashboardService(settings, tenants, lambda: log, None, Ed25519PrivateKey.generate())
        try:
            index = await svc.index()
            first = [overview(index, None, {})["total_records"], await svc.index_behind(index)]
            page = str(html("overview.html", viewer=None, active="overview",
                            index_behind=first[1], **overview(index, None, {})).content)
            assert 'id="catching-up"' in page, first
            task = svc._index_backlog.task
            assert task is not None
            await asyncio.wait_for(task, 30)
            index = await svc.index()
            last = [overview(index, None, {})["total_records"], await svc.index_behind(index)]
            return first, index.next_leaf, last
        finally:
            await svc.aclose()
            tenants.close()
            await log.close()

    first, next_leaf, last = asyncio.run(run())
    # one chunk folded by the view; the background goes on while the page is rendered
    assert first[0] == 10 and 0 < first[1] <= 35
    assert last == [45, 0] and next_leaf == 45


def test_an_export_from_a_store_with_a_broken_tree_is_a_page_not_a_500(tmp_path: Path) -> None:
    """The export proves each record it reads from the stored tree: a tree node gone is the
    store's fault, said on the export page (503), never an internal error."""
    from tests.evidence.conftest import CONFIG, drive
    from tests.server import start_fast_upstream, start_gateway

    upstream = start_fast_upstream(tmp_path)
    gw = start_gateway(tmp_path, CONFIG.format(fast=upstream.port))
    try:
        drive(gw)
        store = UserStore(f"sqlite:///{gw.data_dir / 'sealgate.db'}")
        store.create("exporter", "auditor", PASSWORD, None)
        store.close()
        with sqlite3.connect(gw.data_dir / "audit.db") as db:  # the stored tree loses a node
            db.execute("DELETE FROM audit_nodes WHERE rowid = (SELECT min(rowid) FROM audit_nodes)")
        auditor = sign_in(gw.url, "exporter", "127.0.0.7")
        token = CSRF.search(auditor.get("/dashboard/export").text)
        assert token is not None
        response = auditor.post("/dashboard/export", data={
            "csrf": token.group(1), "from": "2020-01-01", "to": "2099-01-01"})
        assert response.status_code == 503, response.text[:300]
        assert "could not be read for this export" in response.text
    finally:
        gw.stop()
        upstream.stop()
