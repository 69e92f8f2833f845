"""The dashboard in a real browser (Debian Chromium via Playwright) against a real gateway."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.evidence import verify_bundle
from tests.conftest import need
from tests.dashboard.conftest import PASSWORD
from tests.evidence.conftest import Traffic
from tests.server import ROOT

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / "test-artifacts" / "screenshots"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    need(CHROMIUM.exists(), "Debian chromium is not installed at /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield instance
        instance.close()


def _login(browser: Any, traffic: Traffic, user: str) -> Any:
    page = browser.new_context(accept_downloads=True).new_page()
    page.goto(f"{traffic.gateway.url}/dashboard/records")
    assert page.url.endswith("/dashboard/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/dashboard$"))
    return page


def _shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


@pytest.mark.parametrize("user", ["admin1", "auditor1", "rev-acme", "rev-globex"])
def test_each_role_sees_its_pages(browser: Any, traffic: Traffic, accounts: Any, user: str) -> None:
    role, tenant = accounts[user]
    page = _login(browser, traffic, user)
    _shot(page, f"overview-{user}")
    nav = page.inner_text("header")
    assert ("Export" in nav) == (role in ("admin", "auditor"))
    requests = int(page.inner_text("#requests"))
    per_tenant = {"acme": 3 + 2, "globex": 2 + 2}
    assert requests == (per_tenant[tenant] if tenant else sum(per_tenant.values()))
    for path in ("policies", "enclave", "health"):
        page.goto(f"{traffic.gateway.url}/dashboard/{path}")
        _shot(page, f"{path}-{user}")
    assert "✓ All" in page.inner_text("#consistency")
    page.goto(f"{traffic.gateway.url}/dashboard/export")
    assert ("Download bundle" in page.content()) == (role != "reviewer")


def test_reviewer_sees_only_own_tenant_and_filters(browser: Any, traffic: Traffic,
                                                   accounts: Any) -> None:
    page = _login(browser, traffic, "rev-acme")
    page.goto(f"{traffic.gateway.url}/dashboard/records")
    tenants = {row.inner_text().split("\t")[2] for row in page.query_selector_all("tr.record")}
    assert tenants == {"acme"}
    assert int(page.inner_text("#total")) == 2 * 3 + 2
    page.select_option("select[name=decision]", "deny")
    page.click("form.filters button")
    page.wait_for_url(re.compile(r".*decision=deny.*"))
    _shot(page, "records-filtered-rev-acme")
    assert int(page.inner_text("#total")) == 2
    assert all("deny" in r.inner_text() for r in page.query_selector_all("tr.record"))


def test_record_detail_shows_verified_proof(browser: Any, traffic: Traffic, accounts: Any) -> None:
    page = _login(browser, traffic, "admin1")
    page.goto(f"{traffic.gateway.url}/dashboard/records?kind=completion")
    page.click("tr.record a")
    page.wait_for_selector("#proof")
    _shot(page, "record-detail")
    assert "✓ Inclusion proof verified" in page.inner_text("#proof")


def _record_ids(page: Any, traffic: Traffic) -> list[str]:
    page.goto(f"{traffic.gateway.url}/dashboard/records")
    links = [a.get_attribute("href") for a in page.query_selector_all("tr.record a")]
    return [str(h).rsplit("/", 1)[1] for h in links]


def test_reviewer_cannot_reach_other_tenant_by_url(browser: Any, traffic: Traffic,
                                                   accounts: Any) -> None:
    globex = _login(browser, traffic, "rev-globex")
    foreign = _record_ids(globex, traffic)[0]
    page = _login(browser, traffic, "rev-acme")
    response = page.goto(f"{traffic.gateway.url}/dashboard/records/{foreign}")
    assert response.status == 404 and "No such record" in page.content()
    response = page.goto(f"{traffic.gateway.url}/dashboard/records?tenant=globex")
    assert response.status == 403
    response = page.goto(f"{traffic.gateway.url}/dashboard/export")
    assert response.status == 403
    _shot(page, "reviewer-denied")


def test_auditor_downloads_a_verifiable_bundle(browser: Any, traffic: Traffic, accounts: Any,
                                               tmp_path: Path) -> None:
    page = _login(browser, traffic, "auditor1")
    page.goto(f"{traffic.gateway.url}/dashboard/export")
    _shot(page, "export-auditor")
    with page.expect_download() as info:
        page.click("#export")
    target = tmp_path / "bundle.zip"
    info.value.save_as(str(target))
    verdict = verify_bundle(target, allow_simulated=True)  # the test gateway is simulated
    assert verdict.ok and verdict.insecure, verdict.table()
