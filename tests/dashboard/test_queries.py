"""Out-of-range or malformed query and form values answer a 400 page that says what is wrong,
never a 500 (DESIGN invariant 5), over plain HTTP against the real gateway."""

from __future__ import annotations

import re
from datetime import timedelta, timezone
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.evidence import verify_bundle
from tests.dashboard.conftest import CSRF, sign_in
from tests.evidence.conftest import Traffic

BAD_DATE = "must be a date (YYYY-MM-DD) or ISO 8601 time from 1970-01-01 to 9998-12-31"


def _client(traffic: Traffic, user: str) -> httpx.Client:
    return sign_in(traffic.gateway.url, user, "127.0.0.4")


@pytest.fixture(scope="module")
def admin(traffic: Traffic, accounts: Any) -> httpx.Client:
    return _client(traffic, "admin1")


@pytest.mark.parametrize(("query", "message"), [
    ("page=100000000000000000000", "page must be a whole number from 1 to 1,000,000,000."),
    ("page=0", "page must be a whole number from 1 to 1,000,000,000."),
    ("page=-1", "page must be a whole number from 1 to 1,000,000,000."),
    ("page=abc", "page must be a whole number from 1 to 1,000,000,000."),
    ("to=9999-12-31", f"to {BAD_DATE}."),
    ("from=0001-01-01T00:00:00%2B14:00", f"from {BAD_DATE}."),
    ("from=yesterday", f"from {BAD_DATE}."),
    ("from=2024-02-01&to=2024-01-01", "from must be before to."),
    ("decision=maybe", "decision must be one of: allow, deny."),
    ("kind=%00", "kind must be one of: intent, completion, denial."),
    ("model=a%00b", "model must be at most 128 printable characters."),
    ("tenant=" + "x" * 200, "tenant must be at most 128 printable characters."),
])
def test_bad_record_filters_get_a_400_page(admin: httpx.Client, query: str, message: str) -> None:
    response = admin.get(f"/dashboard/records?{query}")
    assert response.status_code == 400, response.text[:200]
    assert response.headers["content-type"].startswith("text/html")
    assert f"<h1>{message}</h1>" in response.text.replace("&#39;", "'")


def test_in_range_filters_still_work(admin: httpx.Client) -> None:
    everything = admin.get("/dashboard/records").text
    total = re.search(r'<span id="total">(\d+)</span>', everything)
    assert total is not None and int(total.group(1)) > 0
    for query in ("page=1", "page=1000000000", "from=1970-01-01&to=9998-12-31",
                  "to=9998-12-31T23:59:59%2B14:00", "decision=&kind=&model=&from=&to=&page="):
        response = admin.get(f"/dashboard/records?{query}")
        assert response.status_code == 200, query
        assert f'<span id="total">{total.group(1)}</span>' in response.text, query


def test_export_window_out_of_range_gets_a_400_page(traffic: Traffic, accounts: Any) -> None:
    auditor = _client(traffic, "auditor1")
    token = CSRF.search(auditor.get("/dashboard/export").text)
    assert token is not None
    for window, message in ((("2024-01-01", "9999-12-31"), f"to {BAD_DATE}."),
                            (("0001-01-01", "2024-01-01"), f"from {BAD_DATE}."),
                            (("", "2024-01-01"), "from and to are both required."),
                            (("2024-02-01", "2024-01-01"), "from must be before to.")):
        response = auditor.post("/dashboard/export", data={
            "csrf": token.group(1), "from": window[0], "to": window[1]})
        assert response.status_code == 400, window
        assert f"<h1>{message}</h1>" in response.text


@pytest.mark.parametrize(("window", "name"), [
    (("2020-01-01", "2020-01-31"), "sealgate-evidence-2020-01-01-2020-01-31.zip"),  # inclusive
    (("2020-01-01T00:00:00Z", "2020-01-01T12:00:00Z"), "sealgate-evidence-2020-01-01-2020-01-01.zip"),
    (("2020-01-01T00:00:00Z", "2020-01-02T00:00:00Z"), "sealgate-evidence-2020-01-01-2020-01-01.zip"),
])
def test_an_export_is_named_by_the_days_it_covers(traffic: Traffic, accounts: Any,
                                                  window: tuple[str, str], name: str) -> None:
    auditor = _client(traffic, "auditor1")
    token = CSRF.search(auditor.get("/dashboard/export").text)
    assert token is not None
    response = auditor.post("/dashboard/export", data={
        "csrf": token.group(1), "from": window[0], "to": window[1]})
    assert response.status_code == 200, response.text
    assert response.headers["content-disposition"] == f'attachment; filename="{name}"'
    # Streamed from a spooled file, with its length known up front.
    assert int(response.headers["content-length"]) == len(response.content)
    assert verify_bundle(response.content, allow_simulated=True).ok


def test_malformed_record_ids_are_not_found(admin: httpx.Client) -> None:
    for record_id in ("x", "a%00b", "0" * 31, "0" * 32, "G" * 32, "%E2%80%AE" * 12):
        response = admin.get(f"/dashboard/records/{record_id}")
        assert response.status_code == 404 and "No such record" in response.text


_text = st.text(st.characters(codec="utf-8"), max_size=80)
_offsets = st.timedeltas(min_value=-timedelta(hours=23, minutes=59),
                         max_value=timedelta(hours=23, minutes=59)).map(timezone)
_iso = st.one_of(
    st.dates().map(str),
    st.datetimes(timezones=st.none() | _offsets).map(lambda d: d.isoformat()),
)
_numbers = st.one_of(st.integers(), st.integers(min_value=10**15)).map(str)
_value = st.one_of(_text, _iso, _numbers, st.sampled_from(
    ["", "allow", "deny", "intent", "completion", "denial", "acme", "globex", "9999-12-31",
     "0001-01-01", "fast-echo"]))
_query = st.dictionaries(
    st.sampled_from(["page", "from", "to", "tenant", "decision", "kind", "model", "compare"]),
    _value, max_size=6)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(query=_query, path=st.sampled_from(["/dashboard/records", "/dashboard/policies",
                                           "/dashboard/"]))
def test_no_query_makes_a_server_error(admin: httpx.Client, query: dict[str, str],
                                       path: str) -> None:
    response = admin.get(path, params=query)
    assert response.status_code in (200, 400, 403), (response.status_code, query)
    assert response.headers["content-type"].startswith("text/html")


def test_a_record_page_shows_values_for_people(traffic: Traffic, admin: httpx.Client) -> None:
    """Commitments one per line, lists comma-separated or "none", JSON's true/false: not a
    Python dict, list or bool printed as they are."""
    from audit import Receipt

    answer = httpx.post(f"{traffic.gateway.url}/v1/chat/completions", timeout=30,
                        json={"model": "fast-echo", "messages": [{"role": "user", "content": "x"}]},
                        headers={"Authorization": f"Bearer {next(iter(traffic.keys.values()))}"})
    assert answer.status_code == 200
    record_id = Receipt.parse(answer.headers["sealgate-receipt"]).record_id
    page = admin.get(f"/dashboard/records/{record_id}").text
    assert re.search(r"<th>commitments</th><td><code>request: hmac-sha256:[0-9a-f]{64}</code>", page)
    assert "<th>rule_ids</th><td><code>none</code>" in page
    assert "<th>stream</th><td><code>false</code>" in page
    assert "{&#39;" not in page and "[]" not in page and "False" not in page
