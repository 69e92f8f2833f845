"""Tenants and their API keys."""

from proxy.tenants._store import ApiKeyInfo, Tenant, TenantStore, migrate

__all__ = ["ApiKeyInfo", "Tenant", "TenantStore", "migrate"]
