"""Load rego-cpp before any other C++ library: imported first by the ``policy`` package, the
``sealgate`` command line and the server.

regopy's ``librego_shared.so`` links the snmalloc allocator and exports ``operator new`` and
``operator delete``. Whichever of it and ``libstdc++`` loads first decides which allocator
libstdc++'s own code binds to. When libstdc++ is already there (greenlet, which structlog and
SQLAlchemy import, links it), rego-cpp frees memory that libstdc++ allocated with the other
allocator, and every evaluation that misses the decision cache leaks about 30 KB for good:
gigabytes a day at a modest rate (microsoft/rego-cpp#128 is the same clash). Loaded first,
libstdc++ binds to rego-cpp's allocator and nothing leaks.

``ALLOCATOR_CONFLICT`` records whether it was too late in this process (libstdc++ mapped before
rego-cpp); the embedded engine logs it as an error at start-up.
"""

from __future__ import annotations


def _mapped(name: str) -> bool:
    """Whether a shared library whose path contains ``name`` is loaded (Linux; elsewhere
    ``False``)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            return any(name in line for line in maps)
    except OSError:
        return False


ALLOCATOR_CONFLICT = _mapped("libstdc++") and not _mapped("librego_shared")

import regopy  # noqa: E402,F401  (the point of this module: load it now)

__all__ = ["ALLOCATOR_CONFLICT"]
