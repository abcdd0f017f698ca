"""The command line: ``idcard-workflow`` (also ``python -m workflow``).

Read-only views of a database (history, verification, overdue lists, what an actor may do),
its migrations, the state diagrams and the demo. Every read command takes ``--json``.

Citizen numbers are shown masked everywhere (JSON included) and receipt numbers never. Exit
codes: 0 fine, 1 verification found damage, 2 a usage or input error (or a refusal: a demo over
a database it did not create, a downgrade not confirmed), 3 the database or a migration failed;
the message goes to stderr, in one line and without a traceback.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import typer.core
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from pydantic import BaseModel, ConfigDict, ValidationError
from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

import workflow as wf
from workflow import demo as demo_module
from workflow import diagrams, grants
from workflow.audit.command import report as report_command
from workflow.audit.files import (
    PublicKeyOption,
    SinceOption,
    read_chain_key,
    read_private_key,
    read_since,
)
from workflow.engine.checkpoint import Comparison
from workflow.engine.definition import Definition
from workflow.errors import NO_REVISION
from workflow.machines import REGISTRY
from workflow.models.citizen_id import mask_citizen_id

PROG = "idcard-workflow"
DB_VARIABLE = "IDCARD_WORKFLOW_DB"
"""The environment variable naming the database when ``--db`` is not given."""
DEFAULT_DB_URL = f"sqlite:///{demo_module.DEFAULT_DB.as_posix()}"
"""The demo's SQLite file, relative to the current directory."""

_CITIZEN_NUMBER = re.compile(r"(?<![0-9A-Za-z])[0-9]{17}[0-9Xx](?![0-9A-Za-z])")
"""A citizen number standing on its own (18 digits inside a hash are not one)."""
_PIPE_WIDTH = 200
"""Width of tables written to a pipe or a file (a terminal's own width is used otherwise)."""
_TEXT_WIDTH = 24
"""The least width of a table's wrapped text columns (messages, details)."""


class ExitCode(IntEnum):
    """The process exit codes."""

    OK = 0
    DAMAGED = 1
    """`verify` found at least one damaged record."""
    USAGE = 2
    """A usage or input error, or a refusal (a demo over a database it did not create, a
    downgrade not confirmed): the message on stderr names the option, field or rule."""
    FAILED = 3
    """The operation failed: the database could not be reached or read, or a migration failed.
    The message on stderr names the cause."""


EPILOG = (
    "Exit codes: 0 fine; 1 verify found a damaged record (or a history that is not a path of "
    "the machine); 2 usage or input error: a bad option, id, role or unit, an unknown "
    "application or revision, a database file that is missing or not at the latest revision "
    f"(run '{PROG} db upgrade'), Graphviz missing, a demo over a database it did not create "
    "(without --force), a downgrade not confirmed (without --yes); 3 the operation failed: the "
    "database can't be reached, read or written, or a migration failed. The message goes to stderr."
    "\n\n"
    f"Database: --db URL, else the environment variable {DB_VARIABLE}, else {DEFAULT_DB_URL} "
    "(the demo's file, relative to the current directory).\n\n"
    "Citizen numbers are always shown masked, receipt numbers never; --json output too."
)


class UsageError(Exception):
    """A mistake in the command line or its input, reported in one line with exit code 2."""


class OperationFailed(Exception):
    """The database or a migration failed, reported in one line with exit code 3."""


# -- output -----------------------------------------------------------------------------------


def mask_text(text: str) -> str:
    """``text`` with every full citizen number in it masked."""
    return _CITIZEN_NUMBER.sub(lambda m: mask_citizen_id(m.group()), text)


