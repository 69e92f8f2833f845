"""Hot reload: poll a bundle directory and hand changed bundles to the engine."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ._bundle import load_bundle
from ._engine import PolicyEngine
from ._errors import PolicyBundleError

__all__ = ["BundleWatcher"]


class BundleWatcher:
    """Reloads ``engine`` when the bundle at ``path`` has a new digest.

    ``check()`` reloads at once; ``poll()``, which ``run()`` calls every ``interval_s`` seconds,
    installs a new digest only once two polls in a row have seen it, so a file caught half
    written is not installed. A bundle that does not load or compile is not installed: the
    engine keeps deciding with the old one and ``last_error`` says why.
    """

    def __init__(self, engine: PolicyEngine, path: str | Path, *, interval_s: float = 5.0) -> None:
        self._engine = engine
        self._path = Path(path)
        self._interval_s = interval_s
        self._seen: str | None = None
        self.last_error: PolicyBundleError | None = None

    def check(self) -> bool:
        """Load the directory; reload the engine if the digest changed. True when reloaded."""
        bundle = load_bundle(self._path)
        if bundle.digest == self._engine.wanted_digest:
            return False
        self._engine.reload(bundle)
        return True

    def poll(self) -> bool:
        """One polling step (class docstring); never raises. True when reloaded."""
        try:
            bundle = load_bundle(self._path)
            settled, self._seen = bundle.digest == self._seen, bundle.digest
            # Compared with the bundle the engine was last given, not the one installed: a
            # bundle reverted on disk before its successor reached a policy server is given
            # back, instead of the successor being installed later.
            if bundle.digest == self._engine.wanted_digest or not settled:
                reloaded = False
            else:
                self._engine.reload(bundle)
                reloaded = True
        except PolicyBundleError as exc:
            self.last_error = exc
            return False
        self.last_error = None
        return reloaded

    async def run(self) -> None:
        """Poll until cancelled. Loading and compiling run off the event loop."""
        while True:
            await asyncio.sleep(self._interval_s)
            await asyncio.to_thread(self.poll)
