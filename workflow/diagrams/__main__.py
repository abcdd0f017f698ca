"""``python -m workflow.diagrams``: regenerate (or check) the diagrams and tables in docs/.

A thin entry point over `workflow.diagrams.artifacts`, for ``make diagrams`` and the freshness
test; ``idcard-workflow diagram`` draws one machine on demand.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from workflow.diagrams import REGENERATE, GraphvizMissing, artifacts, fingerprint
from workflow.machines import REGISTRY

DOCS = Path(__file__).resolve().parents[2] / "docs"

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command(help="Regenerate the state-machine diagrams and tables in docs/.")
def regenerate(
    docs: Annotated[Path, typer.Option(help="Folder to write.")] = DOCS,
    check: Annotated[
        bool, typer.Option("--check", help="Write nothing; exit 1 if a file is stale.")
    ] = False,
    fingerprints: Annotated[
        bool,
        typer.Option("--fingerprints", help="Write nothing; print each machine's fingerprint."),
    ] = False,
) -> None:
    if fingerprints:
        for machine in REGISTRY:
            typer.echo(f"{machine.name} {fingerprint(machine.definition)}")
        return
    try:
        files = artifacts(docs)
    except GraphvizMissing as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    stale = False
    for path, text in files.items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            typer.echo(f"unchanged {path}")
            continue
        stale = True
        if check:
            typer.echo(f"stale     {path}")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(text.encode("utf-8"))
            typer.echo(f"wrote     {path}")
    if check and stale:
        typer.echo(f"run `{REGENERATE}` to regenerate", err=True)
        raise typer.Exit(1)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command on ``argv`` (default: the process's arguments); returns the exit status."""
    try:
        app(args=None if argv is None else list(argv), prog_name=REGENERATE)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
