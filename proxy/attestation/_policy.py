"""What a client accepts: `VerificationPolicy` and its application to a verdict."""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ._errors import VerificationError
from ._verdict import EvidenceVerdict

__all__ = ["DEFAULT_TCB_STATUSES", "VerificationPolicy", "apply_policy"]

DEFAULT_TCB_STATUSES = frozenset(
    {"UpToDate", "SWHardeningNeeded", "ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded"}
)
_TRUE = {"1", "true", "yes", "on"}
_FLAGS = ("allow_simulated", "allow_debug", "allow_migration_agent", "allow_any_measurement",
          "require_tcb_status")
# A misspelt key must not quietly drop a check ("max_age" for "max_age_s" would accept evidence
# of any age): keys and platform names outside these are policy_invalid.
_KEYS = frozenset({"allowed_measurements", "release_manifest", "allowed_platforms",
                   "allowed_tcb_statuses", "max_age_s", "min_tcb", "required_claims", *_FLAGS})
_PLATFORMS = frozenset({"sev-snp", "tdx"})
# Fields beside the launch measurement that tell one workload from another on the same
# firmware or guest image (Kata puts its init-data digest in HOST_DATA; RTMRs extend the TD's
# boot chain): ``required_claims`` pins them, each to one value or a list of accepted values.
_INT_CLAIMS = frozenset({"vmpl", "guest_svn"})
_CLAIMS = {"sev-snp": frozenset({"host_data", "id_key_digest", *_INT_CLAIMS}),
           "tdx": frozenset({"mr_config_id", "mr_owner", "mr_seam",
                             "rtmr0", "rtmr1", "rtmr2", "rtmr3"})}


def _frozen(mapping: Mapping[str, Mapping[str, int]]) -> Mapping[str, Mapping[str, int]]:
    return MappingProxyType({k: MappingProxyType(dict(v)) for k, v in mapping.items()})


@dataclass(frozen=True)
class VerificationPolicy:
    """The conditions an enclave identity must meet; the defaults are the strict ones."""

    allowed_measurements: frozenset[str] = frozenset()
    """Accepted launch measurements (lower-case hex). Empty refuses every measurement unless
    `allow_any_measurement` is set (simulated evidence let in by `allow_simulated` is exempt)."""
    allow_any_measurement: bool = False
    """With an empty allowlist, accept any measurement (the verdict notes it). Anyone who can
    rent a genuine confidential VM can run their own code there, so this is for tests only."""
    allowed_platforms: frozenset[str] = frozenset({"sev-snp", "tdx"})
    """Accepted CPU platforms; ``simulated`` is governed by `allow_simulated` instead."""
    min_tcb: Mapping[str, Mapping[str, int]] = field(default_factory=lambda: _frozen({}))
    """Per platform, minimum TCB component versions, e.g. ``{"sev-snp": {"snp": 8}}``."""
    allowed_tcb_statuses: frozenset[str] = DEFAULT_TCB_STATUSES
    """Accepted vendor TCB statuses (TDX TCB info); ``Revoked`` is never accepted."""
    require_tcb_status: bool = True
    """Refuse TDX evidence verified without TCB collateral (``collateral_missing``)."""
    allow_simulated: bool = False
    """Accept the insecure simulated provider (development only)."""
    allow_debug: bool = False
    """Accept guests whose policy lets the host debug them."""
    allow_migration_agent: bool = False
    """Accept SEV-SNP guests whose policy allows a migration agent (MIGRATE_MA), which can
    export the guest's memory."""
    max_age_s: float | None = None
    """Refuse documents whose ``created`` time is older than this many seconds."""
    required_claims: Mapping[str, Mapping[str, frozenset[str | int]]] = field(
        default_factory=lambda: MappingProxyType({}))
    """Per platform, evidence fields beside the measurement and the values accepted for each,
    e.g. ``{"sev-snp": {"host_data": {"<hex>"}, "vmpl": {0}}}`` (``_CLAIMS`` names them)."""

    def check(self, verdict: EvidenceVerdict) -> list[str]:
        """Apply this policy to a verified piece of CPU evidence; see `apply_policy`."""
        return apply_policy(verdict, self)

    @classmethod
    def from_file(cls, path: str | Path) -> VerificationPolicy:
        """Load a JSON or TOML policy (see docs/attestation.md for the keys)."""
        path = Path(path)
        return cls.from_mapping(_read(path), base=path.parent)

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any], base: Path = Path()) -> VerificationPolicy:
        """Build from parsed JSON/TOML; a ``release_manifest`` adds its signed measurements."""
        unknown = sorted(str(k) for k in doc if k not in _KEYS)
        if unknown:
            raise VerificationError("policy_invalid", f"unknown policy key {unknown[0]!r}")
        try:
            measurements = {str(m).lower() for m in doc.get("allowed_measurements", [])}
            if "release_manifest" in doc:
                measurements |= _manifest_measurements(doc["release_manifest"], base)
            kwargs: dict[str, Any] = {"allowed_measurements": frozenset(measurements)}
            for name in ("allowed_platforms", "allowed_tcb_statuses"):
                if name in doc:
                    kwargs[name] = frozenset(str(x) for x in doc[name])
            for name in _FLAGS:
                if name in doc:
                    kwargs[name] = _flag(doc[name], name)
            if doc.get("max_age_s") is not None:
                kwargs["max_age_s"] = float(doc["max_age_s"])
                if math.isnan(kwargs["max_age_s"]):  # every comparison with NaN is false
                    raise ValueError("max_age_s is not a number")
            tcb = doc.get("min_tcb", {})
            kwargs["min_tcb"] = _frozen({p: {k: int(v) for k, v in c.items()}
                                         for p, c in tcb.items()})
            kwargs["required_claims"] = _required_claims(doc.get("required_claims", {}))
        except (TypeError, ValueError, AttributeError) as exc:
            raise VerificationError("policy_invalid", "a policy field has the wrong type") from exc
        named = {*kwargs.get("allowed_platforms", ()), *kwargs["min_tcb"]}
        if not named <= _PLATFORMS:
            raise VerificationError("policy_invalid", f"unknown platform {min(named - _PLATFORMS)!r} "
                                                      "(sev-snp or tdx)")
        return cls(**kwargs)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> VerificationPolicy:
        """``SEALGATE_VERIFY_POLICY`` (file), ``SEALGATE_ALLOWED_MEASUREMENTS`` (comma list),
        ``SEALGATE_ALLOW_SIMULATED`` and ``SEALGATE_ALLOW_ANY_MEASUREMENT`` (1/true)."""
        env = os.environ if env is None else env
        policy, doc = cls(), {}
        if env.get("SEALGATE_VERIFY_POLICY"):
            path = Path(env["SEALGATE_VERIFY_POLICY"])
            doc = _read(path)
            policy = cls.from_mapping(doc, base=path.parent)
        # The environment may tighten the file, never loosen what it forbids in so many words.
        for name in ("allow_simulated", "allow_any_measurement"):
            variable = f"SEALGATE_{name.upper()}"
            if doc.get(name) is False and _env_flag(env, variable, False):
                raise VerificationError("policy_invalid", f"{variable} contradicts "
                                                          f"{name} = false in the policy file")
        raw = env.get("SEALGATE_ALLOWED_MEASUREMENTS", "")
        listed = [m.strip().lower() for m in raw.split(",")]
        if any(listed):
            policy = replace(policy, allowed_measurements=policy.allowed_measurements
                             | {m for m in listed if m})
        return replace(
            policy,
            allow_simulated=_env_flag(env, "SEALGATE_ALLOW_SIMULATED", policy.allow_simulated),
            allow_any_measurement=_env_flag(env, "SEALGATE_ALLOW_ANY_MEASUREMENT",
                                            policy.allow_any_measurement),
        )


