"""Child process for the crash test: appends forever, printing each new checkpoint note.

Run as ``python -m tests.audit.crash_child URL KEYFILE``; the parent SIGKILLs it mid-load.
"""

from __future__ import annotations

import asyncio
import base64
import sys

from audit import AuditLog, load_or_create_signing_key
from tests.audit.conftest import ORIGIN, make_record


async def main(url: str, key_file: str) -> None:
    log = await AuditLog.open(url, load_or_create_signing_key(key_file), ORIGIN,
                              checkpoint_every_n=50, checkpoint_every_ms=20)  # fmt: skip
    seen, i = -1, 0
    while True:
        await asyncio.gather(*[log.append(make_record(i + j)) for j in range(20)])
        i += 20
        checkpoint = await log.checkpoint()
        if checkpoint.size != seen:
            seen = checkpoint.size
            print("CP", base64.b64encode(checkpoint.note.encode()).decode(), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
