"""One timed `verify()` in a fresh process: ``python verify_child.py URL WORKERS [CHECKPOINT]``.

Run as a script, not as a module of the benchmarks' package, so that any checkout's
interpreter can run it: it imports nothing but the standard library and the `workflow` that
interpreter has installed (the library under test, or the baseline's in its own venv). Prints
one JSON line: wall and CPU time (this process and its workers), records, rows, whether it
was ok, and peak RSS before and after, of this process and of its worker processes.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import threading
import time
from typing import Any


def _status_kib(field: str, pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class ChildrenPeaks:
    """Samples the peak RSS (VmHWM) of this process's multiprocessing children while they run:
    the sum of their peaks, and the largest. (``getrusage(RUSAGE_CHILDREN)`` gives only the
    largest child's, and includes what a child inherits of this process's peak.)"""

    def __init__(self) -> None:
        self.peaks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            for child in multiprocessing.active_children():
                try:
                    peak = _status_kib("VmHWM", child.pid or 0)
                except OSError:
                    continue
                pid = child.pid or 0
                self.peaks[pid] = max(self.peaks.get(pid, 0), peak)

    def __enter__(self) -> ChildrenPeaks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main(url: str, workers: int, checkpoint_file: str | None) -> dict[str, Any]:
    import workflow as wf

    since = None
    if checkpoint_file is not None:
        from workflow.engine.checkpoint import load

        with open(checkpoint_file, "rb") as handle:
            since = load(handle.read())
    flow = wf.Workflow(url)
    flow.get  # noqa: B018 - everything imported and connected before measuring
    before, peak_before = _status_kib("VmRSS"), _status_kib("VmHWM")
    cpu_before = os.times()
    start = time.perf_counter()
    with ChildrenPeaks() as children:
        if since is None:
            report = flow.verify(workers=workers)
        else:
            report = flow.verify(since=since, workers=workers)
    seconds = time.perf_counter() - start
    cpu = os.times()
    cpu_seconds = sum(
        getattr(cpu, k) - getattr(cpu_before, k)
        for k in ("user", "system", "children_user", "children_system")
    )
    comparison = report.checkpoint
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "workers": workers,
        "since": checkpoint_file is not None,
        "records": report.records,
        "rows": report.rows,
        "ok": report.ok,
        "broken": len(report.broken),
        "extends": None if comparison is None else comparison.extends,
        "changed_records": None if comparison is None else comparison.changed_records,
        "rss_before_kib": before,
        "peak_before_kib": peak_before,
        "peak_rss_kib": _status_kib("VmHWM"),
        "workers_peak_rss_kib": sum(children.peaks.values()),
        "worker_peak_rss_kib": max(children.peaks.values(), default=0),
        "worker_processes": len(children.peaks),
        "library": os.path.dirname(os.path.dirname(os.path.abspath(wf.__file__))),
    }


if __name__ == "__main__":
    found = main(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None)
    print(json.dumps(found))
