"""Peak RSS across many single commands in one fresh process.

The parent writes the submitted applications; a child process opens the workflow and runs
transmit, approve, produce and mark_ready over all of them (4 commands each), reporting its
current and peak RSS at checkpoints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import workflow as wf

from . import data
from .common import ROOT, Database, peak_rss_kib, rss_kib
from .single import actor


def bench_memory(db: Database, *, commands: int, checkpoints: list[int]) -> dict[str, Any]:
    apps = commands // len(data.SINGLE_PATH)
    data.populate(db, apps)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.benchmarks.memory",
            db.url,
            str(db.path) if db.path else "",
            ",".join(str(c) for c in checkpoints),
        ],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return {"commands": apps * len(data.SINGLE_PATH), **json.loads(out.stdout.splitlines()[-1])}


def _child(url: str, path: str, checkpoints: list[int]) -> None:
    import sqlite3

    if path:
        conn = sqlite3.connect(path)
        ids = [uuid.UUID(hex=r[0]) for r in conn.execute("SELECT id FROM idcard_applications")]
        conn.close()
    else:  # pragma: no cover - PostgreSQL
        import psycopg

        from .common import libpq_url

        with psycopg.connect(libpq_url(url)) as pg:
            ids = [r[0] for r in pg.execute("SELECT id FROM idcard_applications")]
    flow = wf.Workflow(url)
    flow.get(ids[0])
    points: list[dict[str, Any]] = [
        {"commands": 0, "rss_kib": rss_kib(), "peak_rss_kib": peak_rss_kib(), "seconds": 0.0}
    ]
    done = 0
    start = time.perf_counter()
    for event in data.SINGLE_PATH:
        command = getattr(flow, event)
        who = actor(event)
        for app_id in ids:
            command(app_id, actor=who)
            done += 1
            if done in checkpoints:
                points.append(
                    {
                        "commands": done,
                        "rss_kib": rss_kib(),
                        "peak_rss_kib": peak_rss_kib(),
                        "seconds": time.perf_counter() - start,
                    }
                )
    flow.close()
    print(json.dumps({"points": points}))


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2], [int(c) for c in sys.argv[3].split(",")])
