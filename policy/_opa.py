"""The OPA engine: an OPA server (e.g. the Helm chart's sidecar) over its Data API.

OPA Data API: ``POST /v1/data/sealgate/authz/decision`` with ``{"input": ...}`` answers
``{"result": <decision document>}``; a missing ``result`` means the rule is undefined. The
server must run the same bundle directory as ``bundle`` (the Helm chart mounts it); the
decision reports that bundle's digest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from opa_client import AsyncOpaClient

from ._bundle import PolicyBundle, load_bundle
from ._decision import Decision
from ._engine import PACKAGE, RULE, PolicyEngine, as_document, fail_closed
from ._errors import PolicyError, PolicyUnavailable
from ._input import PolicyInput
from ._regopy import compile_bundle

__all__ = ["OPAEngine"]


def _parse_url(url: str) -> tuple[str, int, bool]:
    """(host, port, https) of an OPA server URL, or ``PolicyError`` saying what is wrong."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # an unbracketed IPv6 address, a port that is not a number
        raise PolicyError("OPA url must be http(s)://host[:port]") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PolicyError("OPA url must be http(s)://host[:port]")
    if parts.path not in ("", "/"):
        raise PolicyError("OPA url must not have a path; the Data API lives at /v1/data")
    https = parts.scheme == "https"
    return parts.hostname, port or (443 if https else 8181), https


def _client(url: str, timeout_s: float, token: str | None) -> AsyncOpaClient:
    host, port, https = _parse_url(url)
    return AsyncOpaClient(
        host=host,
        port=port,
        ssl=https,
        token=token,
        retries=0,  # a retry would only spend the deadline; fail closed instead
        timeout=timeout_s,
    )


def _compiles(bundle: PolicyBundle) -> PolicyBundle:
    """``bundle``, once it compiles (``PolicyBundleError`` otherwise). The OPA server loads
    the same files on its own; a bundle it cannot run must not lend its digest to decisions
    and the identity document while the server goes on with the old policy. Policies keep to
    what both engines evaluate, so the embedded compiler is the check."""
    compile_bundle(bundle)
    return bundle


class OPAEngine(PolicyEngine):
    """Decides through an OPA server; a timeout or any failure raises ``PolicyUnavailable``."""

    def __init__(
        self,
        url: str,
        bundle: PolicyBundle | None = None,
        *,
        timeout_s: float = 0.25,
        token: str | None = None,
    ) -> None:
        self._bundle = _compiles(bundle if bundle is not None else load_bundle())
        self._timeout_s = timeout_s
        self._client = _client(url, timeout_s, token)
        self._opened = False
        self._closed = False

    @staticmethod
    def check_url(url: str) -> None:
        """``PolicyError`` unless ``url`` is an OPA server's ``http(s)://host[:port]``."""
        _parse_url(url)

    @property
    def bundle(self) -> PolicyBundle:
        return self._bundle

    def reload(self, bundle: PolicyBundle) -> None:
        self._bundle = _compiles(bundle)

    async def decide(self, input: PolicyInput | Mapping[str, Any]) -> Decision:
        if self._closed:  # reopening would also leave a session that nothing closes
            raise PolicyUnavailable("the policy engine is closed")
        doc, bundle = as_document(input), self._bundle
        try:
            answer = await asyncio.wait_for(self._query(doc), self._timeout_s)
        except TimeoutError as exc:
            raise PolicyUnavailable("the OPA server did not answer in time") from exc
        if not isinstance(answer, Mapping) or "result" not in answer:
            raise PolicyUnavailable("the OPA server returned no decision")
        return Decision.from_document(answer["result"], bundle.digest)

    async def _query(self, doc: dict[str, Any]) -> object:
        with fail_closed("OPA query"):
            if not self._opened:
                await self._client.__aenter__()
                self._opened = True
            return await self._client.query_rule(doc, PACKAGE, RULE)

    async def aclose(self) -> None:
        self._closed = True
        if self._opened:
            self._opened = False
            await self._client.close_connection()