def scrub(value: Any) -> Any:
    """JSON-ready data with every full citizen number inside a string masked."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        return {key: scrub(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(item) for item in value]
    return value


def emit_json(data: Any) -> None:
    """Write ``data`` (already JSON-ready) to stdout, masked, and nothing else."""
    sys.stdout.write(json.dumps(scrub(data), ensure_ascii=False, indent=2) + "\n")
    sys.stdout.flush()


def _console() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = _PIPE_WIDTH
    return console


def _table(title: str, columns: Sequence[str], *, text: Sequence[str] = ()) -> Table:
    """A table whose ``columns`` are never wrapped (ids, states, times), followed by ``text``
    columns that wrap at words."""
    table = Table(title=title, box=box.SIMPLE_HEAD)
    for header in columns:
        table.add_column(header, no_wrap=True)
    for header in text:
        table.add_column(header, overflow="fold")
    return table


def _least_width(table: Table) -> int:
    """The width ``table`` needs to show every unwrapped cell whole and every word unbroken."""
    total = 1
    for column in table.columns:
        texts = [Text.from_markup(str(c)).plain for c in (column.header, *column.cells)]
        if column.no_wrap:
            parts = [line for t in texts for line in t.splitlines()]
        else:
            parts = ["-" * _TEXT_WIDTH, *(word for t in texts for word in t.split())]
        total += max((cell_len(p) for p in parts), default=0) + 3  # padding and separator
    return total


def _print_table(table: Table, console: Console | None = None) -> None:
    """Print ``table`` without cutting anything off: on a terminal too narrow for it, it is
    printed as wide as it needs (and the terminal wraps the lines)."""
    console = console or _console()
    console.width = max(console.width, _least_width(table))
    console.print(table)


def _cell(value: object) -> str:
    """A table cell: masked, and escaped so that rich prints it as it is."""
    return escape(mask_text("" if value is None else str(value)))


def _when(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _fail(message: str) -> NoReturn:
    raise UsageError(message)


# -- the database -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """What the global options say: the database URL, and the chain key's file if any."""

    db: str
    chain_key_file: Path | None = None

    @property
    def url(self) -> URL:
        return make_url(self.db)

    @property
    def shown(self) -> str:
        """The URL with any password hidden."""
        return self.url.render_as_string(hide_password=True)

    @property
    def sqlite_file(self) -> Path | None:
        """The file of a SQLite file database, or None (another database, or in memory)."""
        url = self.url
        if url.get_backend_name() != "sqlite":
            return None
        database = url.database
        if not database or database == ":memory:" or database.startswith("file:"):
            return None
        return Path(database)

    def require_existing(self) -> None:
        """Refuse a SQLite file that does not exist (opening it would create an empty one)."""
        path = self.sqlite_file
        if path is not None and not path.exists():
            _fail(
                f"database file {path} does not exist; create it with '{PROG} db upgrade' "
                f"(or '{PROG} demo'), or choose another with --db or {DB_VARIABLE}"
            )

    @contextmanager
    def workflow(self) -> Iterator[wf.Workflow]:
        """A `Workflow` on the database, which must exist and be at the latest revision."""
        self.require_existing()
        key = None if self.chain_key_file is None else read_chain_key(self.chain_key_file)
        try:
            flow = wf.Workflow(self.db, chain_key=key)
        except wf.SchemaOutOfDate as exc:  # which database is behind, as the others say
            raise UsageError(f"{self.shown}: {describe(exc)}") from exc
        with flow:
            yield flow


def _settings(ctx: typer.Context) -> Settings:
    """The global options; a command run alone (`main` with ``command``) has none, and runs on
    `DEFAULT_DB_URL` (not ${DB_VARIABLE}: ``make demo`` never picks up an auditor's database)."""
    settings = ctx.find_root().obj
    if settings is None:
        return Settings(DEFAULT_DB_URL)
    assert isinstance(settings, Settings)
    return settings


def _parse_db(value: str | None) -> str:
    url = value or DEFAULT_DB_URL
    try:
        make_url(url)
    except ArgumentError:
        raise typer.BadParameter(
            "not a database URL (e.g. sqlite:///var/demo.db, postgresql+psycopg://user@host/db)",
            param_hint="'--db'",
        ) from None
    return url


# -- the application ----------------------------------------------------------------------------

app = typer.Typer(
    name=PROG,
    help="Remote acceptance of resident identity cards: inspect and maintain a database.",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Markdown, so the command list reflows each help's first paragraph (in "rich" mode it keeps
    # the docstring's line breaks, which break the list's columns).
    rich_markup_mode="markdown",
)
db_app = typer.Typer(
    help="Migrate the database and show its revision.",
    epilog=EPILOG,
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
app.add_typer(db_app, name="db")

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print machine-readable JSON to stdout, and nothing else.")
]
AppId = Annotated[uuid.UUID, typer.Argument(metavar="ID", help="The application's id (a UUID).")]
RecordId = Annotated[uuid.UUID, typer.Argument(metavar="ID", help="The record's id (a UUID).")]


@app.callback()
def _root(
    ctx: typer.Context,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            envvar=DB_VARIABLE,
            metavar="URL",
            show_default=False,
            help=f"Database URL (default: ${DB_VARIABLE}, else {DEFAULT_DB_URL}).",
        ),
    ] = None,
    chain_key_file: Annotated[
        Path | None,
        typer.Option(
            "--chain-key-file",
            envvar="IDCARD_CHAIN_KEY_FILE",
            metavar="FILE",
            show_default=False,
            help="The chain key the database's rows are hashed under (the file's bytes, at "
            "least 32); default: $IDCARD_CHAIN_KEY_FILE, else none.",
        ),
    ] = None,
) -> None:
    """Remote acceptance of resident identity cards: inspect and maintain a database."""
    ctx.obj = Settings(_parse_db(db), chain_key_file)


