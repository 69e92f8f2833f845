"""Typed, explicit configuration: one frozen settings object from TOML plus ``SEALGATE_*``.

Precedence: built-in defaults < TOML file (``sealgate serve --config F``) < environment.
Every field has a docstring; :meth:`Settings.redacted` is what ``sealgate config show`` prints.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import msgspec
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from audit import IDENTIFIER, check_note_name
from inference import LlamaCppConfig, ModelRoute, OpenAIConfig, RetentionTier, VLLMConfig
from policy import OPAEngine, PolicyError
from proxy.errors import ConfigError

__all__ = ["OTHER_VARIABLES", "BackendSettings", "Settings", "ignored_variables"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_SECRET_WORDS = ("password", "passwd", "secret", "token", "api_key", "apikey", "credential")
# URL query parameters shown as they are: settings known to hold no credential. Any other
# value is masked (providers name their keys freely: ?key=, ?sig=, ?subscription-key=, ...).
_PLAIN_QUERY = frozenset({"sslmode", "synchronous", "connect_timeout", "application_name",
                          "target_session_attrs", "api-version", "mode", "cache"})
_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_EVIDENCE_PROVIDERS = ("simulated", "configfs-tsm", "sev-guest", "auto")
_REGION = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_INTEGER = re.compile(r"[+-]?[0-9]+")  # ASCII only: int() also reads other scripts' digits


@dataclass(frozen=True, slots=True)
class BackendSettings:
    """One configured backend: its kind and the kind's own settings."""

    kind: str
    """``llamacpp``, ``openai`` or ``vllm``."""
    options: LlamaCppConfig | OpenAIConfig | VLLMConfig
    """Settings of that kind."""


def _default_backends() -> dict[str, BackendSettings]:
    return {"local": BackendSettings("llamacpp", LlamaCppConfig())}


