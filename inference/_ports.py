"""Who holds a loopback port: the supervised vLLM child's own process group, or another process.

A port found free is checked, then the child takes seconds to import vLLM before it binds; a
local process that binds in between would answer health checks and receive prompts and the
API key. So a health answer only counts when the listening socket (``/proc/net/tcp``,
``tcp6``) is held by a process of the child's group (``/proc/<pid>/fd``). Linux only; where
``/proc`` cannot be read the answer is "unknown" and the caller fails closed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import struct
from pathlib import Path

__all__ = ["port_free", "port_holder"]


def port_free(port: int) -> bool:
    """Nothing listens on the port. (SO_REUSEADDR: our own child's connections left in
    TIME_WAIT after it died must not block its restart; on Linux a listener still does.)"""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


_PROC = Path("/proc")
_LOOPBACK_LISTENERS = frozenset({ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv4Address(0),
                                 ipaddress.IPv6Address(0)})
"""Listening addresses that can take a connection to 127.0.0.1: itself, 0.0.0.0 and ``::``."""


def _listeners(port: int) -> set[int]:
    """Socket inodes listening on the port where a connection to 127.0.0.1 can land, from
    /proc/net/tcp and tcp6 (addresses are printed as native-endian 32-bit words). Raises
    OSError where they cannot be read; a missing tcp6 is a kernel without IPv6."""
    inodes: set[int] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (_PROC / "net" / table).read_text().splitlines()[1:]
        except FileNotFoundError:
            if table == "tcp6":
                continue
            raise
        for line in lines:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if fields[3] != "0A" or int(hex_port, 16) != port:  # 0A: TCP_LISTEN
                continue
            raw = b"".join(struct.pack("=I", int(address[i:i + 8], 16))
                           for i in range(0, len(address), 8))
            ip = ipaddress.ip_address(raw)
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            if ip in _LOOPBACK_LISTENERS:
                inodes.add(int(fields[9]))
    return inodes


def _group_holds(pgid: int, inodes: set[int]) -> bool:
    """Processes of the group hold every one of the sockets. A process that cannot be read
    counts as not holding them (fail closed)."""
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # "pid (comm) state ppid pgrp ...": comm may hold anything but a last ")".
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            wanted -= _open_files(entry)
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile, or not readable
        if not wanted:
            return True
    return False


def _open_files(process: Path) -> set[str]:
    """What the process's descriptors point to; one closed while being read is skipped (not
    the whole process: vLLM opens and closes files all through its start-up)."""
    targets: set[str] = set()
    for fd in (process / "fd").iterdir():
        with contextlib.suppress(OSError):
            targets.add(os.readlink(fd))
    return targets


def port_holder(port: int, pgid: int) -> bool | None:
    """Whether the process group ``pgid`` (the child's) holds what listens on the loopback
    port; None when nothing listens there. Raises OSError (ValueError) where /proc cannot be
    read (parsed)."""
    inodes = _listeners(port)
    if not inodes:
        return None
    return _group_holds(pgid, inodes)