# -- diagram ------------------------------------------------------------------------------------


class DiagramFormat(StrEnum):
    MERMAID = "mermaid"
    DOT = "dot"
    SVG = "svg"
    MD = "md"


MACHINES: Mapping[str, Definition] = {m.name: m.definition for m in REGISTRY}
"""The state machines the library runs, by name (the registry's order)."""


@app.command(epilog=EPILOG)
def diagram(
    ctx: typer.Context,
    format: Annotated[
        DiagramFormat,
        typer.Option("--format", "-f", help="mermaid, dot, svg (needs Graphviz) or md (a page)."),
    ] = DiagramFormat.MERMAID,
    application: Annotated[
        uuid.UUID | None,
        typer.Option(
            "--application",
            metavar="ID",
            help="Highlight the path this application took (not with --format md).",
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="FILE", help="Write to FILE instead of stdout."),
    ] = None,
    machine: Annotated[
        str,
        typer.Option(
            "--machine", metavar="NAME", help=f"The state machine to draw: {', '.join(MACHINES)}."
        ),
    ] = wf.APPLICATION.name,
) -> None:
    """Draw a state machine, optionally with the path one application took."""
    definition = MACHINES.get(machine)
    if definition is None:
        raise typer.BadParameter(
            f"{machine!r} is not one of {', '.join(MACHINES)}", param_hint="'--machine'"
        )
    path: tuple[diagrams.PathStep, ...] | None = None
    if application is not None:
        if format is DiagramFormat.MD:
            raise typer.BadParameter("--format md draws no path", param_hint="'--application'")
        if definition is not wf.APPLICATION:
            raise typer.BadParameter(
                f"draws an application's path, on --machine {wf.APPLICATION.name}",
                param_hint="'--application'",
            )
        with _settings(ctx).workflow() as flow:
            history = flow.history(application)
        path = tuple(diagrams.PathStep(r.event, r.from_state, r.to_state) for r in history)
    try:
        if format is DiagramFormat.MERMAID:
            text = diagrams.mermaid(definition, path=path, record_id=application)
        elif format is DiagramFormat.DOT:
            text = diagrams.dot(definition, path=path, record_id=application)
        elif format is DiagramFormat.SVG:
            text = diagrams.svg(definition, path=path, record_id=application)
        else:
            text = diagrams.document(definition)
    except ValueError as exc:  # the stored history is not a path of the machine
        _report(f"{exc}; run '{PROG} verify {application}'")
        raise typer.Exit(ExitCode.DAMAGED) from None
    if output is None:
        sys.stdout.write(text)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(text.encode("utf-8"))
    typer.echo(f"wrote {output}", err=True)


app.command("report", epilog=EPILOG)(report_command)

# -- db -------------------------------------------------------------------------------------------


class Revisions(BaseModel):
    """The database's revision and the library's latest one."""

    model_config = ConfigDict(frozen=True)

    current: str | None
    head: str
    up_to_date: bool


