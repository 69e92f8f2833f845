"""BareForwarder: a measurement tool, not a gateway. The least a Python proxy on this stack can
do: raw ASGI on uvicorn (uvloop, httptools) forwarding each POST body to one upstream over one
pooled aiohttp session, with no framework, authentication, policy, record or validation.

``make bench`` measures it beside the gateway, so the gateway's added latency can be read against
the platform's own floor on the same machine in the same run.

Run standalone: ``python -m tests.bare_forwarder PORT UPSTREAM_URL``.
"""

from __future__ import annotations

import sys
from typing import Any

import aiohttp

from tests.fast_upstream import read_body


class BareForwarder:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        body = await read_body(receive)
        assert self.session is not None
        async with self.session.post(self.upstream + scope["path"], data=body,
                                     headers={"content-type": "application/json"}) as response:
            status, payload = response.status, await response.read()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": payload})

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.session = aiohttp.ClientSession()
                await send({"type": "lifespan.startup.complete"})
            else:
                if self.session is not None:
                    await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(BareForwarder(sys.argv[2]), host="127.0.0.1", port=int(sys.argv[1]),
                log_level="warning", access_log=False)
