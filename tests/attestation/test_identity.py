"""Identity documents: key binding round trip with the simulated provider."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import functools
import hashlib
import json
import socket
import threading
import time
import types
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2
import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from proxy.attestation import (
    Collateral,
    Evidence,
    IdentityService,
    NvidiaGpuProvider,
    SimulatedProvider,
    VerificationError,
    VerificationPolicy,
    compute_report_data,
    gpu_nonce,
    verify_identity,
)
from proxy.attestation._binding import binding_object
from proxy.attestation._tdx_quote import parse_tdx_quote
from proxy.client import AttestedKeySource, InsecureEnclaveWarning, SealedTransportError
from proxy.ohttp import GatewayKey, encode_key_configs
from tests.attestation._support import (
    SNP_AT,
    TDX_V4_AT,
    SnpForge,
    TdxForge,
    snp_case,
)
from tests.conftest import load_vector, vector_path
from tests.ohttp._vectors import h, ohttp_vector

M = "a1" * 48
AUDIT_KEY = bytes(range(32))
PINNED = VerificationPolicy(allowed_measurements=frozenset({M}), allow_simulated=True)


def key_configs() -> bytes:
    """The key configuration of RFC 9458 Appendix A, from the shared vectors (skips, or fails
    under SEALGATE_REQUIRE_ALL=1, when they are absent)."""
    return h(ohttp_vector("rfc9458-appendix-a.json")["key_config"])


class Inputs:
    """Mutable inputs so the cache behaviour can be observed."""

    def __init__(self, configs: bytes | None = None) -> None:
        self.key_configs = key_configs() if configs is None else configs
        self.digest = "sha256:" + "ab" * 32

    def service(self, measurement: str = M, **kw: Any) -> IdentityService:
        self.provider = CountingSimulatedProvider(measurement)
        return IdentityService(self.provider, lambda: self.key_configs,
                               AUDIT_KEY, lambda: self.digest, measurement, **kw)


class CountingSimulatedProvider(SimulatedProvider):
    """Measurement tool: counts evidence collections."""

    calls = 0

    async def evidence(self, report_data: bytes) -> Evidence:
        self.calls += 1
        return await super().evidence(report_data)


def _doc(measurement: str = M, nonce: bytes | None = None) -> dict[str, Any]:
    return asyncio.run(Inputs().service(measurement).document(nonce))


def _code(document: dict[str, Any], policy: VerificationPolicy = PINNED, **kw: Any) -> str:
    with pytest.raises(VerificationError) as info:
        verify_identity(document, policy, **kw)
    return info.value.code


def test_round_trip_accepts_pinned_measurement() -> None:
    nonce = b"n" * 32
    doc = _doc(nonce=nonce)
    identity = verify_identity(doc, PINNED, nonce=nonce)
    assert identity.key_configs == key_configs() and identity.audit_public_key == AUDIT_KEY
    assert identity.measurement == M and identity.simulated and identity.platform == "simulated"
    assert identity.evidence_digest.startswith("sha256:") and identity.tcb_status is None
    assert any("INSECURE" in n for n in identity.notes)
    expected = compute_report_data(key_configs(), AUDIT_KEY, doc["policy_digest"], M, nonce,
                                   doc["created"])
    assert doc["report_data"] == expected.hex() and len(expected) == 64


def test_binding_encoding_is_canonical() -> None:
    """docs/attestation.md "REPORT_DATA encoding": six keys in RFC 8785 order."""
    obj = binding_object(b"k", b"a", "sha256:00", "m", None, "2026-01-01T00:00:00+00:00")
    assert rfc8785.dumps(obj) == (
        b'{"audit_key":"YQ==","created":"2026-01-01T00:00:00+00:00","key_configs":"aw==",'
        b'"measurement":"m","nonce":null,"policy_digest":"sha256:00"}')


# Known answers for docs/attestation.md "REPORT_DATA encoding", written out by hand from the
# spec: the inputs are chosen so that standard base64 (RFC 4648 §4) differs from the URL-safe
# alphabet ('+', '/') and carries padding.
KAT_KEY_CONFIGS = b"\xfb\xff\xfe\x00"  # base64 "+//+AA=="
KAT_AUDIT_KEY = bytes(range(32))  # base64 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
KAT_NONCE = b"\xfb\xef\xbe" * 5 + b"\xff"  # base64 "++++++++++++++++++++/w=="
KAT_DIGEST = "sha256:" + "0f" * 32
KAT_CREATED = "2026-01-01T00:00:00+00:00"
KAT_WITH_NONCE = (
    b'{"audit_key":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",'
    b'"created":"2026-01-01T00:00:00+00:00",'
    b'"key_configs":"+//+AA==",'
    b'"measurement":"' + M.encode() + b'",'
    b'"nonce":"++++++++++++++++++++/w==",'
    b'"policy_digest":"sha256:' + b"0f" * 32 + b'"}'
)
KAT_WITHOUT_NONCE = KAT_WITH_NONCE.replace(b'"++++++++++++++++++++/w=="', b"null")


@pytest.mark.parametrize(("nonce", "encoding"), [(KAT_NONCE, KAT_WITH_NONCE),
                                                  (None, KAT_WITHOUT_NONCE)],
                         ids=["nonce", "no-nonce"])
def test_report_data_known_answer(nonce: bytes | None, encoding: bytes) -> None:
    """REPORT_DATA is SHA-512 over the six-key JCS encoding, 64 bytes, and each GPU's SPDM
    request nonce is SHA-256 of it (docs/attestation.md), checked against hashlib directly."""
    expected = hashlib.sha512(encoding).digest()
    got = compute_report_data(KAT_KEY_CONFIGS, KAT_AUDIT_KEY, KAT_DIGEST, M, nonce, KAT_CREATED)
    assert got == expected and len(got) == 64
    assert gpu_nonce(got) == hashlib.sha256(expected).digest()


def test_identity_service_binds_the_documented_report_data() -> None:
    """A document the service builds carries SHA-512 of the hand-written encoding of its own
    fields, hands exactly that to the CPU provider, and SHA-256 of it to each GPU collector."""
    seen: list[bytes] = []

    async def collector(nonce: bytes) -> tuple[bytes, bytes]:
        seen.append(nonce)
        return b"spdm", b""

    service = IdentityService(SimulatedProvider(M), lambda: KAT_KEY_CONFIGS, KAT_AUDIT_KEY,
                              lambda: KAT_DIGEST, M, gpu_providers=[NvidiaGpuProvider(collector)])
    doc = asyncio.run(service.document(KAT_NONCE))
    encoding = KAT_WITH_NONCE.replace(b'"created":"2026-01-01T00:00:00+00:00"',
                                      b'"created":"' + doc["created"].encode() + b'"')
    expected = hashlib.sha512(encoding).digest()
    assert doc["report_data"] == expected.hex()
    simulated = json.loads(base64.b64decode(doc["evidence"]["report"]))
    assert simulated["body"]["report_data"] == expected.hex()
    assert seen == [hashlib.sha256(expected).digest()]


def test_other_measurement_refused() -> None:
    assert _code(_doc(measurement="b2" * 48)) == "measurement_not_allowed"


def test_empty_allowlist_says_so() -> None:
    identity = verify_identity(_doc(), VerificationPolicy(allow_simulated=True))
    assert any("no measurement allowlist" in n for n in identity.notes)


def test_simulated_refused_by_default() -> None:
    assert _code(_doc(), VerificationPolicy(allowed_measurements=frozenset({M}))) == \
        "simulated_not_allowed"


@pytest.mark.parametrize(("field", "value"), [
    ("key_configs", lambda: base64.b64encode(key_configs()[:-1] + b"\x04").decode()),
    ("audit_public_key", lambda: base64.b64encode(bytes(32)).decode()),
    ("policy_digest", lambda: "sha256:" + "cd" * 32),
    ("nonce", lambda: base64.b64encode(b"x" * 16).decode()),
])
def test_swapped_field_breaks_binding(field: str, value: Any) -> None:
    doc = _doc()
    doc[field] = value()
    assert _code(doc) == "report_data_mismatch"


def test_swapped_measurement_caught() -> None:
    doc = _doc()
    doc["measurement"] = "b2" * 48
    assert _code(doc) == "report_data_mismatch"


def test_nonce_echo() -> None:
    doc = _doc(nonce=b"a" * 32)
    assert _code(doc, nonce=b"b" * 32) == "nonce_mismatch"
    assert _code(_doc(), nonce=b"b" * 32) == "nonce_mismatch"


def test_tampered_simulated_signature() -> None:
    doc = _doc()
    report = json.loads(base64.b64decode(doc["evidence"]["report"]))
    other = Ed25519PrivateKey.generate().sign(b"x")
    report["signature"] = base64.b64encode(other).decode()
    doc["evidence"]["report"] = base64.b64encode(json.dumps(report).encode()).decode()
    assert _code(doc) == "report_signature_invalid"


def test_malformed_documents() -> None:
    assert _code({"version": 2}) == "document_malformed"
    doc = _doc()
    del doc["key_configs"]
    assert _code(doc) == "document_malformed"


def test_max_age() -> None:
    doc = _doc()
    policy = VerificationPolicy(allowed_measurements=frozenset({M}), allow_simulated=True,
                                max_age_s=60)
    verify_identity(doc, policy)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    assert _code(doc, policy, now=later) == "document_expired"
    # A document from the enclave's future (a host can push its clock) never ages: refused
    # beyond clock skew, accepted within it.
    earlier = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    assert _code(doc, policy, now=earlier) == "document_expired"
    verify_identity(doc, policy, now=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30))


def test_created_is_bound() -> None:
    """An old document cannot be made to look fresh by editing its ``created``."""
    doc = _doc()
    policy = VerificationPolicy(allowed_measurements=frozenset({M}), allow_simulated=True,
                                max_age_s=300)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    doc["created"] = later.isoformat(timespec="seconds")
    assert _code(doc, policy, now=later) == "report_data_mismatch"
    assert _code(doc) == "report_data_mismatch"
    for bad in (None, 5, "yesterday"):
        assert _code({**doc, "created": bad}) == "document_malformed"


def test_no_nonce_document_cached_until_input_changes() -> None:
    inputs = Inputs()
    service = inputs.service()

    async def run() -> list[dict[str, Any]]:
        first = await service.document()
        second = await service.document()
        inputs.key_configs = key_configs() + b"\x00"
        third = await service.document()
        fresh = [await service.document(b"q" * 16), await service.document(b"q" * 16)]
        return [first, second, third, *fresh]

    first, second, third, fresh1, fresh2 = asyncio.run(run())
    assert first == second
    assert third["key_configs"] != first["key_configs"]
    assert third["evidence"] != first["evidence"]
    assert fresh1["nonce"] == fresh2["nonce"]
    assert inputs.provider.calls == 4  # cached once, rebuilt once, fresh twice
    verify_identity(third, PINNED)


def test_gpu_evidence_must_be_bound() -> None:
    """A GPU report whose nonce is not SHA-256(REPORT_DATA) is refused."""
    manifest = load_vector("nvidia-gpu", "manifest.json")
    report = bytes.fromhex(vector_path("nvidia-gpu", manifest["report"]).read_text().strip())
    chain = vector_path("nvidia-gpu", manifest["cert_chain"]).read_bytes()
    seen: list[bytes] = []

    async def collector(nonce: bytes) -> tuple[bytes, bytes]:
        seen.append(nonce)
        return report, chain

    service = Inputs().service(gpu_providers=[NvidiaGpuProvider(collector)])
    doc = asyncio.run(service.document())
    assert len(doc["evidence"]["gpus"]) == 1 and len(seen[0]) == 32
    assert _code(doc) == "gpu_nonce_mismatch"


def _snp_document(forge: SnpForge, nonce: bytes) -> dict[str, Any]:
    """A genuine-looking SEV-SNP identity document: any measurement, the attacker's keys."""
    created = "2025-06-01T00:00:00+00:00"
    raw = bytearray(forge.report)
    raw[0x90:0xC0] = b"\xee" * 48  # the launch measurement of whatever image was booted
    measurement = bytes(raw[0x90:0xC0]).hex()
    raw[0x50:0x90] = compute_report_data(key_configs(), AUDIT_KEY, "sha256:" + "11" * 32,
                                         measurement, nonce, created)
    evidence = Evidence(platform="sev-snp", report=forge.sign(bytes(raw)),
                        certificates=forge.certs(), provider="configfs-tsm")
    return _document(evidence, measurement, nonce, created)


