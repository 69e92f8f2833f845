"""API keys against the real store (SQLite in tmp_path): the Bearer scheme and revocation."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from proxy.cli import main
from proxy.errors import AuthenticationError, InvalidRequest, NotFound
from proxy.tenants import ApiKeyInfo, TenantStore


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The data directory the CLI uses too (``SEALGATE_DATA_DIR``)."""
    monkeypatch.setenv("SEALGATE_DATA_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def store(data_dir: Path) -> Iterator[TenantStore]:
    store = TenantStore(f"sqlite:///{data_dir / 'sealgate.db'}", cache_ttl_s=0)
    yield store
    store.close()


def _share_prefix(data_dir: Path, *, of: ApiKeyInfo, to: ApiKeyInfo) -> None:
    """Give ``to`` the prefix of ``of``: a 32-bit collision, forced."""
    engine = sa.create_engine(f"sqlite:///{data_dir / 'sealgate.db'}")
    with engine.begin() as db:
        db.execute(sa.text("update api_keys set prefix = :p where id = :i"),
                   {"p": of.prefix, "i": to.id})
    engine.dispose()


def _colliding(store: TenantStore, data_dir: Path) -> tuple[ApiKeyInfo, str, ApiKeyInfo, str]:
    """Alice's and Bob's keys, Bob's made to share Alice's prefix."""
    store.create_tenant("alice")
    store.create_tenant("bob")
    alice, alice_key = store.create_key("alice")
    bob, bob_key = store.create_key("bob")
    _share_prefix(data_dir, of=alice, to=bob)
    return alice, alice_key, bob, bob_key


# RFC 9110 §11.1: the scheme is case-insensitive; §11.4: one or more spaces before the token.
@pytest.mark.parametrize("scheme", ["Bearer ", "bearer ", "BEARER ", "bEaReR ", "Bearer   "])
def test_bearer_scheme_is_case_insensitive(store: TenantStore, scheme: str) -> None:
    store.create_tenant("acme")
    _, key = store.create_key("acme")
    assert store.authenticate(scheme + key).name == "acme"


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic {key}", "Bearer{key}",
                                    "Token {key}"])
def test_other_schemes_are_a_missing_key(store: TenantStore, header: str | None) -> None:
    store.create_tenant("acme")
    _, key = store.create_key("acme")
    with pytest.raises(AuthenticationError, match="missing API key"):
        store.authenticate(header.format(key=key) if header else header)


def test_lower_case_scheme_still_checks_the_key(store: TenantStore) -> None:
    store.create_tenant("acme")
    info, key = store.create_key("acme")
    wrong = key[:-1] + ("A" if key[-1] != "A" else "B")
    with pytest.raises(AuthenticationError) as error:
        store.authenticate("bearer " + wrong)
    assert str(error.value) == "invalid_api_key: invalid API key"
    store.revoke_key(info.id)
    with pytest.raises(AuthenticationError) as error:
        store.authenticate("bearer " + key)
    assert str(error.value) == "invalid_api_key: invalid API key"


def test_revoke_refuses_a_shared_prefix(store: TenantStore, data_dir: Path) -> None:
    alice, alice_key, bob, bob_key = _colliding(store, data_dir)
    with pytest.raises(InvalidRequest) as info:
        store.revoke_key(alice.prefix)
    message = str(info.value)
    assert message.startswith(f"key_ambiguous: '{alice.prefix}' matches 2 API keys: ")
    assert alice.id in message and bob.id in message and "key_…" in message
    assert alice_key not in message and bob_key not in message
    assert all(k.revoked_at is None for k in store.keys())  # nothing revoked
    assert store.authenticate("Bearer " + alice_key).name == "alice"
    assert store.authenticate("Bearer " + bob_key).name == "bob"


def test_revoke_by_id_when_the_prefix_is_shared(store: TenantStore, data_dir: Path) -> None:
    alice, alice_key, _, bob_key = _colliding(store, data_dir)
    assert store.revoke_key(alice.id).tenant == "alice"
    with pytest.raises(AuthenticationError):
        store.authenticate("Bearer " + alice_key)
    assert store.authenticate("Bearer " + bob_key).name == "bob"


