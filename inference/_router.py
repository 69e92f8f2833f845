"""Model routing: public model name → route (backend + retention tier) → backend."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping

from inference._base import Backend, ModelRoute
from inference._errors import ModelNotFound

__all__ = ["BackendRouter"]


class BackendRouter:
    """Holds the configured backends and the model routes that point at them."""

    def __init__(self, routes: Iterable[ModelRoute], backends: Mapping[str, Backend]) -> None:
        self._routes = {route.name: route for route in routes}
        self._backends = dict(backends)
        for route in self._routes.values():
            if route.backend not in self._backends:
                raise ValueError(f"model {route.name!r} names unknown backend {route.backend!r}")

    @property
    def routes(self) -> tuple[ModelRoute, ...]:
        return tuple(self._routes.values())

    @property
    def backends(self) -> Mapping[str, Backend]:
        return self._backends

    @property
    def names(self) -> Mapping[str, ModelRoute]:
        """The configured model names and their routes."""
        return self._routes

    def route(self, model: str) -> tuple[ModelRoute, Backend]:
        """The route and backend for ``model``; :class:`ModelNotFound` when none is configured."""
        route = self._routes.get(model)
        if route is None:
            raise ModelNotFound("the requested model does not exist")
        return route, self._backends[route.backend]

    async def start(self) -> None:
        """Start every backend; if one fails, close those already begun (a supervised child
        must not outlive a gateway that never came up) and raise."""
        begun: list[Backend] = []
        try:
            for backend in self._backends.values():
                begun.append(backend)
                await backend.start()
        except BaseException:
            for backend in reversed(begun):
                with contextlib.suppress(Exception):
                    await backend.close()
            raise

    async def close(self) -> None:
        for backend in self._backends.values():
            await backend.close()

    async def ready(self) -> dict[str, bool]:
        """Every backend's readiness, checked at once: a slow one delays the answer by its own
        check only, not by the sum of all of them (a readiness probe has one timeout)."""
        names = list(self._backends)
        states = await asyncio.gather(*(self._backends[name].ready() for name in names),
                                      return_exceptions=True)
        # A check that fails in a way its backend did not foresee says "not ready" too.
        return {name: state is True for name, state in zip(names, states, strict=True)}
