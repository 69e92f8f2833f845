"""Stand-ins for an OPA server on loopback, for exercising ``OPAEngine`` (the ``opa`` engine).
No OPA binary is available here.

``FakeOPAServer`` is a stand-in that speaks OPA's REST API over the embedded engine (regopy,
the same rego-cpp evaluator the ``regopy`` engine uses): it keeps what it is given, as an OPA
server started with no files does: policies (``GET /v1/policies``, ``PUT``/``DELETE
/v1/policies/ID``; a write that leaves the modules it holds not compiling is refused, as OPA
refuses it), data (``GET``/``PUT``/``DELETE /v1/data/KEY``) and ad-hoc queries with input
(``POST /v1/query``). Tests that use it check the ``opa`` engine's client protocol: the URLs and
payloads it sends, how it installs a bundle (and notices a server that lost or never held it),
its timeouts and its fail-closed handling. They do not check OPA's own evaluation of the policy:
every decision the fake returns is rego-cpp's. Tests may write to it behind the engine's back,
as anything else reaching a server could.

``OPAEvaluatorServer`` is the same stand-in with OPA's own evaluator behind it (OPA v1.20.2's Go
``rego`` package, through ``opa-golib-python-bindings``): the decisions it answers are OPA's.

``FaultInjectingOPAServer`` (fault injection) hangs or answers 500 / garbage / undefined to
every query, to check that the engine fails closed.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal

import regopy

from tests.loopback import LoopbackHTTPServer

try:  # OPA's evaluator, for OPAEvaluatorServer; tests that use it say when it is missing
    from opa_bindings import OpaEngine, OpaError
    HAVE_OPA_EVALUATOR = True
except ImportError:  # pragma: no cover - installed by the Makefile
    OpaEngine = OpaError = None
    HAVE_OPA_EVALUATOR = False

Fault = Literal["hang", "500", "garbage", "undefined"]
_NOT_FOUND = (404, b'{"code": "resource_not_found", "message": "not found"}')


class _Server(LoopbackHTTPServer):
    def answer(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        raise NotImplementedError

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                status, payload = server.answer(self.command, self.path, self.rfile.read(length))
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    return  # the client gave up (the hanging fault)

            do_GET = do_PUT = do_POST = do_DELETE = _serve

            def log_message(self, *args: object) -> None:
                return

        return Handler


def _package(source: str) -> str | None:
    return next((line.split()[1] for line in source.splitlines() if line.startswith("package ")),
                None)


def _compiles(modules: dict[str, str], written: str) -> bool:
    """Whether ``modules`` compile together, as far as evaluating the package ``written``
    declares tells (rego-cpp reports a rule that uses an undefined name only then)."""
    package = _package(written)
    if package is None:
        return False
    interpreter = regopy.Interpreter()
    try:
        for name, source in modules.items():
            interpreter.add_module(name, source)
        interpreter.set_input(regopy.Input({}))
        return bool(interpreter.query(f"x = data.{package}").ok())
    except Exception:  # regopy fails to read its own error output
        return False


class FakeOPAServer(_Server):
    """A stand-in for OPA, not OPA: the parts of OPA's REST API that ``OPAEngine`` uses, served
    over the embedded engine (regopy). What it checks is the client's side of the protocol;
    the decisions it answers are rego-cpp's, never OPA's."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.policies: dict[str, str] = {}
        self.data: dict[str, Any] = {}
        self.queries: list[dict[str, Any]] = []
        """Every ad-hoc query's body, in order."""
        self.writes = 0
        """Policy and data writes so far."""

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        with self._lock:
            if path.startswith("/v1/policies"):
                return self._policies(method, path.removeprefix("/v1/policies").strip("/"), body)
            if path.startswith("/v1/data/"):
                return self._data(method, path.removeprefix("/v1/data/"), body)
            if (method, path) == ("POST", "/v1/query"):
                return self._query(json.loads(body))
        return _NOT_FOUND

    def _policies(self, method: str, policy_id: str, body: bytes) -> tuple[int, bytes]:
        if method == "GET" and not policy_id:
            listed = [{"id": i, "raw": s} for i, s in sorted(self.policies.items())]
            return 200, json.dumps({"result": listed}).encode()
        if method == "PUT" and policy_id:
            held = {**self.policies, policy_id: body.decode()}
            if not self.compiles(held, body.decode()):  # as OPA compiles what it holds at a write
                return 400, b'{"code": "invalid_parameter", "message": "compile error"}'
            self.policies, self.writes = held, self.writes + 1
            return 200, b"{}"
        if method == "DELETE" and self.policies.pop(policy_id, None) is not None:
            self.writes += 1
            return 200, b"{}"
        return _NOT_FOUND

    def _data(self, method: str, key: str, body: bytes) -> tuple[int, bytes]:
        if "/" in key or not key:
            return 400, b'{"code": "invalid_parameter", "message": "top-level keys only here"}'
        if method == "GET":
            return (200, json.dumps({"result": self.data[key]}).encode()) if key in self.data else (
                200, b"{}")
        if method == "PUT":
            self.data[key], self.writes = json.loads(body), self.writes + 1
            return 204, b""
        if method == "DELETE" and self.data.pop(key, None) is not None:
            self.writes += 1
            return 204, b""
        return _NOT_FOUND

    def compiles(self, modules: dict[str, str], written: str) -> bool:
        """Whether ``modules`` compile together after the write of ``written``."""
        return _compiles(modules, written)

    def _query(self, body: dict[str, Any]) -> tuple[int, bytes]:
        self.queries.append(body)
        return self.evaluate(body["query"], body.get("input"))

    def evaluate(self, query: str, input: Any) -> tuple[int, bytes]:
        """OPA's answer to an ad-hoc query: every result's bindings (none when undefined)."""
        interpreter = regopy.Interpreter()
        try:
            for name, source in self.policies.items():
                interpreter.add_module(name, source)
            interpreter.add_data_json(json.dumps(self.data))
            interpreter.set_input(regopy.Input(input))
            out = interpreter.query(query)
        except (regopy.RegoError, ValueError) as exc:
            return 400, json.dumps({"code": "invalid_parameter", "message": str(exc)}).encode()
        if not out.ok():
            return 500, b'{"code": "internal_error", "message": "evaluation failed"}'
        results = [dict(result.bindings) for result in out] if len(out) else []
        # An undefined reference leaves no binding: OPA answers no result at all then.
        results = [r for r in results if {"decision", "revision"} <= set(r)]
        return 200, json.dumps({"result": results}).encode()


