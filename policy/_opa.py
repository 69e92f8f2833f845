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

__all__ = ["OPAEngine"]


def _client(url: str, timeout_s: float, token: str | None) -> AsyncOpaClient:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PolicyError(f"OPA url must be http(s)://host[:port], not {url!r}")
    if parts.path not in ("", "/"):
        raise PolicyError("OPA url must not have a path; the Data API lives at /v1/data")
    port = parts.port or (443 if parts.scheme == "https" else 8181)
    return AsyncOpaClient(
        host=parts.hostname,
        port=port,
        ssl=parts.scheme == "https",
        token=token,
        retries=0,  # a retry would only spend the deadline; fail closed instead
        timeout=timeout_s,
    )


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
        self._bundle = bundle if bundle is not None else load_bundle()
        self._timeout_s = timeout_s
        self._client = _client(url, timeout_s, token)
        self._opened = False
        self._closed = False

    @property
    def bundle(self) -> PolicyBundle:
        return self._bundle

    def reload(self, bundle: PolicyBundle) -> None:
        self._bundle = bundle

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