def test_cli_revoke_refuses_a_shared_prefix(store: TenantStore, data_dir: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    alice, alice_key, bob, bob_key = _colliding(store, data_dir)
    assert main(["keys", "revoke", alice.prefix]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith(f"sealgate: key_ambiguous: '{alice.prefix}' matches 2 API keys: ")
    assert alice.id in err and bob.id in err and "by its id" in err
    assert alice_key not in err and bob_key not in err
    assert store.authenticate("Bearer " + alice_key).name == "alice"
    assert store.authenticate("Bearer " + bob_key).name == "bob"

    assert main(["keys", "revoke", alice.id]) == 0
    assert capsys.readouterr().out == f"revoked {alice.id} (tenant alice)\n"
    with pytest.raises(AuthenticationError):
        store.authenticate("Bearer " + alice_key)
    assert store.authenticate("Bearer " + bob_key).name == "bob"
    # Again: said to be done before, with when, in case another key was meant.
    revoked_at = store.keys("alice")[0].revoked_at
    assert revoked_at is not None
    assert main(["keys", "revoke", alice.id]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{alice.id} (tenant alice) was already revoked at "
                          f"{revoked_at.isoformat(timespec='seconds')[:19]}")
    assert out.endswith("Z\n")


def test_cli_revoke_unknown_key_fails(store: TenantStore, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "revoke", "0badf00d"]) == 1
    assert capsys.readouterr().err == "sealgate: key_not_found: no such API key\n"


@pytest.mark.parametrize("form", ["key", "sg-{prefix}", "sg-{prefix}-…", "{prefix}", "{id}"])
def test_revoke_by_each_form_keys_list_and_create_show(store: TenantStore, form: str) -> None:
    """The key itself (a leaked one), its prefix as ``keys list`` prints it, with or without
    ``sg-``, the bare prefix, the id."""
    store.create_tenant("acme")
    info, key = store.create_key("acme")
    _, other = store.create_key("acme")
    given = key if form == "key" else form.format(prefix=info.prefix, id=info.id)
    revoked = store.revoke_key(given)
    assert (revoked.id, revoked.revoked_at is not None) == (info.id, True)
    with pytest.raises(AuthenticationError):
        store.authenticate("Bearer " + key)
    assert store.authenticate("Bearer " + other).name == "acme"


def test_revoke_a_wrong_key_with_a_right_prefix_revokes_nothing(store: TenantStore) -> None:
    """A whole key names a key by its hash only: a guess that shares the prefix names none."""
    store.create_tenant("acme")
    _, key = store.create_key("acme")
    wrong = key[:-1] + ("A" if key[-1] != "A" else "B")
    with pytest.raises(NotFound) as error:
        store.revoke_key(wrong)
    assert str(error.value) == "key_not_found: no such API key"
    assert store.authenticate("Bearer " + key).name == "acme"
    assert [k.revoked_at for k in store.keys()] == [None]


def test_revoke_refuses_a_shared_prefix_in_the_listed_form(store: TenantStore, data_dir: Path) -> None:
    alice, alice_key, _, bob_key = _colliding(store, data_dir)
    with pytest.raises(InvalidRequest) as info:
        store.revoke_key(f"sg-{alice.prefix}")
    assert info.value.code == "key_ambiguous" and alice_key not in str(info.value)
    assert all(k.revoked_at is None for k in store.keys())
    assert store.revoke_key(alice_key).id == alice.id  # the key itself is never ambiguous
    assert store.authenticate("Bearer " + bob_key).name == "bob"


def test_keys_of_an_unknown_tenant_is_an_error(store: TenantStore,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A misspelt tenant must not read as "no keys"."""
    store.create_tenant("acme")
    store.create_key("acme")
    assert [k.tenant for k in store.keys("acme")] == ["acme"]
    with pytest.raises(NotFound) as error:
        store.keys("acmee")
    assert error.value.code == "tenant_not_found"
    assert main(["keys", "list", "--tenant", "acmee"]) == 1
    assert capsys.readouterr() == ("", "sealgate: tenant_not_found: no tenant named 'acmee'\n")


def test_cli_revoke_by_the_form_keys_list_prints(store: TenantStore,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    store.create_tenant("acme")
    assert main(["keys", "create", "--tenant", "acme"]) == 0
    key = capsys.readouterr().out.strip()
    assert main(["keys", "list"]) == 0
    shown = capsys.readouterr().out.split()[2]
    assert shown == key[:11] + "-…"
    assert main(["keys", "revoke", shown.removesuffix("-…")]) == 0
    assert capsys.readouterr().out.startswith("revoked key_")
    with pytest.raises(AuthenticationError):
        store.authenticate("Bearer " + key)


def test_keys_list_shows_when_each_key_was_made_and_revoked(
        store: TenantStore, capsys: pytest.CaptureFixture[str]) -> None:
    """Times are RFC 3339 UTC, in the JSON and in the human listing."""
    store.create_tenant("acme")
    info, _ = store.create_key("acme")
    store.revoke_key(info.id)
    assert main(["keys", "list", "--json"]) == 0
    row, = json.loads(capsys.readouterr().out)
    for field in ("created_at", "revoked_at"):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", row[field]), row
        assert datetime.fromisoformat(row[field]) <= datetime.now(UTC)
    assert main(["keys", "list"]) == 0
    line = capsys.readouterr().out
    assert f"created {row['created_at'][:19]}Z" in line and f"revoked {row['revoked_at'][:19]}Z" in line


@pytest.mark.parametrize("command", [["tenants", "list"], ["keys", "list"], ["users", "list"],
                                     ["keys", "create", "--tenant", "acme"],
                                     ["keys", "revoke", "key_x"]])
def test_commands_that_need_state_refuse_a_data_directory_without_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        command: list[str]) -> None:
    """A mistyped data directory is said so, and nothing is created there; only `tenants
    create` starts a new state database."""
    missing = tmp_path / "no" / "such"
    monkeypatch.setenv("SEALGATE_DATA_DIR", str(missing))
    assert main(command) == 1
    assert f"no state database at {missing / 'sealgate.db'}" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()
    assert main(["tenants", "create", "acme"]) == 0 and (missing / "sealgate.db").is_file()


def test_the_cache_answers_only_keys_it_looked_up(data_dir: Path) -> None:
    """The request path asks the cache first (no database read) and reads the database off
    its event loop only on a miss; a key that does not exist is never cached."""
    store = TenantStore(f"sqlite:///{data_dir / 'sealgate.db'}", cache_ttl_s=60)
    store.create_tenant("acme")
    _, key = store.create_key("acme")
    authorization = f"Bearer {key}"
    assert store.cached(authorization) is None
    assert store.looked_up(authorization).name == "acme"
    hit = store.cached(authorization)
    assert hit is not None and hit.name == "acme"
    wrong = "Bearer " + key[:-4] + "AAAA"
    with pytest.raises(AuthenticationError):
        store.looked_up(wrong)
    assert store.cached(wrong) is None
    with pytest.raises(AuthenticationError, match="missing API key"):
        store.cached("Basic x")
    store.close()


def test_a_key_that_could_not_be_shown_is_revoked(store: TenantStore, data_dir: Path) -> None:
    """The key is stored before it is printed: when printing fails (a full disk here), its only
    copy is gone, and it was left active. (A child process: its standard output is the file.)"""
    import os
    import subprocess
    import sys

    store.create_tenant("acme")
    with open("/dev/full", "wb") as full:
        done = subprocess.run([sys.executable, "-m", "proxy.cli", "keys", "create", "--tenant", "acme"],
                              env={**os.environ, "SEALGATE_DATA_DIR": str(data_dir)}, stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=60, check=False)
    assert done.returncode == 1 and "was revoked" in done.stderr and "Traceback" not in done.stderr
    (info,) = store.keys("acme")
    assert info.revoked_at is not None
    closed = subprocess.run([sys.executable, "-m", "proxy.cli", "keys", "create", "--tenant", "acme"],
                            env={**os.environ, "SEALGATE_DATA_DIR": str(data_dir)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, timeout=60, check=False,
                            preexec_fn=lambda: os.close(1))
    assert closed.returncode == 2 and closed.stderr == "sealgate: standard output is closed\n"
    assert len(store.keys("acme")) == 1  # no key made that nobody could see


@pytest.mark.parametrize("argv", [["users", "remove", "bob"], ["users", "passwd", "bob"]])
def test_user_changes_in_a_mistyped_data_directory_create_nothing(
        data_dir: Path, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert main(argv) == 1
    assert "no state database at" in capsys.readouterr().err
    assert not (data_dir / "sealgate.db").exists()
