"""Dashboard reviewer accounts (roles ``admin``, ``reviewer``, ``auditor``), scrypt-hashed
passwords, stored in the tenant database."""

from ._errors import InvalidCredentials, UserError
from ._passwords import hash_password, verify_password
from ._store import ROLES, User, UserStore

__all__ = [
    "ROLES",
    "InvalidCredentials",
    "User",
    "UserError",
    "UserStore",
    "hash_password",
    "verify_password",
]
