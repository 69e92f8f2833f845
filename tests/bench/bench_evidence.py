"""Evidence export: time and peak memory of ``sealgate evidence export`` for a window of a tenth
of the log and for the whole log (target: memory that does not grow with the window).

Measurement setup: the log is filled in-process through ``AuditLog`` as for the dashboard bench;
``sealgate serve`` starts once on that data directory (so it keeps an identity document that
attests the log key) and stops; each export then runs as its own process, which reports its
peak resident memory (``VmHWM``) as it ends.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from proxy.evidence import verify_bundle
from tests.bench.bench_dashboard import CONFIG, _prepare
from tests.server import ROOT, start_gateway

_GROWTH = 1.5
"""The whole log's export may take at most this much more memory than a tenth's."""


def _iso(time_us: int) -> str:
    seconds, micros = divmod(time_us, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{micros:06d}+00:00"


# The CLI, then the process's own high-water mark: a child's ru_maxrss would also count the
# pages it shared with this (large) process between fork and exec.
_RUN = ("import sys\nfrom proxy.cli import main\nrc = main(sys.argv[1:])\n"
        "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')))\n"
        "sys.exit(rc)")


def _export(env: dict[str, str], start: str, end: str, out: Path) -> tuple[float, float]:
    """Seconds and peak RSS (MiB) of one export run."""
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", _RUN, "evidence", "export", "--from", start,
                          "--to", end, "-o", str(out)], cwd=ROOT, env=env, capture_output=True,
                         check=False)
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    return time.perf_counter() - started, int(run.stdout.split()[-1]) / 1024  # VmHWM is in KiB


def run(quick: bool = False) -> list[dict[str, Any]]:
    n = 20_000 if quick else 100_000
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        _prepare(data_dir, n)
        gateway = start_gateway(Path(tmp), CONFIG, {"SEALGATE_DATA_DIR": str(data_dir)})
        env = gateway.env
        gateway.stop()  # it kept its identity document and closed the log with a checkpoint
        with sqlite3.connect(data_dir / "audit.db") as db:
            times = [t for (t,) in db.execute("SELECT time_us FROM audit_records ORDER BY leaf_index")]
        peaks = {}
        for label, count in (("a tenth of the log", n // 10), ("the whole log", n)):
            out = Path(tmp) / f"bundle-{count}.zip"
            seconds, peak = _export(env, _iso(times[0]), _iso(times[count - 1] + 1), out)
            peaks[count] = peak
            verdict = verify_bundle(out.read_bytes(), allow_simulated=True)
            # The bench's records cite made-up policy and evidence digests; the rest must hold.
            proved = {c.name: c.ok for c in verdict.checks}
            assert all(proved[c] for c in ("record set", "record signature", "inclusion",
                                           "record window", "consistency")), verdict.table()
            rows.append({"name": f"evidence export of {label} ({count} records), peak RSS MiB",
                         "value": round(peak, 1), "seconds": round(seconds, 2),
                         "bundle_mib": round(out.stat().st_size / (1 << 20), 1)})
        growth = peaks[n] / peaks[n // 10]
        rows.append({"name": f"export memory, whole log / a tenth ({n} / {n // 10} records)",
                     "value": round(growth, 2), "target": f"<= {_GROWTH}", "ok": growth <= _GROWTH})
    return rows


if __name__ == "__main__":
    for row in run(quick=True):
        print(row)
