"""Typed settings (TOML + env), masking, the CLI around them, and the content-free log schema."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import structlog

import inference
import policy
import proxy
from inference import ModelRoute, RetentionTier, VLLMConfig
from proxy.cli import main
from proxy.config import Settings
from proxy.errors import ConfigError
from proxy.telemetry import configure_logging

TOML = """
port = 9001
data_dir = "/srv/sealgate"
audit_url = "postgresql+psycopg://sealgate:hunter2@db:5432/audit"
[backends.gpu]
type = "openai"
url = "http://vllm:8000/v1"
api_key_env = "UPSTREAM_KEY"
[models."big"]
backend = "gpu"
retention_tier = "contractual-zero"
"""


def test_toml_then_env(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(TOML)
    settings = Settings.load(path, env={"SEALGATE_PORT": "9002", "SEALGATE_ALLOW_PLAINTEXT": "true"})
    assert settings.port == 9002 and settings.allow_plaintext is True
    assert settings.data_dir == Path("/srv/sealgate")
    assert settings.models["big"].retention_tier is RetentionTier.CONTRACTUAL_ZERO


@pytest.mark.parametrize(("toml", "env"), [
    ("bogus = 1", {}),
    ("", {"SEALGATE_PORT": "eighty"}),
    ("", {"SEALGATE_ALLOW_PLAINTEXT": "maybe"}),
    ('[models.x]\nbackend = "nowhere"', {}),
    ('[backends.b]\ntype = "telepathy"', {}),
    ('deployment_mode = "yolo"', {}),
    ("port = [8080]", {}),
    ("port = 80.9", {}),
    ("allow_plaintext = 1", {}),
    ('data_dir = 5', {}),
    ('models = "x"', {}),
    ('backends = 3', {}),
    ("replay_window_s = 1000000", {}),
    ("replay_max_entries = 15", {}),
    ("", {"SEALGATE_POLICY_TIMEOUT_MS": "0"}),
    ('[backends.v]\ntype = "vllm"\nextra_args = "--max-model-len 2048"', {}),
    ('[backends.v]\ntype = "vllm"\nport = "abc"', {}),
    ('[backends.v]\ntype = "vllm"\nextra_args = ["--host", "0.0.0.0"]', {}),
    ('[backends.v]\ntype = "vllm"\nextra_args = ["--enable-log-requests"]', {}),
    ('[backends.v]\ntype = "vllm"\nnope = 1', {}),
    ('[backends.v]\ntype = "vllm"\ntimeout_s = 0', {}),
    ('[backends.v]\ntype = "vllm"\nstream_timeout_s = -1', {}),
    ('[backends.b]\ntype = "openai"\nstream_timeout_s = 0', {}),
    ('[backends.b]\ntype = "openai"\nmax_connections = 0', {}),
    ('[backends.b]\ntype = "openai"\ntimeout_s = inf', {}),
    # shapes llama.cpp aborts the process on at model load
    ('[backends.l]\ntype = "llamacpp"\nn_parallel = 3', {}),
    ('[backends.l]\ntype = "llamacpp"\nn_ctx = 1', {}),
    ('[backends.l]\ntype = "llamacpp"\nn_ctx = 511\nn_parallel = 2', {}),
    ('[backends.l]\ntype = "llamacpp"\nn_parallel = 0', {}),
    ('[backends.v]\ntype = "vllm"\ntimeout_s = inf', {}),
    ('audit_url = "mysql://db/audit"', {}),
    ('[backends.b]\ntype = "openai"\nurl = "http://x/v1"\n[models."my model"]\nbackend = "b"', {}),
    ("", {"SEALGATE_DATABASE_URL": "bogus://x"}),
    ('[backends.b]\ntype = "openai"\n[models.m]\nretention_tier = "none"', {}),
    ("", {"SEALGATE_HOST": ""}),  # uvicorn would listen on every interface
    ("", {"SEALGATE_DATA_DIR": " "}),  # Path("") is the current directory
    ("", {"SEALGATE_PORT": "\u0668\u0660\u0668\u0660"}),  # Arabic-Indic digits: int() reads 8080
    ('log_level = "verbose"', {}),
    ("", {"SEALGATE_LOG_ORIGIN": "my origin"}),  # the log could not sign its checkpoints
    ("", {"SEALGATE_LOG_ORIGIN": ""}),
    # started, then failed every request as unreachable (and was shown unmasked)
    ('[backends.b]\ntype = "openai"\nurl = "127.0.0.1:8000/v1"', {}),
    ('[backends.b]\ntype = "openai"\nurl = "svc:hunter2@api.example.com/v1"', {}),
    ('[backends.b]\ntype = "openai"\nurl = "ftp://files.example/v1"', {}),
    ('[backends.v]\ntype = "vllm"\nurl = "vllm:8000/v1"', {}),
    ("", {"SEALGATE_HOST": "127.0.0.1 "}),  # it started, then failed to bind
    # the policy ignores the flag in production: a setting that cannot take effect
    ('deployment_mode = "production"\nallow_plaintext = true', {}),
    ("", {"SEALGATE_COLLATERAL_DIR": "/nonexistent/collateral"}),  # failed on the dashboard only
    ("", {"SEALGATE_DEPLOYMENT": "production"}),  # ignored: the default (development) stood
    ("", {"SEALGATE_ALLOW_PLAINTXT": "1"}),
    # found only by `serve`, after `config show` had accepted it
    ('evidence_provider = "bogus"', {}),
    # hardware evidence with no release measurement to state: start-up would fail on it
    ('evidence_provider = "configfs-tsm"', {}),
    ("", {"SEALGATE_EVIDENCE_PROVIDER": "auto"}),
    # matched against contracts' regions: an empty or spaced one can only ever deny
    ('region = ""', {}),
    ('region = "eu west"', {}),
    # a supervised vLLM on the gateway's own port
    ('port = 8011\n[backends.v]\ntype = "vllm"', {}),
])
def test_bad_config_is_a_clear_error(tmp_path: Path, toml: str, env: dict[str, str]) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        Settings.load(path, env=env)
    assert str(info.value).startswith("invalid_config: ")


def test_variables_nothing_reads_are_warned_about(tmp_path: Path) -> None:
    """A name too far from any setting to be refused as misspelt (``SEALGATE_DATA`` for
    ``SEALGATE_DATA_DIR``) left the default in force without a word: every command now warns,
    and still does what it was asked."""
    from proxy.config import ignored_variables

    env = {"SEALGATE_DATA": "/elsewhere", "SEALGATE_PRODUCTION": "1", "SEALGATE_DATA_DIR": "x",
           "SEALGATE_CONFIG": "", "SEALGATE_VERIFY_POLICY": "", "SEALGATE_REQUIRE_ALL": "1",
           "OTHER": "1"}
    assert ignored_variables(env) == ["SEALGATE_DATA", "SEALGATE_PRODUCTION"]
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("SEALGATE_")}
    run_env.update(SEALGATE_DATA_DIR=str(tmp_path / "state"), SEALGATE_DATA=str(tmp_path / "meant"))
    done = subprocess.run([sys.executable, "-m", "proxy.cli", "tenants", "create", "acme"],
                          env=run_env, capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout.startswith("tenant acme ")
    assert done.stderr == ("sealgate: warning: SEALGATE_DATA is not a setting and is ignored "
                           "(`sealgate config show` lists the settings)\n")
    assert (tmp_path / "state" / "sealgate.db").exists() and not (tmp_path / "meant").exists()


_ROUTE = '[backends.up]\ntype = "openai"\n[models.m]\nbackend = "up"\n'


@pytest.mark.parametrize(("line", "error"), [
    ('retention-tier = "none"', "model 'm': unknown keys: retention-tier"),
    ('upstream_modle = "gpt-4o"\nretention_tier = "none"', "model 'm': unknown keys: upstream_modle"),
    ('retention_tier = "nothing"', "model 'm': Invalid enum value 'nothing' - at `$.retention_tier`"),
    ('retention_tier = "Attested-Zero"', "model 'm': Invalid enum value 'Attested-Zero'"),
    ("retention_tier = 0", "model 'm': Expected `str | null`, got `int` - at `$.retention_tier`"),
    ("upstream_model = 42", "model 'm': Expected `str | null`, got `int` - at `$.upstream_model`"),
    ('upstream_model = ""', "model 'm': Expected `str` of length >= 1 - at `$.upstream_model`"),
    ('owned_by = ["x"]', "model 'm': Expected `str`, got `array` - at `$.owned_by`"),
])
def test_model_tables_refuse_unknown_keys_and_wrong_types(tmp_path: Path, line: str,
                                                          error: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(_ROUTE + line + "\n")
    with pytest.raises(ConfigError) as info:
        Settings.load(path, env={})
    assert str(info.value).startswith("invalid_config: " + error)


@pytest.mark.parametrize("backend", [
    '[backends.b]\ntype = "openai"\nurl = "https://api.example/v1"',
    '[backends.b]\ntype = "vllm"\nurl = "http://vllm:8000/v1"',  # a service, not our child
])
def test_a_route_to_an_upstream_elsewhere_must_state_its_tier(tmp_path: Path, backend: str) -> None:
    """The strongest claim, attested-zero, is no default for an upstream outside this process:
    every decision and signed record would carry it unchecked."""
    path = tmp_path / "c.toml"
    path.write_text(backend + '\n[models.m]\nbackend = "b"\n')
    with pytest.raises(ConfigError, match="model 'm': backend 'b' runs outside this process; "
                                          "say its retention_tier"):
        Settings.load(path, env={})


def test_a_model_naming_an_unknown_backend_says_so(tmp_path: Path) -> None:
    """Not that the backend "runs outside this process" (the tier rule, which came first)."""
    path = tmp_path / "c.toml"
    path.write_text('[models.m]\nbackend = "nosuch"\n')
    with pytest.raises(ConfigError) as info:
        Settings.load(path, env={})
    assert str(info.value) == "invalid_config: model 'm' names unknown backend 'nosuch'"


def test_model_table_without_a_backend_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[backends.up]\ntype = "openai"\n[models.m]\nowned_by = "x"\n')
    with pytest.raises(ConfigError, match="model 'm': Object missing required field `backend`"):
        Settings.load(path, env={})


def test_model_table_defaults_and_typed_values(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[backends.up]\ntype = "openai"\n[backends.local]\ntype = "llamacpp"\n'
                    '[backends.child]\ntype = "vllm"\n[models.m]\nbackend = "local"\n'
                    '[models.c]\nbackend = "child"\n'
                    '[models.p]\nbackend = "up"\nretention_tier = "contractual-zero"\n'
                    'upstream_model = "large-2025-01"\nowned_by = "partner"\n')
    models = Settings.load(path, env={}).models
    # Inside the boundary (embedded, or a vLLM child the gateway starts) the tier may be left out.
    assert models["m"] == ModelRoute("m", "local", RetentionTier.ATTESTED_ZERO, None, "sealgate")
    assert models["c"].retention_tier is RetentionTier.ATTESTED_ZERO
    assert models["p"] == ModelRoute("p", "up", RetentionTier.CONTRACTUAL_ZERO, "large-2025-01",
                                     "partner")
    assert isinstance(models["p"].retention_tier, RetentionTier)


def test_config_show_masks_secrets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.toml"
    path.write_text(TOML)
    assert main(["config", "show", "--config", str(path)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert "hunter2" not in json.dumps(shown)
    assert shown["audit_url"] == "postgresql+psycopg://********@db:5432/audit"
    assert shown["backends"]["gpu"]["options"]["api_key_env"] == "UPSTREAM_KEY"


def test_config_show_masks_credentials_in_url_queries(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.toml"
    path.write_text('audit_url = "postgresql://db/audit?sslmode=require&password=hunter2"\n'
                    '[backends.up]\ntype = "openai"\nurl = "https://up.example/v1?api_key=sk-1&key=k2'
                    '&apikey=k3&sig=k4&subscription-key=k5&api-version=2024-10-21"\n'
                    '[models.m]\nbackend = "up"\nretention_tier = "contractual-zero"\n')
    assert main(["config", "show", "--config", str(path)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["audit_url"] == "postgresql://db/audit?sslmode=require&password=********"
    # Every value but known settings: providers name their credentials freely.
    assert shown["backends"]["up"]["options"]["url"] == (
        "https://up.example/v1?api_key=********&key=********&apikey=********&sig=********"
        "&subscription-key=********&api-version=2024-10-21")


def test_config_show_masks_passwords_holding_url_delimiters(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """SQLAlchemy reads a password up to the last "@": it may hold "/", "?" or "#"."""
    path = tmp_path / "c.toml"
    path.write_text('audit_url = "postgresql+psycopg://audit:hun/ter?2#x@db:5432/audit"\n'
                    'database_url = "postgresql+psycopg://sg:a#b@db/sealgate?sslmode=require"\n')
    assert main(["config", "show", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    shown = json.loads(out)
    assert "hun/ter" not in out and "a#b" not in out
    assert shown["audit_url"] == "postgresql+psycopg://********@db:5432/audit"
    assert shown["database_url"] == "postgresql+psycopg://********@db/sealgate?sslmode=require"
    sqlite = "sqlite:////srv/at@sign/sealgate.db"  # a path is no user information
    assert Settings.load(None, env={"SEALGATE_DATABASE_URL": sqlite}).redacted()[
        "database_url"] == sqlite


@pytest.mark.parametrize(("env", "message"), [
    ({"SEALGATE_DATABASE_URL": "postgresql+psycopg://sg:hunter2@db:badport/x"},
     "database_url is not a valid database URL"),
    ({"SEALGATE_AUDIT_URL": "sqlite+pysqlcipher:///audit.db"},
     "audit_url must be a sqlite:// or postgresql+psycopg:// URL"),
    ({"SEALGATE_AUDIT_URL": "mysql://db/audit"},
     "audit_url must be a sqlite:// or postgresql+psycopg:// URL"),
    ({"SEALGATE_POLICY_ENGINE": "opa", "SEALGATE_OPA_URL": "http://opa:port"},
     "opa_url: OPA url must be http(s)://host[:port]"),
    ({"SEALGATE_POLICY_ENGINE": "opa", "SEALGATE_OPA_URL": "http://[::1"},
     "opa_url: OPA url must be http(s)://host[:port]"),
])
def test_unusable_urls_are_config_errors(env: dict[str, str], message: str) -> None:
    """Refused when the settings load, never echoed (a URL may hold a password), and never
    a traceback later from the driver or the OPA client."""
    with pytest.raises(ConfigError) as info:
        Settings.load(None, env=env)
    assert info.value.detail == message and "hunter2" not in str(info.value)


def test_a_data_dir_holding_url_characters_stays_one_path(tmp_path: Path) -> None:
    from sqlalchemy.engine import make_url

    data = tmp_path / "d?x#y"
    settings = Settings.load(None, env={"SEALGATE_DATA_DIR": str(data)})
    assert make_url(settings.tenants_url).database == str(data / "sealgate.db")
    audit = make_url(settings.audit_db_url)
    assert (audit.database, dict(audit.query)) == (str(data / "audit.db"), {"synchronous": "normal"})


def test_a_vllm_service_takes_an_api_key_variable_and_a_timeout(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[backends.v]\ntype = "vllm"\nurl = "http://vllm:8000/v1"\n'
                    'api_key_env = "VLLM_KEY"\ntimeout_s = 90\nstream_timeout_s = 600\n'
                    '[models.m]\nbackend = "v"\nretention_tier = "attested-zero"\n')
    options = Settings.load(path, env={}).backends["v"].options
    assert isinstance(options, VLLMConfig)
    assert (options.api_key_env, options.timeout_s, options.stream_timeout_s) == ("VLLM_KEY", 90.0, 600.0)


def test_config_show_masks_child_arguments_and_environment(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[backends.v]\ntype = "vllm"\nmodel = "m"\n'
                    'extra_args = ["--api-key", "sk-live-1", "--hf-token=hf-2", "--max-model-len", "2048"]\n'
                    '[backends.v.env]\nHF_AUTH = "hf-3"\n[models.m]\nbackend = "v"\n')
    assert main(["config", "show", "--config", str(path)]) == 0
    shown = json.loads(capsys.readouterr().out)["backends"]["v"]["options"]
    assert shown["extra_args"] == ["--api-key", "********", "--hf-token=********", "--max-model-len", "2048"]
    assert shown["env"] == {"HF_AUTH": "********"}


def test_cli_honours_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SEALGATE_DATA_DIR", str(tmp_path / "state"))
    assert main(["tenants", "create", "acme"]) == 0
    assert main(["keys", "create", "--tenant", "acme"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("sg-") and len(out[-1].split()) == 1
    assert (tmp_path / "state" / "sealgate.db").exists()
    database = (tmp_path / "state" / "sealgate.db").read_bytes()
    assert out[-1].encode() not in database  # only the hash is stored
    assert main(["tenants", "create", "acme"]) == 1  # exists


def test_log_processor_drops_unknown_and_free_text() -> None:
    buffer = io.StringIO()
    configure_logging("info", stream=buffer)
    log = structlog.get_logger("t")
    log.info("request", request_id="req_1", messages="SECRET PROMPT", prompt="p", status=200,
             model="what is the meaning of life?\nanswer", tenant="tp_abc")
    line = json.loads(buffer.getvalue())
    assert "messages" not in line and "prompt" not in line
    assert line["model"] == "[redacted]" and line["status"] == 200 and line["tenant"] == "tp_abc"
    assert "SECRET" not in buffer.getvalue()


def test_log_processor_refuses_prose_and_free_form_events() -> None:
    buffer = io.StringIO()
    configure_logging("info", stream=buffer)
    log = structlog.get_logger("t")
    prose = "Patient John Smith asked about dosage"  # spaces: prose, never an identifier
    log.info("request", reason=prose, code="my password is hunter2", status=200)
    log.info(f"prompt was: {prose}")
    log.info({"messages": [{"role": "user", "content": prose}]})  # type: ignore[arg-type]
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert lines[0]["reason"] == lines[0]["code"] == "[redacted]" and lines[0]["status"] == 200
    assert lines[0]["event"] == "request"
    assert [line["event"] for line in lines[1:]] == ["[redacted]", "[redacted]"]
    assert "Smith" not in buffer.getvalue() and "hunter2" not in buffer.getvalue()


def test_public_surfaces_are_exact() -> None:
    assert sorted(inference.__all__) == [
        "Backend", "BackendError", "BackendRejected", "BackendRouter", "BackendUnavailable",
        "GenerationKind", "LlamaCppBackend", "LlamaCppConfig", "ModelNotFound", "ModelRoute",
        "OpenAIBackend", "OpenAIConfig", "RetentionTier", "VLLMBackend", "VLLMConfig",
        "default_model_path"]
    for package in (inference, proxy, policy):
        for name in package.__all__:
            assert hasattr(package, name), name


def test_cli_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SEALGATE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SEALGATE_DEPLOYMENT_MODE", "production")  # with the simulated enclave
    assert main(["serve", "--port", "18099"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sealgate: simulated_not_allowed: ") and "Traceback" not in err


def test_a_misspelt_variable_is_named_with_the_setting_it_nearly_spells() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.load(None, env={"SEALGATE_DEPLOYMENT": "production"})
    assert info.value.detail == ("environment variable SEALGATE_DEPLOYMENT is not a setting; "
                                 "did you mean SEALGATE_DEPLOYMENT_MODE?")
    # What other Sealgate tools read (the client's verification policy, the test suite's own
    # switches) spells no setting, and is left alone.
    others = {name: "1" for name in (
        "SEALGATE_VERIFY_POLICY", "SEALGATE_ALLOWED_MEASUREMENTS", "SEALGATE_ALLOW_SIMULATED",
        "SEALGATE_ALLOW_ANY_MEASUREMENT", "SEALGATE_REQUIRE_ALL", "SEALGATE_VECTORS")}
    assert Settings.load(None, env=others).deployment_mode == "development"


def test_a_port_already_taken_is_one_line_and_no_banner(tmp_path: Path) -> None:
    """The banner said "serving on" once start-up was done, before the port was bound; a port
    in use then printed uvicorn's own error line. (A child process, as below.)"""
    import os
    import socket
    import subprocess
    import sys

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "proxy.cli", "serve", "--port", str(port)],
            env={**os.environ, "SEALGATE_DATA_DIR": str(tmp_path)}, capture_output=True,
            text=True, timeout=120, check=False)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (f"sealgate: start-up failed: cannot listen on 127.0.0.1:{port} "
                           "(address already in use)\n")
    # Said before the gateway starts: nothing was created (the model, the audit log, keys).
    assert not (tmp_path / "audit.db").exists() and not (tmp_path / "keys").exists()


