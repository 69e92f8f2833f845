"""HTML responses: Jinja2 templates (package data) with strict security headers."""

from __future__ import annotations

from typing import Any

import jinja2
from litestar import Response

__all__ = ["html"]

_ENV = jinja2.Environment(loader=jinja2.PackageLoader("proxy.dashboard", "templates"),
                          autoescape=True, undefined=jinja2.StrictUndefined)
HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def html(template: str, status: int = 200, **context: Any) -> Response[str]:
    body = _ENV.get_template(template).render(**context)
    return Response(body, status_code=status, media_type="text/html",
                    headers=dict(HEADERS))
