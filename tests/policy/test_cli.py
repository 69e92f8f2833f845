"""``sealgate policy eval | test | digest``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import structlog

from policy import PolicyBundle
from proxy.cli import main

from .conftest import load_cases, patched
from .opa_servers import FakeOPAServer

BASE, _ = load_cases()

SCENARIOS = {
    "store_true": ({"request.store": True}, ["SG-STORE-001"]),
    "fine_tuning": ({"endpoint.path": "/v1/fine_tuning/jobs", "model": None}, ["SG-TRAIN-001"]),
    "plaintext": ({"channel": "plaintext"}, ["SG-CHANNEL-001"]),
    "none_tier": ({"backend.retention_tier": "none"}, ["SG-RETENTION-001"]),
}


def _eval(tmp_path: Path, capsys: pytest.CaptureFixture[str], doc: Any, *extra: str) -> tuple[int, Any]:
    path = tmp_path / "input.json"
    path.write_text(json.dumps(doc))
    status = main(["policy", "eval", "--input", str(path), *extra])
    captured = capsys.readouterr()
    return status, json.loads(captured.out) if captured.out else captured.err


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_eval_denies(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    patch, rules = SCENARIOS[name]
    status, decision = _eval(tmp_path, capsys, patched(BASE, patch))
    assert status == 1
    assert decision["allow"] is False
    assert [d["rule"] for d in decision["deny"]] == rules


def test_eval_allows_and_prints_digest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bundle: PolicyBundle
) -> None:
    status, decision = _eval(tmp_path, capsys, BASE)
    assert (status, decision["allow"], decision["bundle_digest"]) == (0, True, bundle.digest)


def test_eval_through_opa(tmp_path: Path, capsys: pytest.CaptureFixture[str], bundle: PolicyBundle) -> None:
    with FakeOPAServer() as server:
        status, decision = _eval(
            tmp_path,
            capsys,
            patched(BASE, {"request.store": True}),
            "--engine",
            "opa",
            "--opa-url",
            server.url,
        )
    assert status == 1 and [d["rule"] for d in decision["deny"]] == ["SG-STORE-001"]


def test_eval_bad_input_exits_nonzero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, err = _eval(tmp_path, capsys, {"channel": "sealed"})
    assert status == 3
    assert err.startswith("sealgate: invalid_policy_input: input document is missing the field ")


@pytest.mark.parametrize(("given", "said"), [
    ("[]", "the input document must be a JSON object"),
    ('{"channel": "sealed", "request": []}', "of the wrong type"),
])
def test_eval_names_what_is_wrong_with_the_input(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 given: str, said: str) -> None:
    path = tmp_path / "in.json"
    path.write_text(given)
    assert main(["policy", "eval", "--input", str(path)]) == 3
    err = capsys.readouterr().err
    assert err.startswith("sealgate: invalid_policy_input: ") and said in err
    assert "list indices" not in err  # no Python wording


@pytest.mark.parametrize("timeout", ["-1", "0", "nan", "inf"])
def test_eval_refuses_a_timeout_that_is_no_time(tmp_path: Path, timeout: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["policy", "eval", "--input", str(tmp_path / "in.json"), "--timeout", timeout])
    assert info.value.code == 2 and "above 0 and below 3600" in capsys.readouterr().err


def test_policy_test_and_digest(capsys: pytest.CaptureFixture[str], bundle: PolicyBundle) -> None:
    assert main(["policy", "test"]) == 0
    out = capsys.readouterr().out
    assert "PASS  sealgate.authz_test.test_base_allowed" in out and " 0 failed" in out
    assert main(["policy", "digest", "--bundle", str(bundle.root)]) == 0
    assert capsys.readouterr().out.strip() == bundle.digest


def test_policy_test_fails_on_failing_rego_test(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = Path(__file__).resolve().parents[2] / "policy"
    (tmp_path / "rego").mkdir()
    for src in (root / "rego").glob("*.rego"):
        (tmp_path / "rego" / src.name).write_text(src.read_text())
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "contracts.yaml").write_text((root / "data" / "contracts.yaml").read_text())
    (tmp_path / "rego" / "z_test.rego").write_text("package z_test\n\ntest_never if {\n\tfalse\n}\n")
    assert main(["policy", "test", "--bundle", str(tmp_path)]) == 1
    assert "FAIL  z_test.test_never" in capsys.readouterr().out


def test_cli_log_lines_are_json_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside ``serve``, structlog printed its default console lines on standard output, mixed
    into the command's own JSON (an engine's warning during ``policy eval``), and without the
    processor that drops unknown fields."""
    monkeypatch.setenv("SEALGATE_DATA_DIR", str(tmp_path))
    assert main(["policy", "digest"]) == 0
    out = capsys.readouterr().out
    structlog.get_logger("sealgate.policy").warning(
        "policy_evaluation_abandoned", engine="regopy", count=1, prompt="CANARY")
    captured = capsys.readouterr()
    assert captured.out == ""
    line = json.loads(captured.err)
    assert line["event"] == "policy_evaluation_abandoned" and "CANARY" not in captured.err
    assert out.strip().startswith("sha256:")