def _default_models() -> dict[str, ModelRoute]:
    name = "SmolLM2-135M-Instruct"
    return {name: ModelRoute(name, "local", RetentionTier.ATTESTED_ZERO)}


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything ``sealgate serve`` needs; built by :meth:`load` / :meth:`from_env`."""

    host: str = "127.0.0.1"
    """Listen address (``SEALGATE_HOST``)."""
    port: int = 8080
    """Listen port (``SEALGATE_PORT``)."""
    data_dir: Path = Path("var")
    """State directory: tenant database, audit log, keys (``SEALGATE_DATA_DIR``)."""
    allow_plaintext: bool = False
    """Development only: serve content endpoints without the sealed channel; every decision
    and record then says so (``SEALGATE_ALLOW_PLAINTEXT``)."""
    max_body_bytes: int = 1 << 20
    """Largest request body accepted (``SEALGATE_MAX_BODY_BYTES``)."""
    tenant_max_concurrent: int = 0
    """Requests to chat, completions and embeddings one tenant may have in flight at once;
    past it a request is refused with 429 ``concurrency_limit_exceeded`` and ``Retry-After``.
    0 means no limit (``SEALGATE_TENANT_MAX_CONCURRENT``)."""
    tenant_requests_per_minute: int = 0
    """Requests to chat, completions and embeddings one tenant may start in any minute (a
    burst of that many, then evenly refilled); past it, 429 ``rate_limit_exceeded`` with the
    seconds to wait in ``Retry-After``. 0 means no limit (``SEALGATE_TENANT_REQUESTS_PER_MINUTE``)."""
    tenant_tokens_per_minute: int = 0
    """Prompt and completion tokens one tenant's requests may use in any minute (counted when
    each request ends; a burst of that many, then evenly refilled); once used up, 429
    ``token_rate_limit_exceeded`` with the seconds to wait in ``Retry-After``. 0 means no limit
    (``SEALGATE_TENANT_TOKENS_PER_MINUTE``)."""
    deployment_mode: str = "development"
    """``development`` or ``production``; production refuses simulated or debug enclaves
    (``SEALGATE_DEPLOYMENT_MODE``)."""
    region: str = "local"
    """Region this deployment runs in, for data-residency rules (``SEALGATE_REGION``)."""
    log_level: str = "info"
    """Minimum log level (``SEALGATE_LOG_LEVEL``)."""
    replay_window_s: int = 60
    """Accepted clock skew of a sealed request's ``Date`` (``SEALGATE_REPLAY_WINDOW_S``)."""
    replay_max_entries: int = 1_000_000
    """Sealed requests remembered for replay protection at once; a tenant may hold a quarter of
    them, requests without a valid API key a sixteenth together (``SEALGATE_REPLAY_MAX_ENTRIES``)."""
    policy_engine: str = "regopy"
    """``regopy`` (embedded) or ``opa`` (server) (``SEALGATE_POLICY_ENGINE``)."""
    policy_bundle: str = ""
    """Policy bundle directory; empty means the bundle shipped in the package
    (``SEALGATE_POLICY_BUNDLE``)."""
    opa_url: str = "http://127.0.0.1:8181"
    """OPA server for engine ``opa`` (``SEALGATE_OPA_URL``)."""
    policy_timeout_ms: int = 250
    """A decision slower than this fails closed (``SEALGATE_POLICY_TIMEOUT_MS``)."""
    database_url: str = ""
    """Tenants, API keys and dashboard accounts; empty means SQLite under the data directory.
    Replicas in a cluster share one PostgreSQL URL (``SEALGATE_DATABASE_URL``)."""
    audit_sync: str = "normal"
    """SQLite durability of audit appends: ``normal`` (WAL; a returned append survives a crash
    of the process, fsync off the request path) or ``full`` (fsync per group commit; survives
    power loss, adds one fsync to every request) (``SEALGATE_AUDIT_SYNC``)."""
    log_origin: str = "sealgate.local/audit"
    """Origin line of the transparency log's checkpoints; one per replica in a cluster
    (``SEALGATE_LOG_ORIGIN``)."""
    policy_reload_s: int = 5
    """Poll interval for a policy bundle directory; 0 disables hot reload
    (``SEALGATE_POLICY_RELOAD_S``)."""
    ohttp_key_rotation_s: int = 86400
    """Rotate the OHTTP key this often (the previous key stays valid for an hour); 0 never
    rotates (``SEALGATE_OHTTP_KEY_ROTATION_S``)."""
    audit_url: str = ""
    """Audit database URL; empty means SQLite under the data directory; PostgreSQL as
    ``postgresql+psycopg://…`` (``SEALGATE_AUDIT_URL``)."""
    checkpoint_every_n: int = 256
    """Publish a checkpoint after this many new leaves (``SEALGATE_CHECKPOINT_EVERY_N``)."""
    checkpoint_every_ms: int = 1000
    """…or after this many milliseconds with new leaves (``SEALGATE_CHECKPOINT_EVERY_MS``)."""
    evidence_provider: str = "simulated"
    """``simulated``, ``configfs-tsm``, ``sev-guest`` or ``auto`` (``SEALGATE_EVIDENCE_PROVIDER``)."""
    sev_guest_certs: str = ""
    """Folder with the VCEK/VLEK and ASK/ARK certificates (PEM or DER) that the ``sev-guest``
    provider attaches to its reports; the ioctl returns none (``SEALGATE_SEV_GUEST_CERTS``)."""
    release_measurement: str = ""
    """Measurement of this release as published in the release manifest
    (``SEALGATE_RELEASE_MEASUREMENT``); the simulated provider reports it."""
    collateral_dir: str = ""
    """Folder with Intel TDX collateral (as for ``evidence verify --collateral``) that the
    dashboard uses to check the TCB status of this gateway's own identity documents
    (``SEALGATE_COLLATERAL_DIR``); without it that status is shown as not checked."""
    session_secret: str = ""
    """Dashboard session signing secret; empty means one generated and kept in the data
    directory (``SEALGATE_SESSION_SECRET``)."""
    trusted_proxies: str = "127.0.0.1,::1"
    """Comma-separated addresses or networks (CIDR) of the load balancers or ingress in front
    of the gateway, whose ``X-Forwarded-For`` and ``X-Forwarded-Proto`` are believed: the
    per-address limits (dashboard sign-in, identity nonces) then count each client, not the
    proxy they all come through. Empty trusts no one (``SEALGATE_TRUSTED_PROXIES``)."""
    backends: Mapping[str, BackendSettings] = field(default_factory=_default_backends)
    """Configured backends by name (TOML ``[backends.NAME]``)."""
    models: Mapping[str, ModelRoute] = field(default_factory=_default_models)
    """Model routes by public name (TOML ``[models."NAME"]``)."""

    # -- named constructors -------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
        """Defaults, then the TOML file (if given), then ``SEALGATE_*`` variables."""
        doc: dict[str, Any] = {}
        if path is not None:
            try:
                doc = tomllib.loads(Path(path).read_text())
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"cannot read config {path}: {exc}") from exc
            except UnicodeDecodeError:
                raise ConfigError(f"cannot read config {path}: not UTF-8 text") from None
        return cls._from_mapping(doc, os.environ if env is None else env)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Defaults plus ``SEALGATE_*`` variables; ``SEALGATE_CONFIG`` names a TOML file."""
        env = os.environ if env is None else env
        return cls.load(env.get("SEALGATE_CONFIG") or None, env)

    @classmethod
    def _from_mapping(cls, doc: dict[str, Any], env: Mapping[str, str]) -> Settings:
        doc = dict(doc)
        backends = _parse_backends(doc.pop("backends", None))
        models = _parse_models(doc.pop("models", None), backends or _default_backends())
        simple = {f.name: f for f in dataclasses.fields(cls) if f.name not in ("backends", "models")}
        unknown = set(doc) - set(simple)
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(sorted(unknown))}")
        _refuse_misspelt(env, simple)
        values: dict[str, Any] = {}
        for name, f in simple.items():
            raw = env.get(f"SEALGATE_{name.upper()}")
            if raw is not None:
                values[name] = _coerce(name, f.default, raw)
            elif name in doc:
                values[name] = _coerce(name, f.default, doc[name])
        if backends:
            values["backends"] = backends
        if models:
            values["models"] = models
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.deployment_mode not in ("development", "production"):
            raise ConfigError("deployment_mode must be 'development' or 'production'")
        if self.policy_engine not in ("regopy", "opa"):
            raise ConfigError("policy_engine must be 'regopy' or 'opa'")
        if self.audit_sync not in ("normal", "full"):
            raise ConfigError("audit_sync must be 'normal' or 'full'")
        if self.log_level not in _LOG_LEVELS:
            raise ConfigError(f"log_level must be one of {', '.join(_LOG_LEVELS)}")
        if self.session_secret and len(self.session_secret) < 32:  # guessable from one cookie
            raise ConfigError("session_secret must be at least 32 characters (or empty: one is "
                              "generated)")
        if not self.host.strip():  # uvicorn would listen on every interface
            raise ConfigError("host must not be empty")
        if any(c.isspace() for c in self.host):  # it started, then failed to bind
            raise ConfigError("host must not contain spaces")
        if self.evidence_provider.strip() not in _EVIDENCE_PROVIDERS:
            raise ConfigError(f"evidence_provider must be one of {', '.join(_EVIDENCE_PROVIDERS)}")
        if self.evidence_provider.strip() != "simulated" and not self.release_measurement.strip():
            # On hardware the identity document must state the evidence's measurement, or
            # start-up fails (measurement_mismatch): say so before anything starts.
            raise ConfigError("release_measurement must be set (the measurement published in "
                              "the release manifest) with a hardware evidence provider")
        if self.deployment_mode == "production" and self.allow_plaintext:
            # The policy ignores the flag in production (every plaintext request is denied):
            # a setting that cannot take effect is a mistake to say at start.
            raise ConfigError("allow_plaintext is for development only; it cannot be set with "
                              "deployment_mode = 'production'")
        try:
            check_note_name(self.log_origin)
        except ValueError:
            raise ConfigError("log_origin must be non-empty, at most 255 bytes, with no spaces, "
                              "'+' or control characters") from None
        for name, low, high in _RANGES:
            value = getattr(self, name)
            if not low <= value <= high:
                raise ConfigError(f"{name} must be between {low} and {high}")
        for name in ("database_url", "audit_url"):
            if url := getattr(self, name):
                _check_database_url(name, url)
        if self.policy_engine == "opa":
            try:
                OPAEngine.check_url(self.opa_url)
            except PolicyError as exc:
                raise ConfigError(f"opa_url: {exc.detail}") from None
        for entry in self.trusted_proxy_list:
            try:
                ipaddress.ip_network(entry)  # strict, as uvicorn parses it: no host bits
            except ValueError:
                raise ConfigError(f"trusted_proxies: {entry!r} is not an IP address or network "
                                  "(CIDR)") from None
        folder = self.collateral_dir
        if folder and not (os.path.isdir(folder) and os.access(folder, os.R_OK | os.X_OK)):
            # Read when the dashboard first shows an identity: a bad folder failed every check
            # there, long after start.
            raise ConfigError("collateral_dir is not a readable folder")
        for route in self.models.values():
            if route.backend not in self.backends:
                raise ConfigError(f"model {route.name!r} names unknown backend {route.backend!r}")
        if not _REGION.fullmatch(self.region):  # contracts list regions by such names
            raise ConfigError("region must be 1-64 of A-Z a-z 0-9 . _ : - (e.g. eu-west-1)")
        for name, backend in self.backends.items():
            options = backend.options
            if isinstance(options, VLLMConfig) and not options.url and options.port == self.port:
                # It would fail to start (the gateway holds the port), or answer as the gateway.
                raise ConfigError(f"backend {name!r}: vllm port {options.port} is the gateway's own")

    # -- derived values -----------------------------------------------------------------------
    @property
    def trusted_proxy_list(self) -> list[str]:
        return [entry.strip() for entry in self.trusted_proxies.split(",") if entry.strip()]

    @property
    def tenants_url(self) -> str:
        return self.database_url or _sqlite_url(self.data_dir / "sealgate.db")

    @property
    def audit_db_url(self) -> str:
        return self.audit_url or _sqlite_url(self.data_dir / "audit.db", synchronous=self.audit_sync)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def redacted(self) -> dict[str, Any]:
        """The effective settings as plain data, secrets and URL credentials masked."""
        masked: dict[str, Any] = _mask(_plain(self))
        return masked


# Integer settings and their accepted ranges (validated after loading).
_RANGES = (
    ("port", 1, 65535),
    ("max_body_bytes", 1024, 1 << 30),
    ("tenant_max_concurrent", 0, 1_000_000),
    ("tenant_requests_per_minute", 0, 10_000_000),
    ("tenant_tokens_per_minute", 0, 1_000_000_000),
    ("replay_window_s", 1, 3600),
    ("replay_max_entries", 16, 100_000_000),
    ("policy_timeout_ms", 1, 60_000),
    ("policy_reload_s", 0, 86_400),
    ("ohttp_key_rotation_s", 0, 365 * 86_400),
    ("checkpoint_every_n", 1, 1 << 20),
    ("checkpoint_every_ms", 1, 3_600_000),
)


_DATABASE_DRIVERS = frozenset({"sqlite", "sqlite+pysqlite", "postgresql", "postgresql+psycopg"})


def _check_database_url(name: str, url: str) -> None:
    """A URL of a database this gateway has drivers for (the URL is never echoed: it may hold
    a password)."""
    try:
        drivername = make_url(url).drivername
    except (ArgumentError, ValueError):  # a port that is not a number, no scheme, ...
        raise ConfigError(f"{name} is not a valid database URL") from None
    if drivername not in _DATABASE_DRIVERS:
        raise ConfigError(f"{name} must be a sqlite:// or postgresql+psycopg:// URL")


def _sqlite_url(path: Path, **query: str) -> str:
    """A SQLite URL for ``path``, escaped: a data directory holding ``?`` or ``#`` stays one path."""
    return URL.create("sqlite", database=str(path), query=query).render_as_string()