def _read(path: Path) -> dict[str, Any]:
    """A policy file's document: JSON, or TOML by its suffix."""
    try:
        text = path.read_text()
        doc = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except OSError as exc:
        raise VerificationError("policy_invalid",
                                f"cannot read policy {path} ({exc.strerror})") from exc
    except ValueError as exc:  # the parsers name a line and column, never the text
        kind = "TOML" if path.suffix == ".toml" else "JSON"
        raise VerificationError("policy_invalid", f"policy {path} is not {kind}: {exc}") from exc
    if not isinstance(doc, dict):
        raise VerificationError("policy_invalid", "policy must be an object")
    return doc


def _required_claims(doc: Mapping[str, Any]) -> Mapping[str, Mapping[str, frozenset[str | int]]]:
    """Parse ``required_claims``: hex fields as lower-case hex text, ``vmpl``/``guest_svn`` as
    integers; each a value or a non-empty list. An unknown field is ``policy_invalid``."""
    out: dict[str, Mapping[str, frozenset[str | int]]] = {}
    for platform, fields in doc.items():
        known = _CLAIMS.get(platform)
        if known is None:
            raise VerificationError("policy_invalid", f"unknown platform {platform!r} "
                                                      "(sev-snp or tdx)")
        parsed: dict[str, frozenset[str | int]] = {}
        for name, value in fields.items():
            if name not in known:
                raise VerificationError("policy_invalid", f"unknown {platform} claim {name!r} "
                                                          f"in required_claims")
            values = value if isinstance(value, list) else [value]
            if not values:
                raise ValueError("an empty list accepts nothing")
            if name in _INT_CLAIMS:
                if any(type(v) is not int for v in values):
                    raise TypeError(name)
                parsed[name] = frozenset(values)
            else:
                parsed[name] = frozenset(bytes.fromhex(str(v)).hex() for v in values)
        out[platform] = MappingProxyType(parsed)
    return MappingProxyType(out)


