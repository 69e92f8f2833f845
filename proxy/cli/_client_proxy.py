"""``sealgate client-proxy``: seal any OpenAI client's traffic through a local forwarder."""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

from proxy.attestation import VerificationError, VerificationPolicy, load_collateral
from proxy.client import (
    AttestedKeySource,
    InsecureEnclaveWarning,
    KeySource,
    SealedTransportError,
    StaticKeySource,
    serve_client_proxy,
)
from proxy.client._forwarder import check_loopback, gateway_urls

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "client-proxy",
        help="local plain-HTTP forwarder that seals every request to a verified enclave",
        description=(
            "Listen on loopback for plain OpenAI-compatible HTTP and forward every request "
            "sealed (Oblivious HTTP) to a Sealgate gateway whose identity was verified first."
        ),
    )
    parser.add_argument("--gateway", required=True, help="Sealgate base URL, e.g. https://host")
    parser.add_argument("--listen", default="127.0.0.1:8787", help="loopback HOST:PORT")
    parser.add_argument(
        "--allow-simulated",
        action="store_true",
        help="accept a simulated (insecure, development) enclave identity",
    )
    parser.add_argument(
        "--allow-any-measurement",
        action="store_true",
        help="accept any enclave launch measurement when the policy lists none (testing only)",
    )
    parser.add_argument(
        "--policy",
        type=Path,
        help="verification policy file (allowed measurements, platforms, minimum TCB)",
    )
    parser.add_argument(
        "--collateral",
        type=Path,
        metavar="DIR",
        help="platform collateral for verifying the identity (TDX TCB info, QE identity, CRLs; "
             "SEV-SNP certificates), see docs/attestation.md",
    )
    parser.add_argument(
        "--key-config",
        type=Path,
        help="pin this application/ohttp-keys file instead of verifying attestation (testing)",
    )
    parser.set_defaults(func=run)


def _key_source(args: argparse.Namespace) -> KeySource:
    if args.key_config is not None:
        ignored = [flag for flag, given in (("--policy", args.policy), ("--collateral", args.collateral),
                                            ("--allow-simulated", args.allow_simulated),
                                            ("--allow-any-measurement", args.allow_any_measurement))
                   if given]
        print("sealgate client-proxy: WARNING: the key is pinned from --key-config; the enclave's "
              "identity is not verified" + (f" ({', '.join(ignored)} ignored)" if ignored else ""),
              file=sys.stderr)
        return StaticKeySource(args.key_config.read_bytes())
    origin, _ = gateway_urls(args.gateway)
    # What the policy lets through is said once, here (_warn), not again on each verification.
    warnings.simplefilter("ignore", InsecureEnclaveWarning)
    policy = VerificationPolicy.from_file(args.policy) if args.policy else VerificationPolicy.from_env()
    if args.allow_simulated:
        policy = replace(policy, allow_simulated=True)
    if args.allow_any_measurement:
        policy = replace(policy, allow_any_measurement=True)
    _warn(policy)
    return AttestedKeySource(origin, policy, collateral=load_collateral(args.collateral))


def _warn(policy: VerificationPolicy) -> None:
    """Say on stderr what this policy lets through that a production client must not."""
    if policy.allow_simulated:
        print("sealgate client-proxy: WARNING: simulated (insecure) enclave evidence is accepted",
              file=sys.stderr)
    if policy.allow_any_measurement and not policy.allowed_measurements:
        print("sealgate client-proxy: WARNING: any enclave measurement is accepted (no allowlist)",
              file=sys.stderr)


def _check_enclave(key_source: KeySource) -> None:
    """Verify the enclave once before serving and say how it went: a refusal otherwise showed
    only as each request's 503. The forwarder serves either way, and verifies again on the
    next request (the gateway may be starting)."""
    if not isinstance(key_source, AttestedKeySource):
        return
    try:
        key_source.key_config()
    except SealedTransportError as exc:
        print(f"sealgate client-proxy: WARNING: the enclave is not verified ({exc.detail}); "
              "requests are answered 503 enclave_unverified until it is", file=sys.stderr)
        return
    verified = key_source.verified
    print(f"sealgate client-proxy: enclave verified: {verified.platform}, measurement "
          f"{verified.measurement}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    host, _, port = args.listen.rpartition(":")
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        print(f"sealgate client-proxy: --listen needs HOST:PORT with a port from 1 to 65535, "
              f"not {args.listen!r}", file=sys.stderr)
        return 2
    try:
        check_loopback(host.strip("[]"))
        gateway_urls(args.gateway)
        key_source = _key_source(args)
        _check_enclave(key_source)

        def listening() -> None:
            print(f"sealgate client-proxy: listening on http://{args.listen}/v1, sealing to "
                  f"{args.gateway}", file=sys.stderr, flush=True)

        serve_client_proxy(args.gateway, key_source, host=host.strip("[]"), port=int(port),
                           on_listening=listening)
    except (ValueError, OSError, SealedTransportError, VerificationError) as exc:
        print(f"sealgate client-proxy: {exc}", file=sys.stderr)
        return 2
    return 0
