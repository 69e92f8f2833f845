"""Typed settings (TOML + env), masking, the CLI around them, and the content-free log schema."""

from __future__ import annotations

import io
import json
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
    ("", {"SEALGATE_POLICY_TIMEOUT_MS": "0"}),
    ('[backends.v]\ntype = "vllm"\nextra_args = "--max-model-len 2048"', {}),
    ('[backends.v]\ntype = "vllm"\nport = "abc"', {}),
    ('[backends.v]\ntype = "vllm"\nextra_args = ["--host", "0.0.0.0"]', {}),
    ('[backends.v]\ntype = "vllm"\nextra_args = ["--enable-log-requests"]', {}),
    ('[backends.v]\ntype = "vllm"\nnope = 1', {}),
    ('[backends.v]\ntype = "vllm"\ntimeout_s = 0', {}),
    ('audit_url = "mysql://db/audit"', {}),
    ('[backends.b]\ntype = "openai"\nurl = "http://x/v1"\n[models."my model"]\nbackend = "b"', {}),
    ("", {"SEALGATE_DATABASE_URL": "bogus://x"}),
    ('[backends.b]\ntype = "openai"\n[models.m]\nretention_tier = "none"', {}),
])
def test_bad_config_is_a_clear_error(tmp_path: Path, toml: str, env: dict[str, str]) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        Settings.load(path, env=env)
    assert str(info.value).startswith("invalid_config: ")


_ROUTE = '[backends.up]\ntype = "openai"\n[models.m]\nbackend = "up"\n'


@pytest.mark.parametrize(("line", "error"), [
    ('retention-tier = "none"', "model 'm': unknown keys: retention-tier"),
    ('upstream_modle = "gpt-4o"\nretention_tier = "none"', "model 'm': unknown keys: upstream_modle"),
    ('retention_tier = "nothing"', "model 'm': Invalid enum value 'nothing' - at `$.retention_tier`"),
    ('retention_tier = "Attested-Zero"', "model 'm': Invalid enum value 'Attested-Zero'"),
    ("retention_tier = 0", "model 'm': Expected `str`, got `int` - at `$.retention_tier`"),
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


def test_model_table_without_a_backend_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[backends.up]\ntype = "openai"\n[models.m]\nowned_by = "x"\n')
    with pytest.raises(ConfigError, match="model 'm': Object missing required field `backend`"):
        Settings.load(path, env={})


def test_model_table_defaults_and_typed_values(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(_ROUTE + '[models.p]\nbackend = "up"\nretention_tier = "contractual-zero"\n'
                    'upstream_model = "large-2025-01"\nowned_by = "partner"\n')
    models = Settings.load(path, env={}).models
    assert models["m"] == ModelRoute("m", "up", RetentionTier.ATTESTED_ZERO, None, "sealgate")
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


def test_a_vllm_service_takes_an_api_key_variable_and_a_timeout(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[backends.v]\ntype = "vllm"\nurl = "http://vllm:8000/v1"\n'
                    'api_key_env = "VLLM_KEY"\ntimeout_s = 90\n[models.m]\nbackend = "v"\n')
    options = Settings.load(path, env={}).backends["v"].options
    assert isinstance(options, VLLMConfig)
    assert (options.api_key_env, options.timeout_s) == ("VLLM_KEY", 90.0)


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
