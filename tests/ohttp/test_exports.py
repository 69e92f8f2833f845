"""The public surface of the sealed-session packages is exactly this."""

from __future__ import annotations

import proxy.client
import proxy.gateway
import proxy.ohttp


def test_ohttp_exports() -> None:
    assert sorted(proxy.ohttp.__all__) == sorted(
        [
            "BAD_FIELD_NAME",
            "BAD_FIELD_VALUE",
            "DEFAULT_SUITES",
            "BHTTPRequest",
            "BHTTPResponse",
            "ChunkedRequestOpener",
            "ChunkedRequestSealer",
            "ChunkedResponseOpener",
            "ChunkedResponseSealer",
            "ClientRequestContext",
            "HOP_BY_HOP_FIELDS",
            "GatewayKey",
            "InformationalResponse",
            "KeyConfig",
            "KeyLookup",
            "MediaType",
            "OHTTPError",
            "ResponseDecoder",
            "ResponseEvent",
            "ResponseStreamEncoder",
            "SenderSetup",
            "ServerRequestContext",
            "decapsulate_request",
            "decode_key_configs",
            "decode_request",
            "decode_response",
            "encapsulate_request",
            "encode_key_configs",
            "encode_request",
            "encode_response",
            "end_to_end",
            "prepare_sender",
        ]
    )


def test_gateway_exports() -> None:
    assert sorted(proxy.gateway.__all__) == sorted(
        [
            "DEFAULT_MAX_BODY",
            "GATEWAY_PATH",
            "GatewayError",
            "KeyManager",
            "ReplayGuard",
            "SealedChannel",
            "build_gateway_handlers",
            "gateway_front",
            "gateway_handlers",
            "sealed_channel",
        ]
    )


def test_client_exports() -> None:
    assert sorted(proxy.client.__all__) == sorted(
        [
            "NO_WEBSOCKET",
            "AsyncSealedTransport",
            "AttestedKeySource",
            "ClientProxy",
            "InsecureEnclaveWarning",
            "KeySource",
            "SealedExchange",
            "SealedTransport",
            "SealedTransportError",
            "StaticKeySource",
            "VerifiedReceipt",
            "async_sealed_openai",
            "sealed_openai",
            "serve_client_proxy",
            "verify_request_records",
            "verify_response_receipt",
        ]
    )


def test_every_exported_name_exists() -> None:
    for module in (proxy.ohttp, proxy.gateway, proxy.client):
        for name in module.__all__:
            assert hasattr(module, name), (module.__name__, name)


def test_sealing_bench_smoke() -> None:
    from tests.bench.bench_sealing import run

    rows = run(quick=True)
    assert {"name", "p50_us", "p99_us", "target"} <= set(rows[0])
    chunk = next(r for r in rows if r["name"].startswith("seal response chunk"))
    assert 0 < chunk["p50_us"] < 50
