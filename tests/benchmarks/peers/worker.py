"""The process a variant of the peers phase lives in: ``python -m tests.benchmarks.peers.worker
IN OUT``, with the two pipe descriptors the coordinator passes.

A process per variant keeps the frameworks apart (Django's settings are per process; each
SQLAlchemy peer has its own mappings and engine) and gives each the same conditions: while one
variant runs its round, the others wait in their processes, doing nothing. The variant times
its own round, so no message crosses the pipes while the clock runs.

This module imports nothing of the project or of any framework before the variant's own
module: the variant module's imports come first, in its own order. sqlalchemy-fsm needs that
(see `with_sqlalchemy_fsm`).
"""

from __future__ import annotations

import importlib
import sys
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any


def serve(commands: Connection, answers: Connection) -> None:
    """Build ``module:Class(*args)`` from the first message, then answer commands until
    ``close``: ``(command, params)`` in, ``("ok", result)`` or ``("error", traceback)`` out."""
    spec, args = commands.recv()
    variant: Any = None
    while True:
        command, params = commands.recv()
        try:
            if variant is None:
                module, name = spec.split(":")
                variant = getattr(importlib.import_module(module), name)(*args)
            if command == "run":
                wall, cpu = time.perf_counter(), time.process_time()
                done = variant.run(*params)
                result: Any = (done, time.perf_counter() - wall, time.process_time() - cpu)
            else:
                result = getattr(variant, command)(*params)
        except Exception:
            answers.send(("error", traceback.format_exc()))
        else:
            answers.send(("ok", result))
        if command == "close":
            return


if __name__ == "__main__":
    serve(
        Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False)
    )
