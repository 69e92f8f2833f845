"""``report.html``: the printable human report of a bundle (no JavaScript, no external assets)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jinja2

from ._controls import CONTROLS

__all__ = ["render_report"]

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("proxy.evidence", "templates"),
    autoescape=True, undefined=jinja2.StrictUndefined)


def render_report(context: Mapping[str, Any], identities: Sequence[Mapping[str, Any]],
                  policies: Sequence[Mapping[str, Any]],
                  checkpoints: Sequence[Mapping[str, Any]]) -> bytes:
    template = _ENV.get_template("report.html")
    return template.render(**context, identities=identities, policies=policies,
                           checkpoints=checkpoints, controls=CONTROLS).encode()
