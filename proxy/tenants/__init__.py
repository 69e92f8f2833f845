"""Tenants and their API keys."""

from proxy.tenants._store import ApiKeyInfo, Tenant, TenantStore, open_engine

__all__ = ["ApiKeyInfo", "Tenant", "TenantStore", "open_engine"]