def test_a_failed_start_up_prints_its_cause_once_and_no_banner(tmp_path: Path) -> None:
    """What fails inside start-up (here a missing model file) is one line with its code, not
    the framework's traceback after a "serving on" banner. (A child process: the server's
    event loop leaves process-wide signal handling behind it.)"""
    import os
    import subprocess
    import sys

    config = tmp_path / "c.toml"
    config.write_text('[backends.local]\ntype = "llamacpp"\nmodel_path = "/nonexistent.gguf"\n')
    done = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "serve", "--config", str(config), "--port", "18098"],
        env={**os.environ, "SEALGATE_DATA_DIR": str(tmp_path)}, capture_output=True, text=True,
        timeout=120, check=False)
    assert done.returncode == 2
    assert "serving on" not in done.stdout
    assert "sealgate: start-up failed: backend_unavailable: model file not found" in done.stderr
    assert "Application startup failed" not in done.stderr  # the cause, said once
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("argv", "needle"), [
    (["tenants", "create", "acme"], "Not a directory"),  # the data directory is under a file
    (["tenants", "list"], "no state database at"),
    (["config", "show", "--config", "{latin1}"], "invalid_config: cannot read config"),
    (["policy", "eval", "--input", "{deep}"], "input_too_deep"),
])
def test_bad_input_is_one_line_not_a_traceback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        argv: list[str], needle: str) -> None:
    (tmp_path / "file").write_text("")
    (tmp_path / "latin1.toml").write_bytes(b'host = "\xff"\n')
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    monkeypatch.setenv("SEALGATE_DATA_DIR", str(tmp_path / "file" / "var"))
    files = {"latin1": tmp_path / "latin1.toml", "deep": tmp_path / "deep.json"}
    assert main([a.format(**files) for a in argv]) in (1, 2)
    err = capsys.readouterr().err
    assert err.startswith("sealgate: ") and needle in err and "Traceback" not in err


