"""Compliance dashboard at ``/dashboard``: server-rendered pages over the (content-free) log.

Roles: ``admin`` (everything), ``reviewer`` (one tenant or all, read-only), ``auditor``
(read-only, evidence export). Sessions are HMAC-signed HttpOnly, SameSite=Strict cookies that
signing out revokes on the server (a per-account session generation); every POST carries a CSRF
token bound to the session; query and form values are bounded (``_query``).
"""

from ._routes import dashboard_router
from ._service import DashboardService

__all__ = ["DashboardService", "dashboard_router"]
