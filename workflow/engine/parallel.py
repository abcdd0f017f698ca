"""Verification over disjoint ranges of record ids, in several processes at once; and a
checkpoint's covered rows, a stretch between two of its anchors per task.

Generic: the machines come from a registry named by import path (``"package.module:NAME"``,
a sequence of `Machine`), which each worker process imports for itself. Verification is
CPU-bound in Python (replaying, hashing, reading the rows back), so threads would not help;
processes do, up to the number of cores.

The 128-bit id space is cut into ``4 * workers`` equal ranges, handed out to a pool of
``workers`` processes started with the "spawn" method (the same on every OS, and safe from a
threaded host). Each process opens its own engine from the database URL and verifies every
machine over each range it is given, in batches, so memory stays flat in every process. The
reports are put back together in range order, which is id order, so the merged report is the
one a single process makes: for each machine in the registry's order its damaged records in
id order, then its histories without a record. The checks over the whole database (the rows
of unknown machines, the audits across machines) run once, in the caller's process.

For `verify(since=...)`, `segments_hold` checks the stretches of a checkpoint's covered rows
(`workflow.engine.checkpoint.segments`) side by side: each folds from one anchor's digest to
the next's on its own. Only the answer comes back (every stretch holds, or not); when one does
not, the caller makes one pass over every covered row in order to say where the history
departs, as one process does.

A failure in a worker comes back as the `WorkflowError` it raised there (`StorageError`,
`ConcurrentUpdate`, ...), with the cause's first line chained; never a traceback of the child.
"""

from __future__ import annotations

import gc
import importlib
import itertools
import multiprocessing
import queue as queue_module
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from workflow.engine.checkpoint import Segment, check_segment
from workflow.engine.store import DatabaseFailure, Store
from workflow.engine.verification import (
    BrokenRecord,
    VerificationReport,
    count_records,
    history_marks,
    verify,
)
from workflow.errors import StorageError, WorkflowError

if TYPE_CHECKING:
    from workflow.engine.registry import Machine

IdRange = tuple[uuid.UUID | None, uuid.UUID | None]
Progress = Callable[[int, int | None], None]
"""Called with the number of records checked so far and the number there are (or None)."""

RANGES_PER_WORKER = 4
"""Ranges handed out per process: a range denser than the others delays one process by at
most a quarter of its share."""

_SPACE = 1 << 128