def _document(evidence: Evidence, measurement: str, nonce: bytes, created: str) -> dict[str, Any]:
    """An identity document for the test keys around hardware ``evidence``."""
    return {"version": 1, "platform": evidence.platform,
            "key_configs": base64.b64encode(key_configs()).decode(),
            "audit_public_key": base64.b64encode(AUDIT_KEY).decode(),
            "policy_digest": "sha256:" + "11" * 32, "measurement": measurement,
            "nonce": base64.b64encode(nonce).decode(), "evidence": evidence.to_json(),
            "created": created}


def test_client_default_refuses_unlisted_measurement(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's default policy (no allowlist) no longer seals to any genuine enclave."""
    forge = SnpForge(monkeypatch, snp_case("virtee-sev_report_milan.bin"))
    nonce = b"n" * 32
    doc = _snp_document(forge, nonce)
    with pytest.raises(VerificationError) as info:
        verify_identity(doc, VerificationPolicy.from_env({}), nonce=nonce, now=SNP_AT)
    assert info.value.code == "measurement_not_allowed"
    anyone = VerificationPolicy.from_env({"SEALGATE_ALLOW_ANY_MEASUREMENT": "1"})
    found = verify_identity(doc, anyone, nonce=nonce, now=SNP_AT)
    assert any("no measurement allowlist" in n for n in found.notes)

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent = base64.b64decode(json.loads(request.content)["nonce"])
        return httpx2.Response(200, json=_snp_document(forge, sent))

    source = AttestedKeySource("https://gw.example", VerificationPolicy.from_env({}),
                               transport=httpx2.MockTransport(handler))
    with pytest.raises(SealedTransportError) as refused:
        source.key_config()
    assert "measurement_not_allowed" in str(refused.value)
    # Without a policy the source takes the environment's, strict by default.
    for name in ("SEALGATE_VERIFY_POLICY", "SEALGATE_ALLOWED_MEASUREMENTS",
                 "SEALGATE_ALLOW_ANY_MEASUREMENT", "SEALGATE_ALLOW_SIMULATED"):
        monkeypatch.delenv(name, raising=False)
    default = AttestedKeySource("https://gw.example", transport=httpx2.MockTransport(handler))
    with pytest.raises(SealedTransportError) as refused:
        default.key_config()
    assert "measurement_not_allowed" in str(refused.value)
    monkeypatch.setenv("SEALGATE_ALLOW_ANY_MEASUREMENT", "1")
    with pytest.raises(SealedTransportError) as past:  # verified; this document's keys are a stub
        default.key_config()
    assert "unusable key configuration" in str(past.value)


def _tdx_document(forge: TdxForge, nonce: bytes) -> dict[str, Any]:
    """A genuine-looking TDX identity document for the test keys: the real v4 quote with this
    document's REPORT_DATA, re-signed under the forge's PCK."""
    created = "2023-06-20T00:00:00+00:00"
    quote = parse_tdx_quote(forge.original)
    measurement = quote.body.mr_td.hex()
    signed = bytearray(quote.signed)
    signed[48 + 520:48 + 584] = compute_report_data(  # v4: 48-byte header, REPORTDATA at 520
        key_configs(), AUDIT_KEY, "sha256:" + "11" * 32, measurement, nonce, created)
    evidence = Evidence(platform="tdx", report=forge.resigned(bytes(signed)), certificates=b"",
                        provider="configfs-tsm")
    return _document(evidence, measurement, nonce, created)


def test_client_verifies_tdx_identity_with_the_collateral_it_is_given(
        monkeypatch: pytest.MonkeyPatch) -> None:
    forge = TdxForge(monkeypatch)

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent = base64.b64decode(json.loads(request.content)["nonce"])
        return httpx2.Response(200, json=_tdx_document(forge, sent))

    policy = VerificationPolicy(allow_any_measurement=True,
                                allowed_tcb_statuses=frozenset({"UpToDate", "TcbNotSupported"}))
    verify = functools.partial(verify_identity, now=TDX_V4_AT)  # the vectors' collateral era

    def source(collateral: Collateral | None) -> AttestedKeySource:
        return AttestedKeySource("https://gw.example", policy, verify, collateral=collateral,
                                 transport=httpx2.MockTransport(handler))

    with pytest.raises(SealedTransportError) as missing:
        source(None).key_config()
    assert "collateral_missing" in str(missing.value)
    with pytest.raises(SealedTransportError) as revoked:
        source(forge.collateral(pck_crl=forge.crl("pca", [forge.pck.serial_number]))).key_config()
    assert "crl_revoked" in str(revoked.value)
    with pytest.raises(SealedTransportError) as past:  # verified; this document's keys are a stub
        source(forge.collateral()).key_config()
    assert "unusable key configuration" in str(past.value)


def _collateral_folder(collateral: Collateral, folder: Any) -> str:
    """``collateral`` laid out as an operator's ``collateral_dir`` (docs/attestation.md)."""
    folder.mkdir()
    (folder / "tcb_info.json").write_bytes(collateral.tcb_infos[0])
    assert collateral.qe_identity and collateral.pck_crl and collateral.root_crl
    (folder / "qe_identity.json").write_bytes(collateral.qe_identity)
    (folder / "tcb_signing_chain.pem").write_bytes(collateral.tcb_signing_chain)
    (folder / "pck_crl.der").write_bytes(collateral.pck_crl)
    (folder / "root_crl.der").write_bytes(collateral.root_crl)
    return str(folder)


def test_dashboard_checks_its_tdx_documents_with_the_configured_collateral(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    from proxy.config import Settings
    from proxy.dashboard._pages import _verify_doc
    from proxy.dashboard._service import DashboardService
    from proxy.tenants import TenantStore

    forge = TdxForge(monkeypatch)
    document = _tdx_document(forge, b"n" * 32)  # created at TDX_V4_AT, the collateral's era

    def verdict(name: str, collateral_dir: str) -> tuple[bool, str]:
        settings = Settings(data_dir=tmp_path / name, collateral_dir=collateral_dir)
        tenants = TenantStore(settings.tenants_url)
        try:
            svc = DashboardService(settings, tenants, lambda: None, None,
                                   Ed25519PrivateKey.generate())
            return _verify_doc(svc, "identity-1.json", document)
        finally:
            tenants.close()

    ok, text = verdict("none", "")
    assert ok and text == "verified (TCB status not checked: no collateral_dir configured)"
    good = _collateral_folder(forge.collateral(), tmp_path / "good")
    ok, text = verdict("good", good)  # evaluated: this quote's TCB is unknown to that TCB info
    assert (ok, text) == (False, "tcb_status_not_allowed: TCB status TcbNotSupported")
    revoked = _collateral_folder(
        forge.collateral(pck_crl=forge.crl("pca", [forge.pck.serial_number])), tmp_path / "revoked")
    ok, text = verdict("revoked", revoked)
    assert not ok and "crl_revoked" in text
    ok, text = verdict("missing", str(tmp_path / "nowhere"))
    assert not ok and "cannot read the collateral folder" in text


def test_client_refuses_an_identity_answer_nested_too_deeply() -> None:
    """Whatever the identity endpoint answers, the client fails with its own error."""
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=b"[" * 100_000 + b"]" * 100_000)

    source = AttestedKeySource("https://gw.example", PINNED, transport=httpx2.MockTransport(handler))
    with pytest.raises(SealedTransportError) as info:
        source.key_config()
    assert info.value.code == "enclave_unverified"


def _slow_identity() -> tuple[Any, Any, list[int]]:
    """Identity endpoint handlers (async, sync) answering a real simulated document for each
    nonce after 50 ms (long enough for every concurrent caller to arrive), and their calls."""
    inputs = Inputs(encode_key_configs([GatewayKey.generate(3).config]))
    service, calls = inputs.service(), []

    async def answer(request: httpx2.Request) -> httpx2.Response:
        calls.append(1)
        await asyncio.sleep(0.05)
        nonce = base64.b64decode(json.loads(await request.aread())["nonce"])
        return httpx2.Response(200, json=await service.document(nonce))

    def answer_sync(request: httpx2.Request) -> httpx2.Response:
        calls.append(1)
        time.sleep(0.05)
        nonce = base64.b64decode(json.loads(request.read())["nonce"])
        return httpx2.Response(200, json=asyncio.run(service.document(nonce)))

    return answer, answer_sync, calls


def test_concurrent_first_requests_share_one_identity_fetch() -> None:
    """The gateway rate-limits identity requests: callers that find no fresh key at once wait
    for one fetch and verification, from threads and from coroutines alike."""
    answer, answer_sync, calls = _slow_identity()
    source = AttestedKeySource("https://gw.example", PINNED,
                               async_transport=httpx2.MockTransport(answer))

    async def burst() -> list[Any]:
        return await asyncio.gather(*(source.akey_config() for _ in range(24)))

    configs = asyncio.run(burst())
    assert len(calls) == 1 and all(c == configs[0] for c in configs)

    calls.clear()
    threaded = AttestedKeySource("https://gw.example", PINNED,
                                 transport=httpx2.MockTransport(answer_sync))
    with ThreadPoolExecutor(8) as pool:
        found = list(pool.map(lambda _: threaded.key_config(), range(16)))
    assert len(calls) == 1 and all(c == found[0] for c in found)


def test_a_caller_that_gives_up_leaves_the_shared_fetch_running() -> None:
    """Cancelling one waiter neither cancels the fetch nor fails the others."""
    answer, _, calls = _slow_identity()
    source = AttestedKeySource("https://gw.example", PINNED,
                               async_transport=httpx2.MockTransport(answer))

    async def scenario() -> Any:
        quitter = asyncio.ensure_future(source.akey_config())
        stayer = asyncio.ensure_future(source.akey_config())
        await asyncio.sleep(0.01)
        quitter.cancel()
        return await stayer

    assert asyncio.run(scenario()) is not None and len(calls) == 1


def test_a_source_keeps_no_event_loop_it_fetched_on() -> None:
    """A shared source used from ``asyncio.run`` per call: each loop's fetch is forgotten once
    done, so closed loops (with their tasks) are not kept one per call."""
    answer, _, calls = _slow_identity()
    source = AttestedKeySource("https://gw.example", PINNED,
                               async_transport=httpx2.MockTransport(answer))
    for _ in range(5):
        assert asyncio.run(source.akey_config()) is not None
        source.invalidate()
    assert len(calls) == 5 and len(source._fetches) == 0


def _chunks(size: int, pause: float) -> Any:
    """Chunks of ``size`` bytes without end, ``pause`` seconds apart (a fault: an endless or
    trickling answer)."""
    while True:
        time.sleep(pause)
        yield b" " * size


def test_client_stops_reading_an_identity_answer_past_its_limit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The ingress answering the identity request is not trusted: an answer without end was
    read whole before it was refused (memory grew three times its size), and a forged refusal
    makes the client fetch again. Both clients stop at the limit, or at the deadline."""
    import proxy.client._keysource as keysource

    def endless(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=_chunks(1 << 20, 0))

    def declared(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=b"{}", headers={"content-length": str(1 << 40)})

    def trickle(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=_chunks(1, 0.05))

    async def aendless(request: httpx2.Request) -> httpx2.Response:
        async def chunks() -> Any:
            while True:
                await asyncio.sleep(0)
                yield b" " * (1 << 20)

        return httpx2.Response(200, content=chunks())

    monkeypatch.setattr(keysource, "IDENTITY_DEADLINE_S", 0.5)
    for handler, detail in ((endless, "larger than"), (declared, "larger than"),
                            (trickle, "did not arrive in time")):
        source = AttestedKeySource("https://gw.example", PINNED,
                                   transport=httpx2.MockTransport(handler))
        with pytest.raises(SealedTransportError) as info:
            source.key_config()
        assert info.value.code == "enclave_unverified" and detail in info.value.detail
    source = AttestedKeySource("https://gw.example", PINNED,
                               async_transport=httpx2.MockTransport(aendless))
    with pytest.raises(SealedTransportError) as info:
        asyncio.run(source.akey_config())
    assert "larger than" in info.value.detail


def test_sync_client_gives_up_on_identity_headers_that_trickle(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A server on loopback (a fault) that sends the identity answer's status line and then one
    header byte at a time, each well within the read timeout: the blocking client gives up at
    the fetch's deadline instead of waiting on it for ever, holding the lock every thread using
    the source waits on."""
    import proxy.client._keysource as keysource

    monkeypatch.setattr(keysource, "IDENTITY_DEADLINE_S", 0.5)
    stop = threading.Event()
    with socket.create_server(("127.0.0.1", 0)) as trickling:
        def serve() -> None:
            conn, _ = trickling.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                while not stop.is_set():
                    try:
                        conn.sendall(b"x")
                    except OSError:
                        return
                    time.sleep(0.05)

        threading.Thread(target=serve, daemon=True).start()
        source = AttestedKeySource(f"http://127.0.0.1:{trickling.getsockname()[1]}", PINNED,
                                   timeout=10.0)
        started = time.monotonic()
        try:
            with pytest.raises(SealedTransportError) as info:
                source.key_config()
        finally:
            stop.set()
    assert time.monotonic() - started < 5.0
    assert info.value.code == "enclave_unverified"
    assert "did not arrive in time" in info.value.detail


def test_an_enclave_accepted_insecurely_is_warned_about(monkeypatch: pytest.MonkeyPatch) -> None:
    """SEALGATE_ALLOW_SIMULATED left set where the SDK runs relaxes its default policy: the
    key source says so (a Python warning) instead of sealing to a simulated enclave quietly.
    A strict policy's acceptance warns nothing."""
    _, answer_sync, _ = _slow_identity()
    for name in ("SEALGATE_VERIFY_POLICY", "SEALGATE_ALLOW_ANY_MEASUREMENT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SEALGATE_ALLOWED_MEASUREMENTS", M)
    monkeypatch.setenv("SEALGATE_ALLOW_SIMULATED", "1")
    source = AttestedKeySource("https://gw.example", transport=httpx2.MockTransport(answer_sync))
    with pytest.warns(InsecureEnclaveWarning, match="INSECURE: simulated evidence accepted"):
        assert source.key_config() is not None
    strict = AttestedKeySource("https://gw.example", PINNED,
                               verify=lambda doc, policy, nonce: types.SimpleNamespace(
                                   key_configs=encode_key_configs([GatewayKey.generate(4).config]),
                                   notes=()),
                               transport=httpx2.MockTransport(answer_sync))
    with warnings.catch_warnings():
        warnings.simplefilter("error", InsecureEnclaveWarning)
        assert strict.key_config() is not None
