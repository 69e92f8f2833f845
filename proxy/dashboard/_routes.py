"""Dashboard routes under ``/dashboard``: thin handlers over the service and page modules."""

from __future__ import annotations

import asyncio
import secrets
import tempfile
from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from litestar import Request, Response, Router, get, post
from litestar.datastructures import Cookie, FormMultiDict
from litestar.exceptions import ClientException, HTTPException
from litestar.params import Parameter

from audit import AuditError
from proxy.evidence import EvidenceError, ExportOptions, write_bundle
from proxy.streams import closing_stream
from proxy.tenants import Tenant
from proxy.users import InvalidCredentials

from ._pages import enclave_page, health_page, policies_page, record_page
from ._query import DECISIONS, KINDS, RECORD_ID, BadQuery, page_number, text_value, time_us, when
from ._render import HEADERS, html
from ._service import DashboardService, Viewer
from ._views import PAGE_SIZE, RecordFilter, fmt_us, overview, query_records

__all__ = ["dashboard_router"]

_FORM_TYPE = "application/x-www-form-urlencoded"
_MAX_FORM_BYTES = 64 << 10  # the sign-in and export forms hold a few short fields

SESSION, PRE = "sg_session", "sg_login"
Req = Request[Any, Any, Any]


class LoginRequired(Exception):
    """No valid session: the handler below redirects to the login page."""


def _redirect(location: str, cookies: list[Cookie] | None = None) -> Response[str]:
    return Response("", status_code=303, headers={"Location": location, **HEADERS},
                    cookies=cookies or [])


def _login_required(_request: Req, _exc: Exception) -> Response[str]:
    return _redirect("/dashboard/login")


def _secure(request: Req) -> bool:
    """Served over https, here or at the proxy in front: a chain of proxies lists each hop's
    scheme in X-Forwarded-Proto, the client's first."""
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    # The scope's scheme, not request.url's: building the URL parses the Host header, and a
    # port that is not a number would raise.
    return request.scope.get("scheme") == "https" or forwarded == "https"


def _cookie(request: Req, key: str, value: str, max_age: int | None = None) -> Cookie:
    return Cookie(key=key, value=value, path="/dashboard", httponly=True, samesite="strict",
                  secure=_secure(request), max_age=max_age)


async def _viewer(request: Req, dashboard: DashboardService) -> Viewer:
    viewer = await dashboard.viewer(request.cookies.get(SESSION))
    if viewer is None:
        raise LoginRequired
    return viewer