@db_app.command(epilog=EPILOG)
def upgrade(
    ctx: typer.Context,
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Migrate the database up to REVISION (default: the latest); works on an empty one."""
    settings = _settings(ctx)
    path = settings.sqlite_file
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    with _alembic_errors(settings):
        wf.upgrade(settings.db, revision)
        now = wf.current_revision(settings.db)
    typer.echo(f"{settings.shown} is at revision {now}")


@db_app.command(epilog=EPILOG)
def downgrade(
    ctx: typer.Context,
    revision: Annotated[str, typer.Argument(help="Target revision ('base' removes every table).")],
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Downgrade without asking for confirmation.")
    ] = False,
) -> None:
    """Migrate the database down to REVISION, dropping what the later revisions made (tables
    and their data).

    Asks first unless --yes; with no answer (stdin empty or closed) it refuses, with exit 2.
    """
    settings = _settings(ctx)
    settings.require_existing()
    with _alembic_errors(settings):
        before = wf.current_revision(settings.db)
    if not yes:
        _confirm_downgrade(settings, before, revision)
    with _alembic_errors(settings):
        wf.downgrade(settings.db, revision)
        after = wf.current_revision(settings.db)
    typer.echo(f"{settings.shown} is at revision {after or NO_REVISION}")


def _confirm_downgrade(settings: Settings, before: str | None, revision: str) -> None:
    """Ask on stderr whether to downgrade and read the answer from stdin; refuse (exit 2)
    unless it is yes. (Not `typer.confirm`: it writes to stdout, which stays for output.)"""

    def refuse(why: str) -> NoReturn:
        _fail(
            f"not downgrading {settings.shown} to revision {revision}: {why}; "
            "pass --yes to downgrade without asking"
        )

    if sys.stdin is None or sys.stdin.closed:
        refuse("no terminal to confirm on")
    sys.stderr.write(
        f"Downgrade {settings.shown} from revision {before or NO_REVISION} to {revision}? "
        "What the later revisions made is dropped, with its data. [y/N]: "
    )
    sys.stderr.flush()
    try:
        answer = sys.stdin.readline()
    except (KeyboardInterrupt, OSError, ValueError):
        answer = ""
    if not answer.endswith("\n"):
        sys.stderr.write("\n")  # end the prompt's line
    if not answer:
        refuse("no confirmation (no terminal, or no answer on stdin)")
    if answer.strip().lower() not in {"y", "yes"}:
        refuse("not confirmed")


@db_app.command(epilog=EPILOG)
def current(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Show the database's revision and the latest one."""
    settings = _settings(ctx)
    settings.require_existing()
    with _alembic_errors(settings):
        now = wf.current_revision(settings.db)
    head = wf.head_revision()
    revisions = Revisions(current=now, head=head, up_to_date=now == head)
    if as_json:
        emit_json(revisions.model_dump(mode="json"))
        return
    typer.echo(f"current: {now or NO_REVISION}")
    typer.echo(f"head:    {head}")
    if not revisions.up_to_date:
        typer.echo(f"the database is behind; run '{PROG} db upgrade'")


def _pg_name(value: str | None) -> str | None:
    if value is not None:
        try:
            grants.quote(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


def _role_name(value: str | None) -> str | None:
    if value is not None and value.lower() == "public":
        raise typer.BadParameter("PUBLIC is every role, not one: name a role of its own")
    return _pg_name(value)


@db_app.command("grants", epilog=EPILOG)
def grants_command(
    role: Annotated[
        str,
        typer.Option(
            "--role",
            metavar="ROLE",
            callback=_role_name,
            help="The application's role: reads and writes what the library's commands need.",
        ),
    ],
    schema: Annotated[
        str,
        typer.Option("--schema", metavar="SCHEMA", callback=_pg_name, help="The tables' schema."),
    ] = "public",
    database: Annotated[
        str | None,
        typer.Option(
            "--database",
            metavar="NAME",
            callback=_pg_name,
            show_default=False,
            help="The database whose temporary tables are taken away (default: the one the "
            "script runs in).",
        ),
    ] = None,
    auditor: Annotated[
        str | None,
        typer.Option(
            "--auditor",
            metavar="ROLE",
            callback=_role_name,
            show_default=False,
            help="An auditor's role, given SELECT on the library's tables and nothing else.",
        ),
    ] = None,
) -> None:
    """Print the PostgreSQL grants for the application's role (and an auditor's), to run as
    the tables' owner after every upgrade (e.g. piped into psql). Reads no database."""
    sys.stdout.write(grants.grants_sql(role, schema=schema, database=database, auditor=auditor))


@contextmanager
def _alembic_errors(settings: Settings) -> Iterator[None]:
    """Turn what a migration or a revision query raises into one line: an unknown revision is
    a usage error (2); a failed migration or database is `OperationFailed` (3), naming the
    database and the cause. The library raises `wf.MigrationError`; raw Alembic and SQLAlchemy
    errors (from older versions of it) are understood too. Other `wf.WorkflowError`s (a
    missing file: `wf.NoDatabase`) pass on to `main`, which reports them with exit code 2."""
    try:
        yield
    except (CommandError, RevisionError) as exc:  # an unknown revision, for one
        _fail(f"revision: {_first_line(exc)}")
    except wf.MigrationError as exc:
        if isinstance(exc.__cause__, CommandError | RevisionError):
            _fail(f"revision: {_first_line(exc.__cause__)}")
        raise OperationFailed(f"{settings.shown}: {describe(exc)}") from exc
    except (wf.StorageError, *DRIVER_ERRORS) as exc:
        raise OperationFailed(f"{settings.shown}: {describe(exc)}") from exc


# -- history ----------------------------------------------------------------------------------


@app.command(epilog=EPILOG)
def history(ctx: typer.Context, app_id: RecordId, as_json: JsonOption = False) -> None:
    """Show every transition of a record (an application, a loss report or a found card),
    oldest first."""
    with _settings(ctx).workflow() as flow:
        records = flow.history(app_id)
        if as_json:
            emit_json([r.model_dump(mode="json") for r in records])
            return
        title = _record_title(flow, app_id)
    table = _table(
        _cell(title),
        ["seq", "event", "from", "to", "actor id", "role", "unit", "at (UTC)"],
        text=["details"],
    )
    for r in records:
        details = ", ".join(
            f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in r.details.items()
        )
        table.add_row(
            *(
                _cell(v)
                for v in (
                    r.seq,
                    r.event,
                    r.from_state or "(new)",
                    r.to_state,
                    r.actor_id,
                    r.actor_role,
                    r.actor_unit,
                    _when(r.at),
                    details,
                )
            )
        )
    _print_table(table)


def _record_title(flow: wf.Workflow, record_id: uuid.UUID) -> str:
    """What the record is, of whichever machine: its noun, kind, state and masked citizen."""
    for machine in REGISTRY:
        try:
            view = flow.handle(machine.name).get(record_id)
        except wf.NotFound:
            continue
        kind = getattr(view, "kind", None)
        what = ", ".join(str(v) for v in (kind, view.state) if v is not None)
        citizen = mask_citizen_id(view.citizen_id)
        return f"{machine.noun.capitalize()} {view.id}: {what}, citizen {citizen}"
    return f"Record {record_id}"


# -- verify -----------------------------------------------------------------------------------


AUTO_WORKERS_MAX = 8
"""The most processes ``verify`` starts by default (more rarely help: the database serves them)."""
AUTO_WORKERS_MIN_RECORDS = 20_000
"""Below this many records ``verify`` runs in one process by default: starting the others
would cost more than it saves."""


def _auto_workers(flow: wf.Workflow) -> int:
    cpus = min(os.cpu_count() or 1, AUTO_WORKERS_MAX)
    if cpus == 1:
        return 1
    from workflow.engine.parallel import record_count

    # The CLI is the library's own: it may count through the workflow's store.
    records = record_count(flow._reads, REGISTRY)
    return cpus if records is not None and records >= AUTO_WORKERS_MIN_RECORDS else 1


@contextmanager
def _progress_bar(
    show: bool, unit: str = "records"
) -> Iterator[Callable[[int, int | None], None] | None]:
    """A progress bar on stderr, when it is a terminal and ``show``; its update callback."""
    console = Console(stderr=True, highlight=False)
    if not show or not console.is_terminal:
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("verifying"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("verify", total=None)

        def update(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield update


@app.command(epilog=EPILOG)
def verify(
    ctx: typer.Context,
    app_id: Annotated[
        uuid.UUID | None, typer.Argument(help="Check only this application (default: all).")
    ] = None,
    since: SinceOption = None,
    public_key: PublicKeyOption = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            metavar="N",
            show_default=False,
            help="Processes that verify side by side, each over its own ranges of record ids "
            "(with --since: the covered rows between two of the checkpoint's anchors) "
            f"(1 to 64; default: the number of CPUs, at most {AUTO_WORKERS_MAX}, or 1 below "
            f"{AUTO_WORKERS_MIN_RECORDS:,} records).",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Prove the histories: replay, permissions, guard facts, hash chain, stored state and
    version; with --since, that nothing a checkpoint covers was changed, removed or added.

    Exits with 1 when any record is damaged or the history does not extend the checkpoint.
    A progress bar goes to stderr when it is a terminal (never with --json).
    """
    if since is not None and app_id is not None:
        _fail("--since: verifies the whole history against a checkpoint; give no record id")
    checkpoint, key = read_since(since, public_key)
    with _settings(ctx).workflow() as flow:
        if checkpoint is not None:
            processes = _auto_workers(flow) if workers is None else workers
            # The covered rows are what takes the time: the bar counts them.
            with _progress_bar(not as_json, "covered rows") as progress:
                report = flow.verify(
                    since=checkpoint, public_key=key, workers=processes, progress=progress
                )
        else:
            if workers is not None:
                processes = workers  # validated by verify, also for one record (then unused)
            else:
                processes = 1 if app_id is not None else _auto_workers(flow)
            with _progress_bar(not as_json and app_id is None) as progress:
                report = flow.verify(app_id, workers=processes, progress=progress)
    if app_id is not None and report.records == 0 and not report.broken:
        raise wf.NotFound(app_id)
    if as_json:
        emit_json(report.model_dump(mode="json"))
    else:
        console = _console()
        if report.broken:
            table = _table(
                "Damaged records",
                ["machine", "record id", "first bad seq", "problem"],
                text=["message"],
            )
            for b in report.broken:
                seq = "-" if b.seq is None else b.seq
                cells = (b.machine, b.record_id, seq, b.problem, b.message)
                table.add_row(*(_cell(v) for v in cells))
            _print_table(table, console)
        outcome = f"{len(report.broken)} broken" if report.broken else "all intact"
        keyed = " under the chain key" if report.keyed else ""
        console.print(
            _cell(
                f"Checked {_count(report.records, 'record')} and "
                f"{_count(report.rows, 'history row')}{keyed}: {outcome}."
            )
        )
        if report.checkpoint is not None:
            _print_comparison(report.checkpoint, console)
    if not report.ok:
        raise typer.Exit(ExitCode.DAMAGED)


def _print_comparison(comparison: Comparison, console: Console) -> None:
    taken = _when(comparison.taken_at)
    if comparison.extends:
        verdict = (
            f"The history extends the checkpoint of {taken} (rows up to {comparison.last_row})"
        )
    else:
        assert comparison.difference is not None
        verdict = (
            f"The history does NOT extend the checkpoint of {taken}: "
            f"{comparison.difference.problem}: {comparison.difference.message}"
        )
    console.print(_cell(f"{verdict}; signature: {comparison.signature}."))
    console.print(
        _cell(
            f"Since then: {_count(comparison.new_rows, 'new row')} in "
            f"{_count(comparison.changed_records, 'record')}, replayed in full."
        )
    )
    for note in comparison.notes:
        console.print(_cell(f"Note: {note}."))


@app.command(epilog=EPILOG)
def checkpoint(
    ctx: typer.Context,
    output: Annotated[
        Path,
        typer.Option("--output", "-o", metavar="FILE", help="Write the checkpoint to FILE."),
    ],
    key: Annotated[
        Path | None,
        typer.Option(
            "--key",
            metavar="FILE",
            help="Sign it with this Ed25519 private key (PEM, e.g. from openssl genpkey "
            "-algorithm ed25519).",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Write a checkpoint: a small statement of the history as it stands (revision,
    fingerprints, counts, last row, digest), to keep where the database's writers can't reach
    it and check later with verify --since.

    Exits with 1 when a covered row no longer matched its own hash (the checkpoint is written
    all the same, and says so).
    """
    signer = None if key is None else read_private_key(key)
    with _settings(ctx).workflow() as flow:
        taken = flow.checkpoint(signing_key=signer)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(taken.to_json(), encoding="utf-8")
    except OSError as exc:
        raise OperationFailed(f"can't write the checkpoint to {output}: {exc.strerror}") from None
    if as_json:
        emit_json(taken.model_dump(mode="json"))
    else:
        signed = "signed" if taken.signature is not None else "unsigned"
        _console().print(
            _cell(
                f"Wrote {output}: {_count(taken.rows, 'history row')} of "
                f"{_count(sum(taken.records.values()), 'record')} up to row {taken.last_row}, "
                f"{signed}; digest {taken.digest}."
            )
        )
    if not taken.intact:
        raise typer.Exit(ExitCode.DAMAGED)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


# -- overdue ----------------------------------------------------------------------------------


def _parse_as_of(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            "not an ISO 8601 date and time (e.g. 2026-05-01T17:30+08:00)",
            param_hint="'--as-of'",
        ) from None


def application_json(view: wf.ApplicationView) -> dict[str, Any]:
    """An application as JSON: the citizen number masked, the receipt number left out."""
    data = view.model_dump(mode="json", exclude={"receipt_no"})
    data["citizen_id"] = mask_citizen_id(view.citizen_id)
    return data


@app.command(epilog=EPILOG)
def overdue(
    ctx: typer.Context,
    reviews: Annotated[
        bool,
        typer.Option("--reviews", help="List reviews not decided within 5 days, not late cards."),
    ] = False,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            metavar="ISO-DATETIME",
            show_default=False,
            help="The moment to judge at, with its UTC offset (default: now).",
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many (1 to 10000).")] = 100,
    as_json: JsonOption = False,
) -> None:
    """List applications whose card is not ready 60 days after submission (with --reviews:
    transmissions undecided after 5 days), earliest first."""
    moment = _parse_as_of(as_of)
    with _settings(ctx).workflow() as flow:
        query = flow.overdue_reviews if reviews else flow.overdue
        views = query(moment, limit=limit)
    if as_json:
        emit_json([application_json(v) for v in views])
        return
    since = moment or datetime.now(UTC)
    what = "Reviews undecided after 5 days" if reviews else "Cards not ready after 60 days"
    table = _table(
        f"{what}: {len(views)}",
        ["id", "citizen no.", "kind", "state", "accepted -> hukou", "due (UTC)", "late"],
    )
    for view in views:
        due = view.review_due_at if reviews else view.due_at
        assert due is not None
        table.add_row(
            *(
                _cell(v)
                for v in (
                    view.id,
                    mask_citizen_id(view.citizen_id),
                    view.kind,
                    view.state,
                    f"{view.acceptance_region} -> {view.hukou_region}",
                    _when(due),
                    f"{(since - due).days} d",
                )
            )
        )
    _print_table(table)


# -- explain ----------------------------------------------------------------------------------


@app.command(epilog=EPILOG)
def explain(
    ctx: typer.Context,
    app_id: AppId,
    role: Annotated[wf.Role, typer.Option("--role", help="The actor's role.")],
    unit: Annotated[
        str,
        typer.Option(
            "--unit",
            help="The actor's unit: a 6-digit division code, 2-digit province for producers.",
        ),
    ],
    actor_id: Annotated[str, typer.Option("--actor-id", help="The actor's id.")] = "cli",
    as_json: JsonOption = False,
) -> None:
    """Show which events an actor could fire on an application now, and why not."""
    actor = wf.Actor(id=actor_id, role=role, unit=unit)
    with _settings(ctx).workflow() as flow:
        explanation = flow.explain(app_id, actor)
    if as_json:
        emit_json(explanation.model_dump(mode="json"))
        return
    title = (
        f"Application {explanation.record_id} is {explanation.state}: what "
        f"{actor.id} ({actor.role}, {actor.unit}) can do"
    )
    table = _table(_cell(title), ["event", "possible"], text=["why not", "conditions when fired"])
    for option in explanation.events:
        reasons = "\n".join(f"{r.kind}: {r.message}" for r in option.reasons)
        conditions = "\n".join(f"{c.guard}: {c.rule}" for c in option.conditions)
        table.add_row(
            _cell(option.event),
            "[green]yes[/green]" if option.possible else "[red]no[/red]",
            _cell(reasons),
            _cell(conditions),
        )
    _print_table(table)


# -- demo -------------------------------------------------------------------------------------


@app.command(epilog=EPILOG)
def demo(
    ctx: typer.Context,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            metavar="PATH",
            show_default=False,
            help="The SQLite file: a path, or a sqlite:///PATH URL (default: the global --db; "
            f"run alone, as python -m workflow.demo: {demo_module.DEFAULT_DB}).",
        ),
    ] = None,
    applications: Annotated[
        int,
        typer.Option(
            "--applications",
            min=1,
            max=demo_module.MAX_APPLICATIONS,
            help="Number of applications; loss reports and found cards are in proportion.",
        ),
    ] = demo_module.DEFAULT_APPLICATIONS,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of the simulation: the same seed, the same counts.")
    ] = demo_module.DEFAULT_SEED,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace the file even if the demo did not create it (its data is lost).",
        ),
    ] = False,
) -> None:
    """Replay 90 days at four acceptance points into the database file.

    The database must be a SQLite file, which is DELETED and recreated. A file the demo did
    not create (its header lacks the demo's PRAGMA application_id) is refused, with exit
    code 2 and the file untouched, unless --force.
    """
    path = _demo_file(ctx, db).resolve()
    # Run alone (python -m workflow.demo), the command reads no environment variable.
    named_elsewhere = db is None and ctx.parent is not None
    elsewhere = f"choose another file with --db{f' or {DB_VARIABLE}' if named_elsewhere else ''}"
    refused = None if force else demo_module.refusal(path, elsewhere=elsewhere)
    if refused is not None:
        _fail(f"refusing to run the demo: {refused}")
    code = demo_module.run(path, applications=applications, seed=seed)
    if code:
        raise typer.Exit(code)


