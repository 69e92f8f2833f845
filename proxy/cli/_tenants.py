"""``sealgate tenants …`` and ``sealgate keys …``: tenant and API key administration."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from proxy.cli._common import add_config_arg

    tenants = sub.add_parser("tenants", help="manage tenants")
    tcmd = tenants.add_subparsers(dest="tenants_command", metavar="COMMAND", required=True)
    create = tcmd.add_parser("create", help="create a tenant")
    create.add_argument("name")
    create.add_argument("--exist-ok", action="store_true", help="succeed if it already exists")
    create.add_argument("--json", action="store_true")
    listing = tcmd.add_parser("list", help="list tenants")
    listing.add_argument("--json", action="store_true")
    for parser in (create, listing):
        add_config_arg(parser)
    create.set_defaults(func=_tenant_create)
    listing.set_defaults(func=_tenant_list)

    keys = sub.add_parser("keys", help="manage API keys")
    kcmd = keys.add_subparsers(dest="keys_command", metavar="COMMAND", required=True)
    kcreate = kcmd.add_parser("create", help="create a key (printed once, on its own line)")
    kcreate.add_argument("--tenant", required=True)
    klist = kcmd.add_parser("list", help="list keys (never the keys themselves)")
    klist.add_argument("--tenant")
    klist.add_argument("--json", action="store_true")
    krevoke = kcmd.add_parser(
        "revoke", help="revoke a key by id, prefix or the key itself",
        description="Revoke one API key. A prefix that several keys share is refused and "
                    "nothing is revoked: name the key by its id (key_…) from 'keys list'.")
    krevoke.add_argument("key", help="key id (key_…), its prefix as 'keys list' shows it "
                                     "(sg-XXXXXXXX, 'sg-' optional) or the whole key")
    for parser in (kcreate, klist, krevoke):
        add_config_arg(parser)
    kcreate.set_defaults(func=_key_create)
    klist.set_defaults(func=_key_list)
    krevoke.set_defaults(func=_key_revoke)


def _run(args: argparse.Namespace, action, *, existing: bool = True):  # type: ignore[no-untyped-def]
    """``action(store)``; an error opening the store or in the action is one line on stderr.
    ``existing``: the action needs tenants already made, so a state database that is not
    there is an error (a mistyped data directory), not an empty one to create."""
    from proxy.cli._common import fail, load_settings, missing_state
    from proxy.errors import SealgateError
    from proxy.tenants import TenantStore

    settings = load_settings(args)
    if existing and (problem := missing_state(settings)):
        return fail(problem)
    try:
        store = TenantStore(settings.tenants_url)
    except SealgateError as exc:
        return fail(str(exc))
    try:
        return action(store)
    except SealgateError as exc:
        return fail(str(exc))
    finally:
        store.close()


def _tenant_create(args: argparse.Namespace) -> int:
    from proxy.cli._common import print_json

    def act(store) -> int:  # type: ignore[no-untyped-def]
        tenant = store.create_tenant(args.name, exist_ok=args.exist_ok)
        if args.json:
            print_json({"id": tenant.id, "name": tenant.name, "pseudonym": tenant.pseudonym})
        else:
            print(f"tenant {tenant.name} ({tenant.id}, records as {tenant.pseudonym})")
        return 0

    return int(_run(args, act, existing=False))


def _tenant_list(args: argparse.Namespace) -> int:
    from proxy.cli._common import print_json

    def act(store) -> int:  # type: ignore[no-untyped-def]
        tenants = store.tenants()
        if args.json:
            print_json([{"id": t.id, "name": t.name, "pseudonym": t.pseudonym} for t in tenants])
        for t in [] if args.json else tenants:
            print(f"{t.name:<24} {t.id:<22} {t.pseudonym}")
        return 0

    return int(_run(args, act))


def _key_create(args: argparse.Namespace) -> int:
    import sys

    from proxy.cli._common import fail

    def act(store) -> int:  # type: ignore[no-untyped-def]
        info, key = store.create_key(args.tenant)
        print(f"created key {info.id} for tenant {info.tenant}; it is shown once:", file=sys.stderr)
        try:
            print(key, flush=True)
        except (OSError, ValueError):
            # The only copy of the key is gone (a full disk, a reader that left): a key nobody
            # holds must not stay active.
            store.revoke_key(info.id)
            return fail(f"the key could not be written to standard output; key {info.id} "
                        "was revoked")
        return 0

    return int(_run(args, act))


def _iso(when: datetime | None) -> str | None:
    """An instant as RFC 3339 UTC (``2026-11-24T08:01:44.164044Z``); a naive one is UTC, as
    the store writes it."""
    if when is None:
        return None
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return when.isoformat(timespec="microseconds") + "Z"


def _key_list(args: argparse.Namespace) -> int:
    from proxy.cli._common import print_json

    def act(store) -> int:  # type: ignore[no-untyped-def]
        keys = store.keys(args.tenant)
        rows = [{"id": k.id, "tenant": k.tenant, "prefix": k.prefix,
                 "created_at": _iso(k.created_at), "revoked_at": _iso(k.revoked_at)} for k in keys]
        if args.json:
            print_json(rows)
        for r in [] if args.json else rows:
            state = f"revoked {r['revoked_at'][:19]}Z" if r["revoked_at"] else "active"
            print(f"{r['id']:<22} {r['tenant']:<20} sg-{r['prefix']}-…  "
                  f"created {r['created_at'][:19]}Z  {state}")
        return 0

    return int(_run(args, act))


def _key_revoke(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    def act(store) -> int:  # type: ignore[no-untyped-def]
        asked = datetime.now(UTC)
        info = store.revoke_key(args.key)
        when = info.revoked_at if info.revoked_at.tzinfo else info.revoked_at.replace(tzinfo=UTC)
        if when < asked:  # revoked before: said so, in case another key was meant
            print(f"{info.id} (tenant {info.tenant}) was already revoked at "
                  f"{when.isoformat(timespec='seconds').replace('+00:00', 'Z')}")
        else:
            print(f"revoked {info.id} (tenant {info.tenant})")
        return 0

    return int(_run(args, act))