class OPAEvaluatorServer(FakeOPAServer):
    """The same REST stand-in, with OPA's own evaluator behind it: the Go ``rego`` package of
    OPA v1.20.2, the library the ``opa`` server is built on, loaded in-process through
    ``opa-golib-python-bindings`` (``make`` installs it). OPA compiles the modules held at each
    policy write and evaluates every query, so the decisions this server answers are OPA's;
    only the HTTP layer is this file's. No ``opa`` binary can be installed here, so this is as
    close to a real OPA server as these tests get."""

    def __init__(self) -> None:
        super().__init__()
        self._engine: Any = None
        self._loaded: tuple[dict[str, str], str] | None = None

    def compiles(self, modules: dict[str, str], written: str) -> bool:
        package = _package(written)
        if package is None:
            return False
        engine = _opa_engine(modules, {})
        try:
            engine.eval_query(f"x = data.{package}")
            return True
        except OpaError:
            return False
        finally:
            engine.close()

    def evaluate(self, query: str, input: Any) -> tuple[int, bytes]:
        held = (dict(self.policies), json.dumps(self.data, sort_keys=True))
        if self._loaded != held:  # a write since the last query: load what is held now
            if self._engine is not None:
                self._engine.close()
            self._engine, self._loaded = _opa_engine(self.policies, self.data), held
        try:
            results = self._engine.eval_query(query, input)
        except OpaError as exc:
            return 400, json.dumps({"code": "invalid_parameter", "message": str(exc)}).encode()
        return 200, json.dumps({"result": results}).encode()

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        if self._engine is not None:
            self._engine.close()
            self._engine = None


def _opa_engine(modules: dict[str, str], data: dict[str, Any]) -> Any:
    engine = OpaEngine()
    for name, source in modules.items():
        engine.add_policy(name, source)
    engine.add_data(data)
    return engine


class FaultInjectingOPAServer(_Server):
    """Accepts every write and answers every query badly: hangs, 500, a non-JSON body, or an
    undefined result."""

    def __init__(self, fault: Fault, hang_s: float = 3.0) -> None:
        super().__init__()
        self.fault = fault
        self.hang_s = hang_s

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        if path.startswith("/v1/policies") and method == "GET":
            return 200, b'{"result": []}'
        if path.startswith(("/v1/policies", "/v1/data")):
            return (200, b"{}") if method != "PUT" or "policies" in path else (204, b"")
        if self.fault == "hang":
            time.sleep(self.hang_s)
            return 200, b"{}"
        if self.fault == "500":
            return 500, b'{"code": "internal_error"}'
        if self.fault == "garbage":
            return 200, b"<html>not json"
        return 200, b'{"result": []}'