def _demo_file(ctx: typer.Context, db: str | None) -> Path:
    """The SQLite file the demo replaces: the command's ``--db`` (a path, or a URL when it
    has a scheme), else the global database, which must be a SQLite file."""
    if db is not None and not _has_scheme(db):
        return Path(db)
    settings = _settings(ctx) if db is None else Settings(_parse_db(db))
    path = settings.sqlite_file
    if path is None:
        _fail(f"--db: the demo needs a SQLite file database (sqlite:///PATH), not {settings.shown}")
    return path


def _has_scheme(value: str) -> bool:
    """Whether ``value`` is written as a URL (``sqlite:///x.db``, ``postgresql://...``), not a
    path. A ``sqlite:`` without the slashes is a URL too, a malformed one, never a folder."""
    scheme, colon, _ = value.partition(":")
    return bool(colon) and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]+", scheme) is not None


# -- entry point ------------------------------------------------------------------------------


UserError = (
    ValidationError
    | wf.WorkflowError
    | UsageError
    | OperationFailed
    | DBAPIError
    | sqlite3.Error
    | ArgumentError
    | OSError
)
USER_ERRORS = (
    ValidationError,
    wf.WorkflowError,
    UsageError,
    OperationFailed,
    DBAPIError,
    sqlite3.Error,
    ArgumentError,
    OSError,
)
"""What the program reports in a few lines instead of a traceback: bad input and the library's
refusals (exit status 2), and a database or migration that failed (3, see `exit_code`)."""
DRIVER_ERRORS = (DBAPIError, sqlite3.Error)
"""A database that failed, as SQLAlchemy wraps it or (raised while a connection is prepared,
e.g. a file that is not a SQLite database) as the driver raised it."""
FAILURES = (OperationFailed, *DRIVER_ERRORS, wf.MigrationError, wf.StorageError, OSError)
"""The errors that mean the operation failed (exit status 3), not that the input was wrong:
an `OSError` is a file the program could not read or write (a read-only file system)."""


