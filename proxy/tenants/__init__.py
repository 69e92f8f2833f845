"""Tenants and their API keys, in the state database (shared with dashboard accounts)."""

from proxy.tenants._errors import StateUnavailable, state_errors
from proxy.tenants._limits import (
    Lease,
    TenantBusy,
    TenantLimiter,
    TenantLimitExceeded,
    TenantLimits,
    TenantRateLimited,
    TenantTokensExhausted,
)
from proxy.tenants._store import ApiKeyInfo, Tenant, TenantStore, open_engine

__all__ = ["ApiKeyInfo", "Lease", "StateUnavailable", "Tenant", "TenantBusy",
           "TenantLimitExceeded", "TenantLimiter", "TenantLimits", "TenantRateLimited",
           "TenantStore", "TenantTokensExhausted", "open_engine", "state_errors"]