def test_a_foreign_error_with_a_code_attribute_is_not_shown_as_ours(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A driver's error (its text may quote SQL and parameters) is not printed as a coded
    error of ours."""
    from proxy.cli import _message

    class DriverError(Exception):
        code = "e3q8"

    assert _message(DriverError("INSERT ... parameters: ('scrypt$...')")) is None
    assert _message(ConfigError("bad")) == "invalid_config: bad"


def test_client_proxy_refuses_a_port_out_of_range(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["client-proxy", "--gateway", "https://gw.example", "--listen",
                 "127.0.0.1:99999"]) == 2
    assert "port from 1 to 65535" in capsys.readouterr().err


def test_a_reader_that_leaves_early_is_not_an_error(tmp_path: Path) -> None:
    """``sealgate … | head``: output ends where the reader left, exit 0, no error printed."""
    import os
    import subprocess
    import sys

    done = subprocess.Popen([sys.executable, "-m", "proxy.cli", "config", "show"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "SEALGATE_DATA_DIR": str(tmp_path)})
    assert done.stdout is not None and done.stderr is not None
    done.stdout.close()  # before anything is read
    err = done.stderr.read()
    assert done.wait(timeout=60) == 0 and err == b""


_DETACHED = """
import ctypes, sys, warnings
from proxy.telemetry import configure_logging, detach_native_stderr
import structlog
detach_native_stderr()
configure_logging()
ctypes.CDLL(None).write(2, b"NATIVE-CANARY\\n", 14)  # as a native library writes
structlog.get_logger().info("still_logged")
warnings.warn("python_warning_kept")
print("sealgate: python_output_kept", file=sys.stderr)
"""


def test_native_writes_to_stderr_are_discarded_and_python_output_kept() -> None:
    """Native code writes diagnostics to descriptor 2 (the model's grammar converter quotes
    request text there): ``sealgate serve`` points it at /dev/null, keeping its own output."""
    done = subprocess.run([sys.executable, "-c", _DETACHED], capture_output=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    err = done.stderr.decode()
    assert "NATIVE-CANARY" not in err
    assert '"event": "still_logged"' in err
    assert "python_warning_kept" in err and "sealgate: python_output_kept" in err


_HARDENED = """
import ctypes, resource, subprocess, sys
from proxy.telemetry import forbid_core_dumps
forbid_core_dumps()
dumpable = ctypes.CDLL(None).prctl(3, 0, 0, 0, 0)  # PR_GET_DUMPABLE
child = subprocess.run([sys.executable, "-c", "import resource; print(resource.getrlimit("
                        "resource.RLIMIT_CORE))"], capture_output=True, text=True).stdout.strip()
print(resource.getrlimit(resource.RLIMIT_CORE), dumpable, child)
"""


def test_the_server_process_and_its_children_dump_no_core() -> None:
    """A core file would hold the prompts and completions in memory: ``sealgate serve`` sets
    the core size limit to 0 (its children, a supervised vLLM, inherit it) and is not dumpable."""
    done = subprocess.run([sys.executable, "-c", _HARDENED], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["(0,", "0)", "0", "(0,", "0)"], done.stdout


def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"sealgate {version('sealgate')}\n"