def _env_flag(env: Mapping[str, str], name: str, current: bool) -> bool:
    return env[name].strip().lower() in _TRUE if name in env else current


def _flag(value: object, name: str) -> bool:
    # bool("false") is True: only real JSON/TOML booleans are accepted.
    if not isinstance(value, bool):
        raise VerificationError("policy_invalid", f"{name} must be true or false")
    return value


def _manifest_measurements(spec: Mapping[str, Any], base: Path) -> set[str]:
    """Verify a signed release manifest (Ed25519 over the manifest file's exact bytes)."""
    try:
        manifest = (base / str(spec["path"])).read_bytes()
        sig_text = (base / str(spec["signature"])).read_bytes().strip()
        signature = base64.b64decode(sig_text, validate=True)
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(spec["publisher_key"]))
    except (KeyError, OSError, ValueError, binascii.Error) as exc:
        raise VerificationError("policy_invalid", "release manifest cannot be loaded") from exc
    try:
        key.verify(signature, manifest)
    except InvalidSignature as exc:
        raise VerificationError("manifest_signature_invalid",
                                "release manifest is not signed by the pinned publisher") from exc
    try:
        return {str(m["measurement"] if isinstance(m, dict) else m).lower()
                for m in json.loads(manifest)["measurements"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise VerificationError("policy_invalid", "release manifest has no measurements") from exc


def apply_policy(verdict: EvidenceVerdict, policy: VerificationPolicy) -> list[str]:
    """Raise on the first violated condition; return the notes the verdict should carry."""
    notes: list[str] = []
    if verdict.simulated:
        if not policy.allow_simulated:
            raise VerificationError("simulated_not_allowed", "evidence is simulated (insecure)")
        notes.append("INSECURE: simulated evidence accepted by policy")
    elif verdict.platform not in policy.allowed_platforms:
        raise VerificationError("platform_not_allowed", f"platform {verdict.platform} refused")
    if verdict.debug and not policy.allow_debug:
        raise VerificationError("debug_enabled", "the guest policy allows debugging")
    if verdict.migration_agent and not policy.allow_migration_agent:
        detail = "the guest policy allows a migration agent (MIGRATE_MA)"
        raise VerificationError("migration_agent_allowed", detail)
    _check_tcb(verdict, policy)
    _check_measurement(verdict, policy, notes)
    _check_claims(verdict, policy)
    return notes


def _check_claims(verdict: EvidenceVerdict, policy: VerificationPolicy) -> None:
    for name, accepted in policy.required_claims.get(verdict.platform, {}).items():
        value = _claim(verdict, name)
        if value is None:
            raise VerificationError("claim_not_allowed", f"the evidence reports no {name}")
        if value not in accepted:
            raise VerificationError("claim_not_allowed", f"{name} is not an accepted value")


def _claim(verdict: EvidenceVerdict, name: str) -> Any:
    """A claim by its policy name: ``rtmrN`` is the TDX claim ``rtmrs``' item N."""
    if not name.startswith("rtmr"):
        return verdict.claims.get(name)
    rtmrs, index = verdict.claims.get("rtmrs") or [], int(name[4:])
    return rtmrs[index] if index < len(rtmrs) else None


def _check_measurement(verdict: EvidenceVerdict, policy: VerificationPolicy,
                       notes: list[str]) -> None:
    if policy.allowed_measurements:
        if verdict.measurement.lower() not in policy.allowed_measurements:
            raise VerificationError("measurement_not_allowed", "measurement is not allow-listed")
        return
    # The simulated enclave's measurement means nothing; allow_simulated already let it in.
    if not (policy.allow_any_measurement or verdict.simulated):
        detail = "no measurement allowlist is configured (set allow_any_measurement to accept any)"
        raise VerificationError("measurement_not_allowed", detail)
    notes.append("no measurement allowlist: any measurement was accepted")


def _check_tcb(verdict: EvidenceVerdict, policy: VerificationPolicy) -> None:
    for name, minimum in policy.min_tcb.get(verdict.platform, {}).items():
        if name not in verdict.tcb:
            raise VerificationError("policy_invalid", f"unknown TCB component {name!r}")
        if verdict.tcb[name] < minimum:
            detail = f"TCB {name} is {verdict.tcb[name]}, policy needs {minimum}"
            raise VerificationError("tcb_below_minimum", detail)
    if verdict.platform != "tdx":
        return
    if verdict.tcb_status is None:
        if policy.require_tcb_status:
            raise VerificationError("collateral_missing", "TDX TCB status was not evaluated")
        return
    if verdict.tcb_status == "Revoked":
        raise VerificationError("tcb_revoked", "TCB is revoked")
    if verdict.tcb_status not in policy.allowed_tcb_statuses:
        raise VerificationError("tcb_status_not_allowed", f"TCB status {verdict.tcb_status}")