def id_ranges(parts: int) -> list[IdRange]:
    """``parts`` disjoint ranges of equal width that cover every id, in id order; the first is
    open below and the last above (so ids a UUID can't hold, planted on SQLite, are covered)."""
    cuts: list[uuid.UUID | None] = [uuid.UUID(int=i * _SPACE // parts) for i in range(1, parts)]
    bounds = [None, *cuts, None]
    return list(itertools.pairwise(bounds))


def runs_in_process(store: Store) -> bool:
    """Whether verification must stay in this process: a `Session` bind (its transaction is
    the caller's, and other processes can't see into it) or a SQLite in-memory database
    (which no other process can open)."""
    if store.session is not None:
        return True
    url = store.engine.url
    if url.get_backend_name() == "sqlite":
        from workflow.engine.store import sqlite_file

        return sqlite_file(url) is None
    return False


def record_count(store: Store, machines: Sequence[Machine[Any, Any]]) -> int | None:
    """How many records there are, for the progress callback; None if they can't be counted."""
    try:
        return count_records(store, machines)
    except WorkflowError:
        return None


def verify_all(
    store: Store,
    machines: Sequence[Machine[Any, Any]],
    *,
    batch_size: int,
    key: bytes | None = None,
    progress: Progress | None = None,
) -> VerificationReport:
    """Every machine in this process, one after the other (``workers=1``); hashes checked
    under the chain ``key`` when there is one."""
    total = record_count(store, machines) if progress is not None else None
    marks = history_marks(store)
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        assert progress is not None
        progress(done, total)

    reports = [
        verify(
            store,
            m.definition,
            m.repository,
            batch_size=batch_size,
            key=key,
            marks=marks,
            progress=None if progress is None else advance,
        )
        for m in machines
    ]
    return _merged([[r] for r in reports], keyed=key is not None)


def verify_parallel(
    store: Store,
    machines: Sequence[Machine[Any, Any]],
    registry: str,
    *,
    workers: int,
    batch_size: int,
    key: bytes | None = None,
    progress: Progress | None = None,
) -> VerificationReport:
    """Every machine, over ``RANGES_PER_WORKER * workers`` ranges in ``workers`` processes.

    ``registry`` names the machines for the workers to import (``"module:NAME"``); it must
    name the same machines, in the same order, as ``machines``. The chain ``key``, when there
    is one, goes to the workers through the pipe that starts them, never through a file or the
    environment."""
    url = _url(store)
    marks = history_marks(store)
    ranges = id_ranges(RANGES_PER_WORKER * workers)
    total = record_count(store, machines) if progress is not None else None
    tasks = [_Task(url, registry, low, high, batch_size, key, marks) for low, high in ranges]
    results: list[_Reports] = _in_processes(_verify_range, tasks, workers, total, progress)
    by_machine = [
        [results[index].reports[position] for index in range(len(ranges))]
        for position in range(len(machines))
    ]
    return _merged(by_machine, keyed=key is not None)


def segments_hold(
    store: Store,
    last_row: int,
    cut: Sequence[Segment],
    *,
    workers: int,
    key: bytes | None = None,
    progress: Progress | None = None,
) -> bool:
    """Whether every segment of a checkpoint's covered rows still holds (`check_segment`),
    checked in ``workers`` processes; ``progress`` counts covered rows."""
    url = _url(store)
    tasks = [_SegmentTask(url, last_row, segment, key) for segment in cut]
    total = sum(segment.rows for segment in cut)
    return all(_in_processes(_check_segment, tasks, workers, total, progress))


def _url(store: Store) -> str:
    return store.engine.url.render_as_string(hide_password=False)


def _in_processes(
    run: Callable[[Any], Any],
    tasks: Sequence[Any],
    workers: int,
    total: int | None,
    progress: Progress | None,
) -> list[Any]:
    """``run(task)`` for every task, in a pool of ``workers`` spawned processes; the results
    in the tasks' order. A `WorkflowError` raised in a worker is raised here (`_Failure`);
    a worker that dies is `StorageError`. ``progress`` hears what the workers count."""
    context = multiprocessing.get_context("spawn")
    counts: Any = context.Queue() if progress is not None else None
    results: dict[int, Any] = {}
    executor = ProcessPoolExecutor(
        max_workers=max(1, min(workers, len(tasks))),
        mp_context=context,
        initializer=_start_worker,
        initargs=(counts,),
    )
    done = 0
    try:
        pending: dict[Future[Any], int] = {
            executor.submit(run, task): index for index, task in enumerate(tasks)
        }
        while pending:
            finished, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            if counts is not None:
                done = _drain(counts, done, total, progress)
            for future in finished:
                index = pending.pop(future)
                outcome = future.result()
                if isinstance(outcome, _Failure):
                    raise outcome.error()
                results[index] = outcome
        if counts is not None:
            _drain(counts, done, total, progress)
    except BrokenProcessPool as exc:
        raise StorageError(
            "a verification worker process stopped before it finished (killed, or out of "
            "memory); run verify again, or with workers=1"
        ) from DatabaseFailure(f"BrokenProcessPool: {exc}")
    except BaseException:
        _stop(executor)
        raise
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        if counts is not None:
            counts.close()
            counts.join_thread()
    return [results[index] for index in range(len(tasks))]


def _merged(
    by_machine: Sequence[Sequence[VerificationReport]],
    *,
    keyed: bool,
) -> VerificationReport:
    """One report from each machine's reports over its ranges in id order, as one process
    makes it: per machine its damaged records, then its histories without a record. (The
    checks over the whole database, across machines and of unknown machines, are the
    caller's: `Workflow.verify` runs them once, after.)"""
    records = rows = 0
    broken: list[BrokenRecord] = []
    for reports in by_machine:
        orphans: list[BrokenRecord] = []
        for report in reports:
            records += report.records
            rows += report.rows
            for b in report.broken:
                (orphans if b.problem == "history_without_record" else broken).append(b)
        broken.extend(orphans)
    return VerificationReport(records=records, rows=rows, broken=broken, keyed=keyed)


def _drain(counts: Any, done: int, total: int | None, progress: Progress | None) -> int:
    moved = 0
    while True:
        try:
            moved += counts.get_nowait()
        except queue_module.Empty:
            break
    if moved and progress is not None:
        done += moved
        progress(done, total)
    return done


def _stop(executor: ProcessPoolExecutor) -> None:
    """End the worker processes now (an error elsewhere, or Ctrl-C): their reports are no
    longer wanted, and a long range would otherwise run to its end."""
    terminate = getattr(executor, "terminate_workers", None)  # Python 3.14
    if terminate is not None:
        terminate()
        return
    for process in list(getattr(executor, "_processes", {}).values()):
        process.terminate()


# -- in the worker processes ------------------------------------------------------------------


@dataclass(frozen=True)
class _Task:
    url: str
    registry: str
    low: uuid.UUID | None
    high: uuid.UUID | None
    batch_size: int
    key: bytes | None
    marks: dict[str, int]

    def __repr__(self) -> str:  # never the URL's password nor the key, whatever prints it
        return f"_Task({self.registry}, {self.low}..{self.high})"


@dataclass(frozen=True)
class _Reports:
    reports: list[VerificationReport]
    """One per machine, in the registry's order."""


@dataclass(frozen=True)
class _Failure:
    """A `WorkflowError` raised in a worker, as plain data: its class, arguments and
    attributes, and the first line of its cause (no traceback, no statement parameters)."""

    module: str
    name: str
    args: tuple[Any, ...]
    state: dict[str, Any]
    cause: str | None

    @classmethod
    def of(cls, exc: BaseException) -> _Failure:
        if not isinstance(exc, WorkflowError):
            return cls(
                StorageError.__module__,
                StorageError.__name__,
                (f"verification failed in a worker process: {_described(exc)}",),
                {},
                None,
            )
        state = {k: v for k, v in vars(exc).items() if isinstance(v, _PLAIN)}
        cause = None if exc.__cause__ is None else _described(exc.__cause__)
        args = tuple(a for a in exc.args if isinstance(a, _PLAIN))
        return cls(type(exc).__module__, type(exc).__qualname__, args, state, cause)

    def error(self) -> WorkflowError:
        """The error again, of the same class, in this process."""
        kind: Any = getattr(importlib.import_module(self.module), self.name, None)
        if not (isinstance(kind, type) and issubclass(kind, WorkflowError)):
            kind = StorageError
        error: WorkflowError = kind.__new__(kind)
        error.args = self.args
        vars(error).update(self.state)
        if self.cause is not None:
            error.__cause__ = DatabaseFailure(self.cause)
        return error


_PLAIN = (str, int, float, bool, uuid.UUID, type(None))

_Outcome = _Reports | _Failure

_counts: Any = None
_stores: dict[str, Store] = {}


def _start_worker(counts: Any) -> None:
    global _counts
    _counts = counts
    # The worker is the library's own process: what the imports made lives as long as it does,
    # so the garbage collector's full passes need not walk it again and again.
    gc.freeze()


def _described(exc: BaseException) -> str:
    if isinstance(exc, DatabaseFailure):
        return str(exc)
    if isinstance(exc, SQLAlchemyError):
        return str(DatabaseFailure.of(exc))
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:300]}" if lines else type(exc).__name__


