"""``sealgate client-proxy`` argument handling (the forwarder itself is tested end to end)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from proxy.cli import _client_proxy


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    _client_proxy.register(parser.add_subparsers())
    return parser.parse_args(["client-proxy", *argv])


def test_defaults() -> None:
    args = _parse("--gateway", "https://sealgate.example")
    assert args.listen == "127.0.0.1:8787"
    assert args.allow_simulated is False and args.key_config is None
    assert args.func is _client_proxy.run


def test_refuses_non_loopback_listen(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from proxy.gateway import KeyManager

    pinned = tmp_path / "keys.bin"
    pinned.write_bytes(KeyManager().key_configs())
    args = _parse("--gateway", "http://x", "--listen", "0.0.0.0:8787", "--key-config", str(pinned))
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert "loopback" in err and "listening" not in err  # refused before it says it listens


@pytest.mark.parametrize("gateway", ["notaurl", "ftp://x", "http://h:port", "https://h/?q=1",
                                     "http://user@h", "http:///path"])
def test_refuses_a_gateway_that_is_no_http_url(gateway: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Refused at the start, not answered 503 enclave_unverified on every request after."""
    args = _parse("--gateway", gateway)
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert "must be an http(s)://host[:port] URL" in err and "listening" not in err


def test_rejects_a_bad_pinned_key_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pinned = tmp_path / "keys.bin"
    pinned.write_bytes(b"\x00\x01")
    args = _parse("--gateway", "http://x", "--key-config", str(pinned))
    assert args.func(args) == 2
    assert "enclave_unverified" in capsys.readouterr().err


@pytest.mark.parametrize(("flags", "warned"), [
    ((), []),
    (("--allow-any-measurement",), ["any enclave measurement"]),
    (("--allow-simulated",), ["simulated (insecure)"]),
])
def test_warns_about_permissive_policy(monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str],
                                       flags: tuple[str, ...], warned: list[str]) -> None:
    for name in ("SEALGATE_VERIFY_POLICY", "SEALGATE_ALLOWED_MEASUREMENTS",
                 "SEALGATE_ALLOW_SIMULATED", "SEALGATE_ALLOW_ANY_MEASUREMENT"):
        monkeypatch.delenv(name, raising=False)
    args = _parse("--gateway", "https://sealgate.example", *flags)
    source = _client_proxy._key_source(args)
    assert source._policy.allow_any_measurement == ("--allow-any-measurement" in flags)
    err = capsys.readouterr().err
    assert [w for w in ("any enclave measurement", "simulated (insecure)") if w in err] == warned
    assert all("WARNING" in line for line in err.splitlines())


def test_collateral_folder_reaches_the_verifier(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from proxy.attestation import Collateral

    folder = tmp_path / "collateral"
    folder.mkdir()
    (folder / "pck_crl.der").write_bytes(b"crl bytes")
    source = _client_proxy._key_source(_parse("--gateway", "https://x", "--collateral", str(folder)))
    assert source._collateral == Collateral.from_dir(folder)
    assert source._collateral.pck_crl == b"crl bytes"
    missing = _parse("--gateway", "https://x", "--collateral", str(tmp_path / "nowhere"))
    assert missing.func(missing) == 2
    err = capsys.readouterr().err
    assert "cannot read the collateral folder" in err and "Traceback" not in err


def test_a_pinned_key_says_that_nothing_is_verified(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """``--key-config`` skips attestation: said on stderr, with the verification flags it
    makes moot."""
    from proxy.gateway import KeyManager

    pinned = tmp_path / "keys.bin"
    pinned.write_bytes(KeyManager().key_configs())
    args = _parse("--gateway", "http://x", "--key-config", str(pinned), "--allow-simulated")
    _client_proxy._key_source(args)
    err = capsys.readouterr().err
    assert err.startswith("sealgate client-proxy: WARNING: the key is pinned from --key-config")
    assert "identity is not verified (--allow-simulated ignored)" in err


def test_a_port_already_taken_is_one_line_and_no_banner(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """It said it listened, then uvicorn printed its own error; now one line, exit 2."""
    import socket

    from proxy.gateway import KeyManager

    pinned = tmp_path / "keys.bin"
    pinned.write_bytes(KeyManager().key_configs())
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        args = _parse("--gateway", "http://127.0.0.1:1", "--listen", f"127.0.0.1:{port}",
                      "--key-config", str(pinned))
        assert args.func(args) == 2
    err = capsys.readouterr().err
    assert "listening" not in err
    assert err.splitlines()[-1] == (f"sealgate client-proxy: cannot listen on 127.0.0.1:{port} "
                                    "(address already in use)")


def test_an_enclave_that_does_not_verify_at_start_is_said_then_served(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Checked once before serving: a refusal said at start, not only as each request's 503."""
    import socket

    from proxy.client import AttestedKeySource

    with socket.create_server(("127.0.0.1", 0)) as probe:
        dead = probe.getsockname()[1]
    _client_proxy._check_enclave(AttestedKeySource(f"http://127.0.0.1:{dead}", timeout=2.0))
    err = capsys.readouterr().err
    assert err.startswith("sealgate client-proxy: WARNING: the enclave is not verified "
                          "(identity endpoint unreachable: ConnectError)")
    assert err.endswith("requests are answered 503 enclave_unverified until it is\n")