def _coerce(name: str, default: Any, raw: Any) -> Any:
    """A setting from the environment (text) or TOML (text, or a value of the right type)."""
    if not isinstance(raw, str):
        exact = bool if isinstance(default, bool) else int if isinstance(default, int) else None
        if exact is None or not isinstance(raw, exact) or (exact is int and isinstance(raw, bool)):
            raise ConfigError(f"invalid value for {name}: expected {type(default).__name__}")
        return raw
    try:
        if isinstance(default, bool):
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in _TRUE or text in _FALSE:
                return text in _TRUE
            raise ValueError(raw)
        if isinstance(default, int):
            if not _INTEGER.fullmatch(str(raw).strip()):
                raise ValueError(raw)
            return int(raw)
        if isinstance(default, Path):
            if not str(raw).strip():  # Path("") is the current directory
                raise ValueError(raw)
            return Path(str(raw))
        return str(raw)
    except ValueError as exc:
        raise ConfigError(f"invalid value for {name}: {raw!r}") from exc


_KINDS: dict[str, type[Any]] = {"llamacpp": LlamaCppConfig, "openai": OpenAIConfig, "vllm": VLLMConfig}


def _tables(table: Any, what: str) -> dict[str, dict[str, Any]]:
    """``[what.NAME]`` tables: a table of tables."""
    table = {} if table is None else table
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise ConfigError(f"{what} must be a table of [{what}.NAME] tables")
    return table