def _report_count(n: int) -> None:
    _counts.put(n)


@dataclass(frozen=True)
class _SegmentTask:
    url: str
    last_row: int
    segment: Segment
    key: bytes | None

    def __repr__(self) -> str:  # never the URL's password nor the key, whatever prints it
        return f"_SegmentTask({self.segment.bounds})"


def _store(url: str) -> Store:
    store = _stores.get(url)
    if store is None:
        store = _stores[url] = Store(url)
    return store


def _check_segment(task: _SegmentTask) -> bool | _Failure:
    """Whether one segment of a checkpoint's covered rows holds; in a worker process."""
    try:
        held = check_segment(_store(task.url), task.last_row, task.segment, task.key)
    except Exception as exc:  # comes back as data: the parent raises it again
        return _Failure.of(exc)
    if _counts is not None:
        _counts.put(task.segment.rows)
    return held


def _verify_range(task: _Task) -> _Outcome:
    """Every machine of the registry over one range; in a worker process."""
    try:
        store = _store(task.url)
        module, _, name = task.registry.partition(":")
        machines: Sequence[Machine[Any, Any]] = getattr(importlib.import_module(module), name)
        progress = _report_count if _counts is not None else None
        return _Reports(
            [
                verify(
                    store,
                    m.definition,
                    m.repository,
                    batch_size=task.batch_size,
                    id_range=(task.low, task.high),
                    key=task.key,
                    marks=task.marks,
                    progress=progress,
                )
                for m in machines
            ]
        )
    except Exception as exc:  # comes back as data: the parent raises it again
        return _Failure.of(exc)