def exit_code(exc: UserError) -> ExitCode:
    """The exit status for a reported error: 3 when the database or a migration failed,
    2 for a usage or input error."""
    return ExitCode.FAILED if isinstance(exc, FAILURES) else ExitCode.USAGE


def _report(message: str) -> None:
    sys.stderr.write(f"{PROG}: error: {mask_text(message)}\n")
    sys.stderr.flush()


def describe(exc: UserError) -> str:
    """A user error in a few lines naming the field and the rule (never the input)."""
    if isinstance(exc, ValidationError):
        lines = [f"invalid {exc.title}:"]
        for error in exc.errors(include_input=False, include_url=False):
            where = ".".join(str(part) for part in error["loc"])
            lines.append(f"  {where + ': ' if where else ''}{error['msg']}")
        return "\n".join(lines)
    if isinstance(exc, wf.SchemaOutOfDate):
        return (
            f"the database is at revision {exc.current or NO_REVISION}, this version needs "
            f"{exc.head}; run '{PROG} db upgrade' [{exc.code}]"
        )
    if isinstance(exc, wf.MigrationError):
        where = f"revision {exc.revision}" if exc.revision else "the migration"
        cause = _first_line_of(exc.cause) or _first_line(exc.__cause__) or "unknown cause"
        return f"{where} failed: {cause} [{exc.code}]"
    if isinstance(exc, wf.WorkflowError):
        message = _first_line(exc)
        cause = _first_line(exc.__cause__) if isinstance(exc, wf.StorageError) else ""
        if cause and cause not in message:
            message = f"{message}: {cause}"
        return f"{message} [{exc.code}]"
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or _first_line(exc)}"
    if isinstance(exc, DBAPIError):
        return f"the database failed: {_first_line(exc.orig) or _first_line(exc)}"
    if isinstance(exc, sqlite3.Error):
        return f"the database failed: {_first_line(exc)}"
    if isinstance(exc, ArgumentError):
        return f"--db: {_first_line(exc)}"
    return str(exc)


