"""Loopback HTTP servers that speak OPA's Data API, for exercising ``OPAEngine``.

``OPADataAPITestServer`` answers ``POST /v1/data/sealgate/authz/decision`` by evaluating the
bundle with regopy (no OPA binary is available here). ``FaultInjectingOPAServer`` hangs or
answers 500 / garbage, to check that the engine fails closed.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal

import regopy

from policy import PolicyBundle
from policy._regopy import compile_bundle
from tests.loopback import LoopbackHTTPServer

DATA_PATH = "/v1/data/sealgate/authz/decision"
Fault = Literal["hang", "500", "garbage", "undefined"]


class _Server(LoopbackHTTPServer):
    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        raise NotImplementedError

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                status, payload = server.answer(self.path, body)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    return  # the client gave up (the hanging fault)

            def log_message(self, *args: object) -> None:
                return

        return Handler


class OPADataAPITestServer(_Server):
    """OPA Data API over regopy: ``{"input": ...}`` in, ``{"result": ...}`` out."""

    def __init__(self, bundle: PolicyBundle) -> None:
        super().__init__()
        self._program = compile_bundle(bundle)
        self._lock = threading.Lock()
        self._interpreter = regopy.Interpreter()
        self.requests: list[dict[str, Any]] = []

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        if path != DATA_PATH:
            return 404, b'{"code": "resource_not_found"}'
        self.requests.append(body)
        with self._lock:
            self._interpreter.set_input(regopy.Input(body.get("input")))
            out = self._interpreter.query_bundle_entrypoint(self._program, "sealgate/authz/decision")
            result = out[0].expressions[0] if out.ok() and len(out) == 1 else None
        return 200, json.dumps({} if result is None else {"result": result}).encode()


class FaultInjectingOPAServer(_Server):
    """Answers every query badly: hangs, 500, a non-JSON body, or an undefined result."""

    def __init__(self, fault: Fault, hang_s: float = 3.0) -> None:
        super().__init__()
        self.fault = fault
        self.hang_s = hang_s

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        if self.fault == "hang":
            time.sleep(self.hang_s)
            return 200, b"{}"
        if self.fault == "500":
            return 500, b'{"code": "internal_error"}'
        if self.fault == "garbage":
            return 200, b"<html>not json"
        return 200, b"{}"