async def _form(request: Req) -> FormMultiDict:
    """The posted form: URL-encoded, as the dashboard's own forms send it, and at most
    ``_MAX_FORM_BYTES`` (413 past that). A multipart body is refused unread (415): its parts
    would be spooled to a temporary file past 1 MiB, before any session or token check, and
    no dashboard form takes a file. Undecodable bytes are the client's error (a 400)."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != _FORM_TYPE:
        raise HTTPException(status_code=415, detail=f"forms are sent as {_FORM_TYPE}")
    try:
        return await request.form()
    except (UnicodeDecodeError, LookupError) as exc:
        raise ClientException("the form data cannot be decoded") from exc


def _page(template: str, viewer: Viewer, active: str, status: int = 200, **ctx: Any) -> Response[str]:
    return html(template, status, viewer=viewer, active=active, **ctx)


def _login_page(request: Req, dashboard: DashboardService, status: int = 200,
                error: str | None = None) -> Response[str]:
    """The sign-in form with a token for the pre-session cookie, which it (re)sets: a form
    shown after that cookie expired must work when submitted again."""
    pre = request.cookies.get(PRE) or secrets.token_hex(16)
    response = html("login.html", status, csrf=dashboard.sessions.csrf(pre, "login"), error=error)
    response.set_cookie(_cookie(request, PRE, pre, 3600))
    return response


@get("/login", include_in_schema=False)
async def login_form(request: Req, dashboard: DashboardService) -> Response[str]:
    return _login_page(request, dashboard)


@post("/login", include_in_schema=False, status_code=200)
async def login(request: Req, dashboard: DashboardService) -> Response[str]:
    form = await _form(request)
    pre = request.cookies.get(PRE)
    if not dashboard.sessions.check_csrf(pre, form.get("csrf"), "login"):
        return _login_page(request, dashboard, 403, "The form expired; please try again.")
    name = str(form.get("username", ""))[:64]
    keys = (f"ip:{request.client.host if request.client else '-'}", f"user:{name}")
    stamp = dashboard.limiter.attempt(*keys)  # counted before the check: no concurrent bypass
    if stamp is None:
        return _login_page(request, dashboard, 429,
                           "Too many failed sign-ins; wait a few minutes and try again.")
    try:
        user = await asyncio.to_thread(dashboard.users.authenticate, name,
                                       str(form.get("password", "")))
    except InvalidCredentials:
        return _login_page(request, dashboard, 401, "Invalid user name or password.")
    dashboard.limiter.succeeded(stamp, *keys)
    cookie = dashboard.sessions.issue(user.id, user.session_generation)
    return _redirect("/dashboard", [_cookie(request, SESSION, cookie)])


@post("/logout", include_in_schema=False, status_code=200)
async def logout(request: Req, dashboard: DashboardService) -> Response[str]:
    viewer = await _viewer(request, dashboard)
    form = await _form(request)
    if not dashboard.sessions.check_csrf(viewer.nonce, form.get("csrf")):
        return _page("error.html", viewer, "", 403, message="Invalid form token.")
    # Clearing the cookie is not enough: a copy of it must stop working too, here and in every
    # process sharing the database (within the account cache's TTL).
    await asyncio.to_thread(dashboard.users.end_sessions, viewer.user.id)
    return _redirect("/dashboard/login", [_cookie(request, SESSION, "", 0)])


@get("/", include_in_schema=False)
async def overview_page(request: Req, dashboard: DashboardService) -> Response[str]:
    viewer = await _viewer(request, dashboard)
    index = await dashboard.index()
    data = overview(index, viewer.scope, await dashboard.tenant_names())
    return _page("overview.html", viewer, "overview", index_behind=await dashboard.index_behind(index),
                 **data)


async def _scoped_tenant(dashboard: DashboardService, viewer: Viewer, name: str | None) -> str | None:
    if not name:
        return viewer.scope
    listed = await asyncio.to_thread(dashboard.tenants.tenants)
    tenants: dict[str, Tenant] = {t.name: t for t in listed}
    found = tenants.get(name)
    # A scoped viewer learns nothing from a name: unknown or another tenant's, the same 403.
    if viewer.scope is not None and (found is None or found.pseudonym != viewer.scope):
        raise PermissionError
    if found is None:
        raise BadQuery("tenant must be one of the known tenants")
    return found.pseudonym


async def _tenant_name(dashboard: DashboardService, pseudonym: str | None) -> str | None:
    """The name of the tenant with ``pseudonym``; ``None`` for none (a tenant-scoped export
    then withholds every tenant's contract file)."""
    if pseudonym is None:
        return None
    listed = await asyncio.to_thread(dashboard.tenants.tenants)
    return next((t.name for t in listed if t.pseudonym == pseudonym), None)


def _record_filter(pseudonym: str | None, params: dict[str, str], page: str | None) -> RecordFilter:
    start, end = when("from", params["from"]), when("to", params["to"], end=True)
    if start is not None and end is not None and end <= start:
        raise BadQuery("from must be before to.")
    return RecordFilter(pseudonym, text_value("decision", params["decision"], DECISIONS),
                        text_value("kind", params["kind"], KINDS),
                        text_value("model", params["model"]),
                        None if start is None else time_us(start),
                        None if end is None else time_us(end), page_number(page))


@get("/records", include_in_schema=False)
async def records_page(
    request: Req, dashboard: DashboardService,
    tenant_name: str | None = Parameter(query="tenant", default=None),
    decision: str | None = None, kind: str | None = None, model: str | None = None,
    start: str | None = Parameter(query="from", default=None),
    end: str | None = Parameter(query="to", default=None), page: str | None = None,
) -> Response[str]:
    viewer = await _viewer(request, dashboard)
    params = {"tenant": tenant_name or "", "decision": decision or "", "kind": kind or "",
              "model": model or "", "from": start or "", "to": end or ""}
    try:
        pseudonym = await _scoped_tenant(dashboard, viewer, text_value("tenant", tenant_name))
        f = _record_filter(pseudonym, params, page)
    except BadQuery as exc:
        return _page("error.html", viewer, "records", 400, message=str(exc))
    except PermissionError:
        return _page("error.html", viewer, "records", 403, message="Not your tenant.")
    log = dashboard.audit
    rows, total = await asyncio.to_thread(query_records, log.store, log.log_id, f)
    names = await dashboard.tenant_names()
    return _page("records.html", viewer, "records", rows=rows, total=total, page=f.page,
                 pages=max(1, -(-total // PAGE_SIZE)), params=params, names=names, fmt=fmt_us,
                 tenants=sorted(names.values()) if viewer.scope is None else [])


@get("/records/{record_id:str}", include_in_schema=False)
async def record_detail(request: Req, dashboard: DashboardService, record_id: str) -> Response[str]:
    viewer = await _viewer(request, dashboard)
    data = await record_page(dashboard, viewer, record_id) if RECORD_ID.fullmatch(record_id) else None
    if data is None:
        return _page("error.html", viewer, "records", 404, message="No such record.")
    return _page("record.html", viewer, "records", names=await dashboard.tenant_names(), **data)


@get("/policies", include_in_schema=False)
async def policies(request: Req, dashboard: DashboardService,
                   compare: str | None = None) -> Response[str]:
    viewer = await _viewer(request, dashboard)
    return _page("policies.html", viewer, "policies",
                 **await policies_page(dashboard, viewer, compare))


@get("/enclave", include_in_schema=False)
async def enclave(request: Req, dashboard: DashboardService) -> Response[str]:
    viewer = await _viewer(request, dashboard)
    return _page("enclave.html", viewer, "enclave", **await enclave_page(dashboard, viewer))


@get("/health", include_in_schema=False)
async def health(request: Req, dashboard: DashboardService) -> Response[str]:
    viewer = await _viewer(request, dashboard)
    return _page("health.html", viewer, "health", **await health_page(dashboard))


@get("/export", include_in_schema=False)
async def export_form(request: Req, dashboard: DashboardService) -> Response[str]:
    viewer = await _viewer(request, dashboard)
    if not viewer.can_export:
        return _page("error.html", viewer, "export", 403, message="Auditors and admins only.")
    today = datetime.now(UTC).date()
    return _page("export.html", viewer, "export", start=(today - timedelta(days=30)).isoformat(),
                 end=today.isoformat(), tenants=sorted((await dashboard.tenant_names()).values()),
                 error=None)


def _window(form: Any) -> tuple[datetime, datetime]:
    start = when("from", str(form.get("from") or ""))
    end = when("to", str(form.get("to") or ""), end=True)
    if start is None or end is None:
        raise BadQuery("from and to are both required.")
    if end <= start:
        raise BadQuery("from must be before to.")
    return start, end


def _export_problem(exc: Exception) -> str:
    if isinstance(exc, EvidenceError):
        return exc.detail
    return str(exc) if isinstance(exc, BadQuery) else "Invalid window or tenant."


@post("/export", include_in_schema=False, status_code=200)
async def export(request: Req, dashboard: DashboardService) -> Response[Any]:
    viewer = await _viewer(request, dashboard)
    form = await _form(request)
    if not viewer.can_export:
        return _page("error.html", viewer, "export", 403, message="Auditors and admins only.")
    if not dashboard.sessions.check_csrf(viewer.nonce, form.get("csrf")):
        return _page("error.html", viewer, "export", 403, message="Invalid form token.")
    try:
        start, end = _window(form)
        tenant = await _scoped_tenant(dashboard, viewer, text_value("tenant", str(form.get("tenant") or "")))
        options = ExportOptions(start, end, tenant, None, await dashboard.identity.document(),
                                dashboard.bundle(), dashboard.settings.log_origin,
                                await _tenant_name(dashboard, tenant))
        log = dashboard.audit
        # Memory up to _SPOOL, a temporary file (unlinked at once) past it: a window can hold
        # more records than memory. Bundles carry no content, only records and proofs.
        bundle = tempfile.SpooledTemporaryFile(max_size=_SPOOL)
        try:
            await asyncio.to_thread(write_bundle, log.store, dashboard.data_dir,
                                    dashboard.log_key, options, bundle)
            size = bundle.tell()
            bundle.seek(0)
            body = _sent(bundle)
            first = await anext(body)
        except BaseException:
            bundle.close()
            raise
    except (ValueError, PermissionError, EvidenceError) as exc:
        return _page("error.html", viewer, "export", 400, message=_export_problem(exc))
    except AuditError as exc:  # the store failed or holds a broken tree: the export cannot be made
        return _page("error.html", viewer, "export", exc.status if exc.status >= 500 else 400,
                     message=f"The audit store could not be read for this export ({exc.code}); "
                             "run `sealgate audit verify`.")
    # Named by the first and last day it covers (the window ends just before ``end``).
    name = f"sealgate-evidence-{start.date()}-{(end - timedelta(microseconds=1)).date()}.zip"
    return closing_stream(body, first=first, media_type="application/zip", headers={
        **HEADERS, "Content-Disposition": f'attachment; filename="{name}"',
        "Content-Length": str(size)})


_SPOOL = 8 << 20
_PIECE = 1 << 20


async def _sent(bundle: IO[bytes]) -> AsyncGenerator[bytes, None]:
    """The bundle's bytes a piece at a time; the file is closed with the response."""
    try:
        while piece := await asyncio.to_thread(bundle.read, _PIECE):
            yield piece
    finally:
        bundle.close()


dashboard_router = Router(
    path="/dashboard",
    request_max_body_size=_MAX_FORM_BYTES,
    route_handlers=[login_form, login, logout, overview_page, records_page, record_detail,
                    policies, enclave, health, export_form, export],
    exception_handlers={LoginRequired: _login_required},
    include_in_schema=False,
)