def _first_line(exc: BaseException | None) -> str:
    """The first line of an exception's message (driver messages go on with hints)."""
    if exc is None:
        return ""
    return _first_line_of(str(exc)) or type(exc).__name__


def _first_line_of(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0].strip() if lines else ""


def main(
    argv: Sequence[str] | None = None,
    *,
    command: str | None = None,
    prog_name: str | None = None,
) -> int:
    """Run the command line and return the exit code (never raising `SystemExit`).

    With ``command``, that one command runs alone, as its own program named ``prog_name``: its
    options only, no global ``--db`` (it runs on `DEFAULT_DB_URL`). ``python -m workflow.demo``
    is ``main(argv, command="demo", prog_name="python -m workflow.demo")``.
    """
    args = None if argv is None else list(argv)
    group = typer.main.get_command(app)
    program = group
    if command is not None:
        assert isinstance(group, typer.core.TyperGroup)
        found = group.commands.get(command)
        if found is None:
            raise ValueError(f"no command {command!r}; commands: {', '.join(group.commands)}")
        program = found
    try:
        program.main(args=args, prog_name=prog_name)
    except USER_ERRORS as exc:
        _report(describe(exc))
        return exit_code(exc)
    except SystemExit as exc:  # click's standalone mode ends every run with one
        return _status(exc.code)
    return ExitCode.OK


def _status(code: object) -> int:
    """The exit status `SystemExit` carries (None is 0, a message is 1, as Python does)."""
    if code is None:
        return ExitCode.OK
    return code if isinstance(code, int) else 1


__all__ = ["DB_VARIABLE", "DEFAULT_DB_URL", "ExitCode", "app", "main"]
