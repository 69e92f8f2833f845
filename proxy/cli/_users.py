"""``sealgate users …``: dashboard reviewer accounts."""

from __future__ import annotations

import argparse
import getpass
import sys

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from proxy.cli._common import add_config_arg

    users = sub.add_parser("users", help="manage dashboard accounts")
    cmd = users.add_subparsers(dest="users_command", metavar="COMMAND", required=True)
    create = cmd.add_parser("create", help="create an account")
    create.add_argument("name")
    create.add_argument("--role", required=True, choices=("admin", "reviewer", "auditor"))
    create.add_argument("--tenant", help="limit a reviewer to this tenant (name)")
    create.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of stdin")
    passwd = cmd.add_parser("passwd", help="set an account's password; its sessions end")
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of stdin")
    remove = cmd.add_parser("remove", help="remove an account; its sessions end")
    remove.add_argument("name")
    listing = cmd.add_parser("list", help="list accounts")
    listing.add_argument("--json", action="store_true")
    for parser in (create, passwd, remove, listing):
        add_config_arg(parser)
    create.set_defaults(func=_create)
    passwd.set_defaults(func=_passwd)
    remove.set_defaults(func=_remove)
    listing.set_defaults(func=_list)


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        if not sys.stdin.isatty():  # getpass would warn that it echoes, then read the pipe
            raise ValueError("no_terminal: no terminal to ask for the password on; pipe it "
                             "with --password-stdin")
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise ValueError("the passwords differ")
    try:  # bytes that are not UTF-8 arrive as lone surrogates, which no hash can take
        password.encode()
    except UnicodeEncodeError:
        raise ValueError("invalid_password: the password is not valid UTF-8 text") from None
    return password


def _create(args: argparse.Namespace) -> int:
    from proxy.cli._common import fail, load_settings, missing_state
    from proxy.errors import SealgateError
    from proxy.tenants import TenantStore
    from proxy.users import UserError, UserStore

    settings = load_settings(args)
    # A reviewer's tenant must exist already: without a state database (a mistyped data
    # directory) say so, rather than create an empty one and then refuse the tenant.
    if args.tenant is not None and (missing := missing_state(settings)) is not None:
        return fail(missing)
    try:
        password = _password(args)
        if args.tenant is not None:  # "" too: it names no tenant
            tenants = TenantStore(settings.tenants_url)
            try:
                tenants.tenant(args.tenant)
            finally:
                tenants.close()
        store = UserStore(settings.tenants_url)
        try:
            user = store.create(args.name, args.role, password, args.tenant)
        finally:
            store.close()
    except (UserError, SealgateError, ValueError) as exc:
        return fail(str(exc))
    print(f"created {user.role} {user.username}" + (f" for tenant {user.tenant}"
                                                     if user.tenant else ""))
    return 0


def _passwd(args: argparse.Namespace) -> int:
    from proxy.cli._common import fail, load_settings, missing_state
    from proxy.errors import SealgateError
    from proxy.users import UserError, UserStore

    settings = load_settings(args)
    if problem := missing_state(settings):  # a mistyped data directory: nothing to change
        return fail(problem)
    try:
        password = _password(args)
        store = UserStore(settings.tenants_url)
        try:
            store.set_password(args.name, password)
        finally:
            store.close()
    except (UserError, SealgateError, ValueError) as exc:
        return fail(str(exc))
    print(f"password changed for {args.name}; its sessions have ended")
    return 0


def _remove(args: argparse.Namespace) -> int:
    from proxy.cli._common import fail, load_settings, missing_state
    from proxy.errors import SealgateError
    from proxy.users import UserError, UserStore

    settings = load_settings(args)
    if problem := missing_state(settings):  # a mistyped data directory: nothing to remove
        return fail(problem)
    try:
        store = UserStore(settings.tenants_url)
        try:
            store.remove(args.name)
        finally:
            store.close()
    except (UserError, SealgateError) as exc:
        return fail(str(exc))
    print(f"removed {args.name}; its sessions have ended")
    return 0


def _list(args: argparse.Namespace) -> int:
    from proxy.cli._common import fail, load_settings, missing_state, print_json
    from proxy.errors import SealgateError
    from proxy.users import UserStore

    settings = load_settings(args)
    if problem := missing_state(settings):
        return fail(problem)
    try:
        store = UserStore(settings.tenants_url)
        try:
            users = store.users()
        finally:
            store.close()
    except SealgateError as exc:
        return fail(str(exc))
    if args.json:
        print_json([{"username": u.username, "role": u.role, "tenant": u.tenant} for u in users])
    else:
        for u in users:
            print(f"{u.username}\t{u.role}\t{u.tenant or '*'}")
    return 0
