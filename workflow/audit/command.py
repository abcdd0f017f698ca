"""``idcard-workflow report``: the audit report written as one HTML file.

The command's function lives here; `workflow.cli` registers it. It follows the command line's
conventions: exit 0 when every history is intact, 1 when verification found a damaged record
or, with ``--since``, the history does not extend the checkpoint (the report is written all the
same, naming it), 2 for a usage error (an unknown record, a bad ``--as-of``, a checkpoint or
key file that can't be read, Graphviz missing), 3 when the database failed; errors in one line
on stderr.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Annotated

import typer

from workflow.audit.files import (
    PublicKeyOption,
    SinceOption,
    read_since,
)
from workflow.audit.page import render
from workflow.audit.report import build_report


def report(
    ctx: typer.Context,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", metavar="FILE", help="Write the HTML to FILE instead of stdout."
        ),
    ] = None,
    record: Annotated[
        uuid.UUID | None,
        typer.Option(
            "--record",
            metavar="ID",
            help="Add this record's path on its diagram and its history (any machine).",
        ),
    ] = None,
    since: SinceOption = None,
    public_key: PublicKeyOption = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            metavar="ISO-DATETIME",
            show_default=False,
            help="The moment the deadlines are judged at, with its UTC offset (default: now).",
        ),
    ] = None,
) -> None:
    """Write the audit report: one self-contained HTML file (no external resources) with the
    three processes, the verification result, the statutory deadlines and, with --record, one
    record's path. Citizen numbers are masked. Exits with 1 when a record is damaged."""
    # Imported here: the command line imports this module to register the command.
    from workflow import cli

    moment = cli._parse_as_of(as_of)
    settings = cli._settings(ctx)
    checkpoint, key = read_since(since, public_key)
    settings.require_existing()
    audit = build_report(
        settings.db, record_id=record, as_of=moment, since=checkpoint, public_key=key
    )
    page = render(audit)
    if output is None:
        sys.stdout.write(page)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_bytes(page.encode("utf-8"))
        broken = len(audit.verification.broken)
        outcome = f"{broken} broken records" if broken else "all intact"
        typer.echo(f"wrote {output} ({outcome})", err=True)
    if not audit.verification.ok:
        raise typer.Exit(cli.ExitCode.DAMAGED)