def _parse_backends(table: Any) -> dict[str, BackendSettings]:
    result: dict[str, BackendSettings] = {}
    for name, body in _tables(table, "backends").items():
        body = dict(body)
        kind = body.pop("type", None)
        if kind not in _KINDS:
            raise ConfigError(f"backend {name!r}: type must be one of {', '.join(_KINDS)}")
        unknown = set(body) - {f.name for f in dataclasses.fields(_KINDS[kind])}
        if unknown:
            raise ConfigError(f"backend {name!r}: unknown keys: {', '.join(sorted(unknown))}")
        try:  # types are checked exactly: no 80.9 taken as port 80, no string split into args
            options = msgspec.convert(body, _KINDS[kind])
        except msgspec.ValidationError as exc:
            raise ConfigError(f"backend {name!r}: {exc}") from exc
        result[name] = BackendSettings(kind, options)
    return result


class _ModelTable(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One ``[models.NAME]`` table, typed exactly like the backend tables."""

    backend: str
    """Name of a configured backend (checked in :meth:`Settings.validate`)."""
    retention_tier: RetentionTier | None = None
    """Required for a backend outside this process (:func:`_inside`); a misspelt key is
    refused rather than falling back to a default."""
    upstream_model: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    """Model name sent to the backend; an empty one would silently mean the route name."""
    owned_by: str = "sealgate"
    """``owned_by`` in ``GET /v1/models``."""


_MODEL_KEYS = frozenset(_ModelTable.__struct_fields__)


def _inside(backend: BackendSettings | None) -> bool:
    """The backend runs inside this process or as its supervised child, so within the attested
    boundary: the embedded llama.cpp, or a vLLM child the gateway starts (no ``url``)."""
    if backend is None:
        return False
    options = backend.options
    return isinstance(options, LlamaCppConfig) or (isinstance(options, VLLMConfig)
                                                   and not options.url)


def _parse_models(table: Any, backends: Mapping[str, BackendSettings]) -> dict[str, ModelRoute]:
    """Model routes. Only a route to a backend inside the boundary may leave ``retention_tier``
    out (it is then ``attested-zero``): for an upstream elsewhere the strongest claim would be
    an unchecked default, carried by every decision and signed record."""
    result: dict[str, ModelRoute] = {}
    for name, body in _tables(table, "models").items():
        if not IDENTIFIER.fullmatch(name):  # records name the model: it must fit their grammar
            raise ConfigError(f"model {name!r}: names are 1-128 of A-Z a-z 0-9 . _ : / @ + -")
        # A typo such as ``retention-tier`` must not leave the route on the default tier, the
        # strongest retention claim, which every decision and signed record then carries.
        unknown = set(body) - _MODEL_KEYS
        if unknown:
            raise ConfigError(f"model {name!r}: unknown keys: {', '.join(sorted(unknown))}")
        try:
            route = msgspec.convert(body, _ModelTable)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"model {name!r}: {exc}") from exc
        if route.backend not in backends:  # before the tier rule, which would misname it
            raise ConfigError(f"model {name!r} names unknown backend {route.backend!r}")
        tier = route.retention_tier
        if tier is None:
            if not _inside(backends.get(route.backend)):
                raise ConfigError(f"model {name!r}: backend {route.backend!r} runs outside this "
                                  "process; say its retention_tier (attested-zero, "
                                  "contractual-zero or none)")
            tier = RetentionTier.ATTESTED_ZERO
        result[name] = ModelRoute(name, route.backend, tier, route.upstream_model, route.owned_by)
    return result


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _mask(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        if key == "env":  # a child's environment: any variable may hold a credential
            return {k: "********" for k in value}
        return {k: _mask(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return _mask_args(value)
    if isinstance(value, str) and value:
        if _secret(key) and not key.endswith("_env"):
            return "********"
        if "://" in value:
            return _mask_url(value)
    return value


def _mask_url(url: str) -> str:
    """The URL with its user information and every query value masked but those of
    ``_PLAIN_QUERY``."""
    scheme, rest = url.split("://", 1)
    user = ""
    if "@" in rest and not rest.startswith("/"):  # "sqlite:///path" has no authority
        # The user information runs to the last "@", as SQLAlchemy reads it: a password may
        # hold "/", "?" or "#". An "@" in a path or query masks more than needed, never less.
        user, rest = "********@", rest.rsplit("@", 1)[1]
    rest, hash_, fragment = rest.partition("#")
    head, question, query = rest.partition("?")
    authority, slash, path = head.partition("/")
    authority = user + authority
    params = []
    for param in query.split("&") if query else ():
        name, equals, _ = param.partition("=")
        params.append(f"{name}=********" if equals and name.lower() not in _PLAIN_QUERY
                      else param)
    return f"{scheme}://{authority}{slash}{path}{question}{'&'.join(params)}{hash_}{fragment}"


def _secret(name: str) -> bool:
    return any(word in name.lower().replace("-", "_") for word in _SECRET_WORDS)


def _mask_args(values: list[Any]) -> list[Any]:
    """Command-line style lists: the value after (or in) ``--api-key``/``--*token*`` is masked."""
    out: list[Any] = []
    for i, value in enumerate(values):
        flag = values[i - 1] if i else None
        if isinstance(flag, str) and flag.startswith("-") and _secret(flag) and "=" not in flag:
            out.append("********")
        elif isinstance(value, str) and value.startswith("-") and "=" in value and _secret(
                value.split("=", 1)[0]):
            out.append(value.split("=", 1)[0] + "=********")
        else:
            out.append(_mask(value))
    return out


OTHER_VARIABLES = frozenset({
    "CONFIG",  # the TOML file (Settings.from_env)
    "VERIFY_POLICY", "ALLOWED_MEASUREMENTS", "ALLOW_SIMULATED", "ALLOW_ANY_MEASUREMENT",
    "COLLATERAL_DIR", "SEV_GUEST_CERTS",  # the attestation verifier and evidence providers
    "REQUIRE_ALL", "VECTORS", "FUZZ_EXAMPLES", "FUZZ_SEED", "HYPOTHESIS_EXAMPLES",
    "TEST_CORE_COUNTS", "VLLM_PYTHON", "VLLM_VENV", "VLLM_MODEL", "VLLM_MODEL_DIR",
    "VLLM_STARTUP_S", "VLLM_RESTART_S",  # the test suite (tests/, .ci/run)
})
"""``SEALGATE_*`` variables that are no setting but that other parts of Sealgate read."""


def ignored_variables(env: Mapping[str, str] | None = None) -> list[str]:
    """``SEALGATE_*`` variables that no part of Sealgate reads (a name misspelt beyond what
    ``_refuse_misspelt`` catches, ``SEALGATE_DATA`` for ``SEALGATE_DATA_DIR``): the commands
    warn about each, since the setting meant keeps its default."""
    env = os.environ if env is None else env
    names = {f.name.upper() for f in dataclasses.fields(Settings)}
    return sorted(v for v in env if v.startswith("SEALGATE_") and v[9:] not in names
                  and v[9:] not in OTHER_VARIABLES)


def _refuse_misspelt(env: Mapping[str, str], names: Mapping[str, Any]) -> None:
    """A ``SEALGATE_*`` variable that is no setting but nearly spells one (``SEALGATE_DEPLOYMENT``)
    is refused, as an unknown key in the file is: ignored, it left the default in force (a
    development deployment). Variables that other Sealgate tools read spell no setting; any
    other unknown one is warned about (``ignored_variables``)."""
    settings = [name.upper() for name in names]
    for variable in env:
        if not variable.startswith("SEALGATE_") or variable[9:].lower() in names:
            continue
        near = difflib.get_close_matches(variable[9:], settings, 1, 0.8)
        if near:
            raise ConfigError(f"environment variable {variable} is not a setting; did you mean "
                              f"SEALGATE_{near[0]}?")
