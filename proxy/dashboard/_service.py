"""``DashboardService``: accounts, sessions, the record index and the log, for the routes."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import AuditLog
from policy import PolicyBundle
from proxy.attestation import Collateral, load_collateral
from proxy.config import Settings
from proxy.tenants import TenantStore
from proxy.users import User, UserStore

from ._backlog import SLICE_S, Backlog
from ._chain import ChainCheck
from ._index import RecordIndex
from ._session import LoginLimiter, SessionCodec, load_secret

__all__ = ["DashboardService", "Viewer"]


class Viewer:
    """The signed-in user and what they may see: ``scope`` is a tenant pseudonym or None (all)."""

    def __init__(self, user: User, nonce: str, scope: str | None, csrf: str) -> None:
        self.user, self.nonce, self.scope, self.csrf = user, nonce, scope, csrf

    @property
    def can_export(self) -> bool:
        return self.user.can_export


class DashboardService:
    def __init__(self, settings: Settings, tenants: TenantStore,
                 audit: Callable[[], AuditLog | None], identity: Any,
                 log_key: Ed25519PrivateKey,
                 policy: Callable[[], PolicyBundle] | None = None) -> None:
        self.settings, self.tenants, self.identity, self.log_key = settings, tenants, identity, log_key
        self.policy = policy
        """The bundle the policy engine enforces now (``None``: the configured one on disk)."""
        self._audit = audit
        self.users = UserStore(settings.tenants_url)
        self.sessions = SessionCodec(load_secret(settings.session_secret, settings.data_dir))
        self.limiter = LoginLimiter()
        self._index: RecordIndex | None = None
        self._index_backlog = Backlog("record_index")
        self.chain = ChainCheck()
        self.identity_verdicts: dict[str, tuple[bool, str]] = {}
        self._collateral: Collateral | None = None

    async def aclose(self) -> None:
        """Stop background work (before the audit log closes)."""
        await self.chain.aclose()
        await self._index_backlog.aclose()

    def bundle(self) -> PolicyBundle | str:
        """The policy bundle the engine enforces now, else the configured directory (empty:
        the shipped bundle)."""
        return self.policy() if self.policy is not None else self.settings.policy_bundle

    def collateral(self) -> Collateral | None:
        """The TDX collateral in ``collateral_dir`` (read once), or ``None`` when none is
        configured; ``ValueError`` when the folder cannot be read."""
        folder = self.settings.collateral_dir
        if folder and self._collateral is None:
            self._collateral = load_collateral(folder)
        return self._collateral

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    @property
    def audit(self) -> AuditLog:
        log = self._audit()
        if log is None:
            raise RuntimeError("the audit log opens at start-up")
        return log

    async def index(self) -> RecordIndex:
        """The aggregates, refreshed by one slice (or by the background catch-up under way);
        ``index_behind`` says how many records they do not cover yet."""
        log = self.audit
        if self._index is None or self._index.log_id != log.log_id:
            self._index = RecordIndex(log.store, log.log_id)
        index = self._index
        await self._index_backlog.view(functools.partial(index.refresh, SLICE_S))
        return index

    async def index_behind(self, index: RecordIndex) -> int:
        """Records of the log the aggregates do not cover yet, while the background catch-up
        runs (otherwise the view's own slice covered all but what arrived since: 0)."""
        if not self._index_backlog.running:
            return 0
        return max(await asyncio.to_thread(self.audit.store.next_index, index.log_id)
                   - index.next_leaf, 0)

    async def tenant_names(self) -> dict[str, str]:
        """Pseudonym → tenant name (read off the event loop: the database may be remote)."""
        return {t.pseudonym: t.name for t in await asyncio.to_thread(self.tenants.tenants)}

    async def viewer(self, cookie: str | None) -> Viewer | None:
        """The signed-in user of a session cookie (read off the event loop)."""
        return await asyncio.to_thread(self._viewer, cookie)

    def _viewer(self, cookie: str | None) -> Viewer | None:
        """The signed-in user of a session cookie: signed, unexpired and not signed out."""
        claims = self.sessions.read(cookie)
        if claims is None:
            return None
        user = self.users.session_user(claims.user, claims.generation)
        if user is None:
            return None
        scope = None
        if user.role == "reviewer" and user.tenant is not None:
            scope = self.tenants.tenant(user.tenant).pseudonym
        return Viewer(user, claims.nonce, scope, self.sessions.csrf(claims.nonce))
