"""Policy bundles: Rego modules and contract data from one directory, and their digest.

A bundle directory holds ``rego/`` (``*.rego``; ``*_test.rego`` are unit tests) and ``data/``
(``*.yaml``, ``*.yml``, ``*.json``). A data file's top-level object is mounted at the data path
named by its directory below ``data/`` (``data/contracts.yaml`` at the root, ``data/a/b/x.json``
at ``data.a.b``), which is how ``opa run`` loads the same directory.

Digest (docs/policy.md, "Bundle digest"): SHA-256 over the ``sha256sum``-style listing of every
bundle file, one line ``<hex sha256 of file>  <path relative to the bundle root>\\n`` per file,
sorted by the UTF-8 bytes of the path, written ``sha256:<hex>``. A path must be printable UTF-8
(no newline or other control character, no backslash), so each listing has exactly one reading
and every bundle file can be kept in an evidence bundle. Paths with a
component starting with ``.`` are not part of the bundle (OPA ignores them too).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from ._errors import PolicyBundleError
from ._input import is_instant

__all__ = ["TENANT_NAME", "PolicyBundle", "bundle_digest", "contract_owner", "listing_digest",
           "load_bundle"]

_DATA_SUFFIXES = (".yaml", ".yml", ".json")
# Contract expiry: a whole minute. The gateway gives the policy its time at minute resolution
# (truncated), which then decides "before the expiry instant" exactly.
_EXPIRY_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:00Z")
# Contract fields and their types (policy/data/contracts.yaml documents each one).
_CONTRACT_FIELDS: Mapping[str, type | tuple[type, ...]] = {
    "models": list,
    "regions": list,
    "max_tokens": int,
    "max_n": int,
    "allow_streaming": bool,
    "allow_contractual_zero": bool,
    "rewrite_store": bool,
}
# Optional contract fields the gateway enforces itself (not the policy): the tenant's request
# limits, each a count (0: no limit), overriding the gateway's setting of the same meaning.
LIMIT_FIELDS = ("max_concurrent_requests", "requests_per_minute", "tokens_per_minute")
_LIMIT_MAX = 10**9


@dataclass(frozen=True, slots=True)
class PolicyBundle:
    """Policy modules, their unit tests and the merged data document, with the digest."""

    root: Path
    modules: Mapping[str, str]
    """Relative path → Rego source, for policy modules (tests excluded)."""
    tests: Mapping[str, str]
    """Relative path → Rego source, for ``*_test.rego`` modules."""
    data: Mapping[str, Any]
    """The merged data document."""
    files: Mapping[str, bytes]
    """Relative path → the exact bytes of every bundle file, as digested."""
    digest: str
    """``sha256:<hex>`` over the file listing (module docstring)."""

    def contract(self, tenant_name: str) -> Mapping[str, Any]:
        """The tenant's contract, or ``default`` for a tenant without one (as the policy looks
        it up)."""
        contracts: Mapping[str, Mapping[str, Any]] = self.data["contracts"]
        found = contracts.get(tenant_name)
        return found if found is not None else contracts["default"]


def default_bundle_dir() -> Path:
    return Path(__file__).resolve().parent


def _walk(directory: Path, ancestors: frozenset[tuple[int, int]] = frozenset()) -> list[Path]:
    """Every file below ``directory``, following symbolic links as ``find -L`` does (a bundle
    mounted from a Kubernetes ConfigMap is a tree of links, directories included). Hidden names
    are not part of a bundle, as for `opa run --ignore=.*`: what is digested (and attested) is
    exactly what either engine evaluates. A link back into its own ancestry is refused."""
    info = directory.stat()
    here = (info.st_dev, info.st_ino)
    if here in ancestors:
        raise PolicyBundleError(f"bundle folder {directory.name!a} links back into itself")
    found: list[Path] = []
    with os.scandir(directory) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                found += _walk(Path(entry.path), ancestors | {here})
            elif entry.is_file():
                found.append(Path(entry.path))
    return found


def _bundle_files(root: Path) -> list[Path]:
    rego_all = sorted(_walk(root / "rego")) if (root / "rego").is_dir() else []
    data_all = sorted(_walk(root / "data")) if (root / "data").is_dir() else []
    # OPA loads policy and data files from both folders alike; this gateway loads (and digests)
    # modules from rego/ and data from data/ only. A file where the other kind belongs would be
    # evaluated by OPA alone, undigested (a JSON file in rego/ could even replace contracts).
    stray = [p for p in rego_all if p.suffix in _DATA_SUFFIXES]
    stray += [p for p in data_all if p.suffix == ".rego"]
    if stray:
        raise PolicyBundleError(f"bundle file {stray[0].relative_to(root).as_posix()!a} is in the "
                                "wrong folder: modules go in rego/, data in data/")
    return ([p for p in rego_all if p.suffix == ".rego"]
            + [p for p in data_all if p.suffix in _DATA_SUFFIXES])


def bundle_digest(contents: Mapping[str, bytes]) -> str:
    """Digest of ``relative path → file bytes`` (module docstring)."""
    return listing_digest({rel: hashlib.sha256(raw).hexdigest() for rel, raw in contents.items()})


def listing_digest(hashes: Mapping[str, str]) -> str:
    """Digest of ``relative path → hex SHA-256 of the file``: what ``bundle_digest`` computes,
    for a reader that holds some files by their hashes only (an evidence bundle that withholds
    other tenants' contracts)."""
    for rel, hexdigest in hashes.items():
        # A newline in a path could forge listing lines: two bundles, one digest.
        # A backslash could not be carried to an auditor: archives refuse it as a separator.
        if not rel.isprintable() or "\\" in rel:
            raise PolicyBundleError(f"bundle file name {rel!a} is not printable UTF-8 "
                                    "without backslashes")
        if not _HEX_SHA256.fullmatch(hexdigest):
            raise PolicyBundleError(f"bundle file {rel!a} has no SHA-256 hash")
    listing = b"".join(hashes[rel].encode() + b"  " + rel.encode() + b"\n"
                       for rel in sorted(hashes, key=str.encode))
    return "sha256:" + hashlib.sha256(listing).hexdigest()


_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")
_CONTRACTS_DIR = "data/contracts/"


def contract_owner(rel: str, content: bytes | None = None) -> str | None:
    """The tenant whose contract, and nothing else, bundle file ``rel`` holds: any file below
    ``data/contracts/acme/`` (it mounts at ``data.contracts.acme``), or ``data/contracts/acme.yaml``
    when its ``content`` holds the contract ``acme`` only. ``None`` for every other file, the
    ``default`` contract's included: a tenant without a contract is held to it. Without
    ``content``, whether the path can be such a file (what a reader of a file's hash only
    can check)."""
    if not rel.startswith(_CONTRACTS_DIR):
        return None
    first, sep, _ = rel.removeprefix(_CONTRACTS_DIR).partition("/")
    name = first if sep else next((first.removesuffix(s) for s in _DATA_SUFFIXES
                                   if first.endswith(s)), "")
    if not TENANT_NAME.fullmatch(name) or name == "default":
        return None
    if sep or content is None:
        return name
    try:
        doc = _parse_data(Path(rel), content)
    except PolicyBundleError:
        return None
    return name if set(doc) == {name} else None


def _parse_data(path: Path, raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
        doc = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError, yaml.YAMLError) as exc:
        raise PolicyBundleError(f"cannot parse data file {path.name}") from exc
    if not isinstance(doc, dict):
        raise PolicyBundleError(f"data file {path.name} must hold an object")
    try:  # YAML also has dates, binary and non-finite numbers; the engines take JSON only
        json.dumps(doc, allow_nan=False)
        # json.dumps writes a YAML key `no` (false), `1` or `null` as a string, so the engines
        # would look the key up as "false" while the file reads `no`.
        _check_keys(doc)
    except (TypeError, ValueError, RecursionError) as exc:
        raise PolicyBundleError(f"data file {path.name} holds a value that is not JSON "
                                "(quote dates and times, and keys such as no, on or 1)") from exc
    return doc


def _check_keys(value: Any) -> None:
    """Refuse an object key that is not a string (JSON has no others)."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if not isinstance(key, str):
                raise TypeError(f"object key {key!r} is not a string")
            _check_keys(inner)
    elif isinstance(value, list):
        for inner in value:
            _check_keys(inner)


def _merge(into: dict[str, Any], doc: Mapping[str, Any], where: str) -> None:
    for key, value in doc.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value, f"{where}.{key}")
        elif key in into:
            raise PolicyBundleError(f"data files conflict at {where}.{key}")
        else:
            into[key] = value


def _mount(data: dict[str, Any], rel_dir: tuple[str, ...], doc: dict[str, Any]) -> None:
    node = data
    for part in rel_dir:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise PolicyBundleError(f"data files conflict at data.{'.'.join(rel_dir)}")
    _merge(node, doc, "data" + "".join(f".{p}" for p in rel_dir))


TENANT_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
"""What a tenant may be named (``fullmatch``): the tenant store's rule, and the rule for the
contracts looked up by those names."""


def _check_contracts(data: Mapping[str, Any]) -> None:
    contracts = data.get("contracts")
    if not isinstance(contracts, Mapping) or "default" not in contracts:
        raise PolicyBundleError("bundle data must hold contracts with a default contract")
    for name, contract in contracts.items():
        # A contract under a name no tenant can have (``Acme-Health``) would never apply: its
        # tenant would fall back to ``default``, which may allow more.
        if not (isinstance(name, str) and TENANT_NAME.fullmatch(name)):
            raise PolicyBundleError(f"contract {name!r} is not named as a tenant can be "
                                    "(1-63 characters: a-z 0-9 _ . -, starting with a letter or digit)")
        if not isinstance(contract, Mapping):
            raise PolicyBundleError(f"contract {name} must be an object")
        for key, kind in _CONTRACT_FIELDS.items():
            value = contract.get(key)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise PolicyBundleError(f"contract {name}: {key} is missing or mistyped")
        for key in LIMIT_FIELDS:
            value = contract.get(key, 0)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _LIMIT_MAX:
                raise PolicyBundleError(f"contract {name}: {key} must be a whole number from 0 "
                                        f"to {_LIMIT_MAX}")
        expires = contract.get("expires")
        if expires is not None and not (isinstance(expires, str) and _EXPIRY_RE.fullmatch(expires)
                                        and is_instant(expires)):
            raise PolicyBundleError(f"contract {name}: expires must be a whole minute, "
                                    "YYYY-MM-DDTHH:MM:00Z")


def load_bundle(path: str | Path | None = None) -> PolicyBundle:
    """Load a bundle directory (default: the policies shipped in this package)."""
    try:  # a symlink loop is a RuntimeError in Python 3.11
        root = Path(path).resolve() if path is not None else default_bundle_dir()
    except (OSError, RuntimeError) as exc:
        raise PolicyBundleError(f"cannot resolve bundle directory {path}") from exc
    if not (root / "rego").is_dir():
        raise PolicyBundleError(f"bundle directory {root} has no rego/ folder")
    # Each file is read once: the digest and the parsed bundle describe the same bytes.
    try:
        contents = {f.relative_to(root).as_posix(): f.read_bytes() for f in _bundle_files(root)}
    except OSError as exc:
        raise PolicyBundleError(f"cannot read bundle directory {root}") from exc
    digest = bundle_digest(contents)
    modules: dict[str, str] = {}
    tests: dict[str, str] = {}
    data: dict[str, Any] = {}
    for rel, raw in contents.items():
        file = Path(rel)
        if file.suffix == ".rego":
            target = tests if file.name.endswith("_test.rego") else modules
            try:
                target[rel] = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise PolicyBundleError(f"module {rel} is not UTF-8") from exc
            # rego-cpp reads a module up to its first NUL: the rules after one would be
            # digested (and read by an auditor) but never evaluated.
            if "\x00" in target[rel]:
                raise PolicyBundleError(f"module {rel} contains a NUL character")
        else:
            _mount(data, file.parent.parts[1:], _parse_data(file, raw))
    if not modules:
        raise PolicyBundleError(f"bundle directory {root} has no policy modules")
    _check_contracts(data)
    return PolicyBundle(
        root=root,
        modules=MappingProxyType(modules),
        tests=MappingProxyType(tests),
        data=MappingProxyType(data),
        files=MappingProxyType(contents),
        digest=digest,
    )
