"""The OPA engine: an OPA server (e.g. the Helm chart's sidecar) that holds what this engine
installs on it.

The server loads no policy files of its own. The engine installs its bundle through OPA's REST
API: the data document's top-level keys (``PUT /v1/data/KEY``), the modules of each package as
one policy (``PUT /v1/policies/sealgate/PACKAGE``: OPA compiles what it holds at every write),
and last the revision document
``data.sealgate_revision`` = ``{"digest": "sha256:...", "data_keys": [...]}``. A decision is one
ad-hoc query that reads the decision and the revision in the same evaluation
(``POST /v1/query``), so it is reported under the digest of exactly the bundle that made it;
an answer under any other revision fails closed. Before a bundle is replaced the revision is
cleared, so nothing decided on a half-installed bundle is ever accepted. A server that lost
what was installed (a restart) is installed again on the next decision.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from opa_client import AsyncOpaClient
from opa_client.errors import PolicyNotFoundError as DocumentUndefined

from ._bundle import PolicyBundle, load_bundle
from ._decision import Decision
from ._engine import PACKAGE, RULE, PolicyEngine, as_document, fail_closed
from ._errors import PolicyBundleError, PolicyError, PolicyUnavailable
from ._input import PolicyInput
from ._regopy import compile_bundle

__all__ = ["OPAEngine", "opa_policies"]

REVISION = "sealgate_revision"
"""The data document that names the bundle the server holds."""
POLICY_PREFIX = "sealgate/"
"""Policy ids this engine installs (``sealgate/<package>``); it removes only these."""
QUERY = f"decision = data.{PACKAGE}.{RULE}; revision = data.{REVISION}.digest"


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
        raise PolicyError("OPA url must not have a path; the REST API lives at /v1")
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


_PACKAGE = re.compile(r"\s*package\s+([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*(?:#.*)?")
_IMPORT = re.compile(r"\s*import\s+\S.*")


def _skippable(line: str) -> bool:
    return not line.strip() or line.lstrip().startswith("#")


def opa_policies(bundle: PolicyBundle) -> dict[str, str]:
    """The bundle's modules as OPA policies, one per package: the package line, the imports of
    all its modules (each module's head: the lines before its first rule), then each module's
    rules in path order. OPA compiles what it holds at every write, so modules uploaded one by
    one would each be refused for the rules they use from the others.
    ``PolicyBundleError`` for a module that does not start with a plain package line."""
    packages: dict[str, tuple[list[str], list[str]]] = {}
    for name, source in sorted(bundle.modules.items()):
        lines = source.splitlines()
        i = 0
        while i < len(lines) and _skippable(lines[i]):
            i += 1
        found = _PACKAGE.fullmatch(lines[i]) if i < len(lines) else None
        if found is None:
            raise PolicyBundleError(f"policy module {name} does not start with a package line "
                                    "the opa engine can read (package a.b.c)")
        imports, rules = packages.setdefault(found.group(1), ([], []))
        i += 1
        while i < len(lines) and (_skippable(lines[i]) or _IMPORT.fullmatch(lines[i])):
            if _IMPORT.fullmatch(lines[i]) and lines[i].strip() not in imports:
                imports.append(lines[i].strip())
            i += 1
        rules.append(f"# {name}\n" + "\n".join(lines[i:]))
    return {package: "\n".join([f"package {package}", *imports, "", *rules]) + "\n"
            for package, (imports, rules) in packages.items()}


def _installable(bundle: PolicyBundle) -> PolicyBundle:
    """``bundle``, once it compiles and its data can be installed key by key
    (``PolicyBundleError`` otherwise). Policies keep to what both engines evaluate, so the
    embedded compiler is the check."""
    if REVISION in bundle.data:
        raise PolicyBundleError(f"the data key {REVISION!r} is reserved for the opa engine")
    for key, value in bundle.data.items():
        if not isinstance(value, Mapping):
            raise PolicyBundleError(f"with the opa engine, top-level data {key!r} must be an object")
    # What the server will hold: the modules joined per package, as they are installed.
    compile_bundle(replace(bundle, modules=opa_policies(bundle)))
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
        self._wanted = _installable(bundle if bundle is not None else load_bundle())
        self._bundle = self._wanted
        """The bundle decisions report: the one installed last (or, before that, the wanted one,
        which every decision waits to install)."""
        self._installed: str | None = None
        """The digest the server holds, as far as this engine knows."""
        self._installing: asyncio.Task[None] | None = None
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

    @property
    def wanted_digest(self) -> str:
        return self._wanted.digest

    def reload(self, bundle: PolicyBundle) -> None:
        """Check ``bundle`` now; it is installed on the server by ``settle`` or the next
        decision, and reported from then on."""
        self._wanted = _installable(bundle)

    async def settle(self) -> None:
        """Install the wanted bundle on the server unless it holds it already."""
        if self._closed:
            raise PolicyUnavailable("the policy engine is closed")
        await self._install()

    async def decide(self, input: PolicyInput | Mapping[str, Any]) -> Decision:
        if self._closed:  # reopening would also leave a session that nothing closes
            raise PolicyUnavailable("the policy engine is closed")
        doc = as_document(input)
        try:
            return await asyncio.wait_for(self._decide(doc), self._timeout_s)
        except TimeoutError as exc:
            raise PolicyUnavailable("the OPA server did not answer in time") from exc

    async def _decide(self, doc: dict[str, Any]) -> Decision:
        for _ in range(2):  # once more after installing what the server lost
            if self._installed != self._wanted.digest:
                await self._install()
            bundle = self._bundle
            answer = await self._query(doc)
            if answer is not None:
                revision = answer.get("revision")
            else:  # no result: the revision tells a lost server from an undefined decision
                with fail_closed("OPA query"):
                    revision = (await self._held()).get("digest")
            if revision == bundle.digest:
                if answer is None:  # the bundle leaves the decision undefined for this input
                    raise PolicyUnavailable("the OPA server returned no decision")
                return Decision.from_document(answer.get("decision"), bundle.digest)
            if self._installed == bundle.digest:  # not a bundle change under way: lost state
                self._installed = None
        raise PolicyUnavailable("the OPA server does not hold the installed policy bundle")

    async def _query(self, doc: dict[str, Any]) -> Mapping[str, Any] | None:
        """The query's one result (``decision`` and ``revision``), or None when it has none
        (either is undefined)."""
        with fail_closed("OPA query"):
            await self._open()
            answer = await self._client.ad_hoc_query(QUERY, doc)
        results = answer.get("result") if isinstance(answer, Mapping) else None
        if results == []:
            return None
        if not isinstance(results, list) or len(results) != 1 or not isinstance(results[0], Mapping):
            raise PolicyUnavailable("the OPA server returned no decision")
        return results[0]

    async def _held(self) -> Mapping[str, Any]:
        """The server's revision document; empty when it has none (nothing installed)."""
        try:
            held = (await self._client.get_data(REVISION)).get("result")
        except DocumentUndefined:
            return {}
        return held if isinstance(held, Mapping) else {}

    async def _install(self) -> None:
        """Wait for the installation under way, or start one. It runs on its own task, so a
        decision that gives up waiting does not leave the server half installed."""
        task = self._installing
        if task is None or task.done():
            task = self._installing = asyncio.get_running_loop().create_task(self._install_all())
        await asyncio.shield(task)

    async def _install_all(self) -> None:
        while (bundle := self._wanted).digest != self._installed:
            with fail_closed("installing the policy bundle on the OPA server"):
                await self._open()
                await self._put(bundle)
            self._installed, self._bundle = bundle.digest, bundle

    async def _put(self, bundle: PolicyBundle) -> None:
        client = self._client
        listed = (await self._held()).get("data_keys")
        stale_data = set(listed) if isinstance(listed, list) else set()
        # Cleared first: from here until the end, the server answers under no revision. The
        # cleared document still lists every key written so far or about to be, so an install
        # that stops half way leaves none behind that the next one would not remove.
        self._installed = None
        await client.update_or_create_data(
            {"digest": "", "data_keys": sorted(stale_data | set(bundle.data))}, REVISION)
        for key in stale_data - set(bundle.data) - {REVISION}:
            await client.delete_data(key)
        for key, value in bundle.data.items():
            await client.update_or_create_data(dict(value), key)
        policies = opa_policies(bundle)
        for package, source in policies.items():
            # One policy per package, replaced whole: OPA compiles what it holds at every
            # write, and a package's files use each other's rules. Exactly this text: never
            # the client's rewrite of older Rego syntax.
            await client.update_policy_from_string(source, POLICY_PREFIX + package, rego_compat=False)
        for policy_id in await client.get_policies_list():
            if policy_id.startswith(POLICY_PREFIX) and policy_id[len(POLICY_PREFIX):] not in policies:
                await client.delete_policy(policy_id)
        await client.update_or_create_data(
            {"digest": bundle.digest, "data_keys": sorted(bundle.data)}, REVISION)

    async def _open(self) -> None:
        if not self._opened:
            await self._client.__aenter__()
            self._opened = True

    async def aclose(self) -> None:
        self._closed = True
        if self._installing is not None and not self._installing.done():
            self._installing.cancel()
        if self._opened:
            self._opened = False
            await self._client.close_connection()
