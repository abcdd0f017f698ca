"""The audit report as one self-contained HTML page: inline CSS and SVG, nothing fetched.

Written with the standard library (`html.escape`) rather than a template engine: every value
goes through `_t`, which masks any citizen number in it and escapes it, and the finished page
is masked once more as a whole. The page loads no font, script, style sheet or image: it opens
the same offline, years later, as on the day it was made.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from workflow.audit.report import (
    AuditReport,
    CountyLine,
    Deadlines,
    Distribution,
    Process,
    RecordPath,
)
from workflow.diagrams.model import Arrow, Diagram
from workflow.models.citizen_id import mask_citizen_id

_CITIZEN_NUMBER = re.compile(r"(?<![0-9A-Za-z])[0-9]{17}[0-9Xx](?![0-9A-Za-z])")
"""A citizen number standing on its own (18 digits inside a hash are not one)."""

SECTIONS = {
    "processes": "1. The three processes",
    "verification": "2. Verification",
    "checkpoint": "2a. Checkpoint comparison",
    "deadlines": "3. Statutory deadlines",
    "record": "4. One record's path",
}
"""The sections' ids and headings; the checkpoint and record sections appear when given."""

CSS = """
:root { --ink: #111827; --muted: #4b5563; --line: #d1d5db; --ok: #047857; --bad: #b91c1c;
  --amber: #b45309; --blue: #1d4ed8; --soft: #f3f4f6; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff;
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", "Liberation Sans", Arial, sans-serif; }
header, main { max-width: 1240px; margin: 0 auto; padding: 0 24px; }
header { padding-top: 24px; border-bottom: 1px solid var(--line); }
h1 { font-size: 26px; margin: 0 0 6px; }
h2 { font-size: 21px; margin: 36px 0 10px; padding-top: 12px; border-top: 2px solid var(--ink); }
h3 { font-size: 17px; margin: 26px 0 8px; }
p { margin: 6px 0 10px; }
.meta { color: var(--muted); font-size: 13px; margin-bottom: 10px; }
nav ol { display: flex; flex-wrap: wrap; gap: 4px 22px; list-style: none; padding: 0;
  margin: 10px 0 14px; }
nav a { color: var(--blue); text-decoration: none; }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", "Liberation Mono", monospace;
  font-size: 13px; }
.scroll { overflow-x: auto; max-width: 100%; margin: 8px 0 14px; }
table { border-collapse: collapse; font-size: 13.5px; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: var(--soft); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num { white-space: nowrap; }
td.wrap { overflow-wrap: break-word; max-width: 400px; }
.fact { overflow-wrap: anywhere; font-size: 12.5px; }
.late-count { color: var(--bad); font-weight: 700; }
td.nowrap { white-space: nowrap; }
tr.late td { color: var(--bad); }
figure { margin: 8px 0 16px; padding: 8px; border: 1px solid var(--line); border-radius: 6px;
  overflow-x: auto; background: #fff; }
figure svg { display: block; margin: 0 auto; max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
.verdict { padding: 10px 14px; border-radius: 6px; font-weight: 600; margin: 10px 0; }
.verdict.ok { background: #ecfdf5; color: var(--ok); border: 1px solid #a7f3d0; }
.verdict.bad { background: #fef2f2; color: var(--bad); border: 1px solid #fecaca; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(340px, 1fr));
  gap: 4px 28px; align-items: start; }
.bar { height: 12px; background: var(--blue); border-radius: 2px; }
tr.late .bar { background: var(--bad); }
td.barcell { width: 260px; min-width: 160px; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 8px 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
ul.reactions li { margin: 3px 0; }
.fingerprint { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-weight: 600; }
@media print { h2 { break-before: page; } figure { break-inside: avoid; } }
"""


def mask_text(text: str) -> str:
    """``text`` with every full citizen number in it masked."""
    return _CITIZEN_NUMBER.sub(lambda m: mask_citizen_id(m.group().upper()), text)


def _t(value: object) -> str:
    """A value as page text: masked, then escaped."""
    return html.escape(mask_text("" if value is None else str(value)))


def _prose(value: object) -> str:
    """Text written for the Markdown docs as page text: `_t`, then each `span` in backticks
    shown as code (the docs render them so)."""
    return _CODE_SPAN.sub(r"<code>\1</code>", _t(value))


_CODE_SPAN = re.compile(r"`([^`]+)`")


def _when(moment: datetime | None) -> str:
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    numeric: Iterable[int] = (),
    nowrap: Iterable[int] = (),
    classes: Iterable[str] | None = None,
) -> str:
    """A table; ``rows`` hold HTML already escaped; ``numeric`` columns are right-aligned,
    ``nowrap`` ones (ids, states, times) never broken, the others wrap at words."""
    right = set(numeric)
    whole = set(nowrap)
    head = "".join(
        f"<th{' class=num' if i in right else ''}>{_t(h)}</th>" for i, h in enumerate(headers)
    )
    row_classes = iter(classes) if classes is not None else None
    body = []
    for row in rows:
        css = next(row_classes, "") if row_classes is not None else ""
        cells = "".join(
            f'<td class="{"num" if i in right else "nowrap" if i in whole else "wrap"}">{cell}</td>'
            for i, cell in enumerate(row)
        )
        body.append(f"<tr{f' class={css}' if css else ''}>{cells}</tr>")
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


_SVG_START = re.compile(r"^.*?(?=<svg\b)", re.DOTALL)
_NAMESPACES = re.compile(r'\s+xmlns(?::\w+)?="[^"]*"')
_IDS = re.compile(r'\bid="([^"]*)"')


def inline_svg(svg: str, prefix: str) -> str:
    """A Graphviz SVG made fit to sit inside the page: no XML prolog or DOCTYPE, no namespace
    URLs (HTML knows SVG's), and its ids prefixed so that several diagrams don't share one."""
    body = _SVG_START.sub("", svg, count=1)
    body = _NAMESPACES.sub("", body)
    body = _IDS.sub(lambda m: f'id="{prefix}-{m.group(1)}"', body)
    return f'<svg role="img" aria-label="{html.escape(prefix)}"{body.strip()[4:]}'


# ---------------------------------------------------------------------------------------------
# The sections


def _who(arrow: Arrow) -> str:
    who = arrow.who
    return (
        f"{_t(who.description)}<br><code>{_t(who.role)}</code> · "
        f"<span class=mono>{_t(who.where)}</span>"
    )


def _guards(arrow: Arrow) -> str:
    if not arrow.guards:
        return "none"
    return "<br>".join(f"<code>{_t(g.name)}</code>: {_t(g.rule)}" for g in arrow.guards)


def _transitions(diagram: Diagram) -> str:
    rows = [
        (
            f"<code>{_t(a.event)}</code>",
            "(new)" if a.source is None else f"<code>{_t(a.source)}</code>",
            f"<code>{_t(a.target)}</code>",
            _who(a),
            _guards(a),
            _prose(a.summary),
        )
        for a in (diagram.creation, *diagram.arrows)
    ]
    headers = ["event", "from", "to", "who may fire it", "guards (checked in order)", "meaning"]
    return _table(headers, rows, nowrap=(0, 1, 2))


def _process(process: Process) -> str:
    d = process.diagram
    reactions = (
        "<ul class=reactions>"
        + "".join(
            f"<li>after <code>{_t(r.event)}</code>, when {_t(r.when)}: {_t(r.does)}.</li>"
            for r in d.reactions
        )
        + "</ul>"
        if d.reactions
        else f"<p>No event of the <code>{_t(d.name)}</code> machine sets off another machine.</p>"
    )
    finals = ", ".join(f"<code>{_t(s.name)}</code>" for s in d.finals) or "none"
    return f"""
<section class=process id="process-{_t(d.name)}">
<h3>{_t(process.noun.capitalize())}: the <code>{_t(d.name)}</code> machine</h3>
<p>Fingerprint <span class=fingerprint>{_t(d.fingerprint)}</span> · initial state
<code>{_t(d.initial.name)}</code>, created by <code>{_t(d.creation.event)}</code> · final states
{finals}</p>
<figure>{inline_svg(process.svg, f"diagram-{d.name}")}
<figcaption>Each arrow: the event; <em>by role @ column</em>, who may fire it (the actor's unit
must be that column of the record, or the province it lies in); its guards in brackets. Dashed
amber: guarded.</figcaption></figure>
<h4>Transitions</h4>
{_transitions(d)}
<h4>Reactions between machines</h4>
{reactions}
</section>"""


def _processes(report: AuditReport) -> str:
    prints = ", ".join(
        f"<code>{_t(p.name)}</code> <span class=fingerprint>{_t(p.diagram.fingerprint)}</span>"
        for p in report.processes
    )
    return (
        "<p>The processes as this version of the library runs them, drawn from the machine "
        "definitions (not by hand). Fingerprints: "
        f"{prints}. The same fingerprint means the same states, transitions, guards and "
        "permissions.</p>" + "".join(_process(p) for p in report.processes)
    )


def _verification(report: AuditReport) -> str:
    v = report.verification
    checked = f"{v.records} records and {v.rows} history rows checked"
    if v.ok:
        return (
            f'<div class="verdict ok" id="verdict">All intact: {checked}, none broken.</div>'
            "<p>Every history replays through the current definitions from the initial state, "
            "every step was allowed to its actor, every guard is proven by the recorded facts, "
            "the hash chains are unbroken, and every stored state, version and chain head "
            "matches its history.</p>"
        )
    rows = [
        (
            _t(b.machine),
            f"<span class=mono>{_t(b.record_id)}</span>",
            "—" if b.seq is None else _t(b.seq),
            f"<code>{_t(b.problem)}</code>",
            _t(b.message),
        )
        for b in v.broken
    ]
    found = sorted({b.problem for b in v.broken})
    glossary = _table(
        ["problem", "what it means"],
        [(f"<code>{_t(p)}</code>", _t(report.problems.get(p, ""))) for p in found],
    )
    return (
        f'<div class="verdict bad" id="verdict">{len(v.broken)} broken: {checked}.</div>'
        "<p>Only the first problem of each record is named: nothing later in its history can "
        "be trusted. Investigate from the first bad row (<em>seq</em>; — when the record row "
        "itself is at fault).</p>"
        + _table(
            ["machine", "record id", "first bad seq", "problem", "message"],
            rows,
            numeric=(2,),
            nowrap=(0, 1, 3),
        )
        + "<h3>The problems found</h3>"
        + glossary
    )


def _checkpoint(data: Mapping[str, Any]) -> str:
    ok = data.get("ok")
    verdict = ""
    if isinstance(ok, bool):
        css, words = (
            ("ok", "The history extends the checkpoint")
            if ok
            else ("bad", "The history does not extend the checkpoint")
        )
        verdict = f'<div class="verdict {css}">{words}.</div>'
    shown = {k: v for k, v in data.items() if not (k == "ok" and verdict)}
    plain = [(k, v) for k, v in shown.items() if not isinstance(v, list | dict)]
    facts = "".join(f"<dt>{_t(_label(k))}</dt><dd>{_t(_fact(k, v))}</dd>" for k, v in plain)
    parts = [verdict, f"<dl class=facts>{facts}</dl>" if facts else ""]
    for key, value in shown.items():
        if isinstance(value, dict):
            inner = "".join(
                f"<dt>{_t(_label(k))}</dt><dd>{_t(_fact(k, v))}</dd>" for k, v in value.items()
            )
            parts.append(f"<h3>{_t(_label(key))}</h3><dl class=facts>{inner}</dl>")
        elif isinstance(value, list):
            parts.append(f"<h3>{_t(_label(key))}</h3>{_list(value)}")
    return "".join(parts)


_LABELS = {
    "taken_at": "checkpoint taken at",
    "last_row": "covers the history rows with ids up to",
    "digest": "digest of the covered rows",
    "extends": "history extends it",
    "signature": "signature",
    "difference": "where the history departs from it",
    "new_rows": "history rows written since",
    "changed_records": "records changed since (replayed in full)",
    "notes": "notes",
    "problem": "problem",
    "message": "what differs",
    "machine": "machine",
    "record_id": "record",
    "seq": "history position",
}
"""How the page names the fields of a checkpoint comparison (`workflow.engine.checkpoint`);
any other field is shown by its own name."""

_SIGNATURES = {
    "valid": "valid (by the public key given)",
    "valid, by the key in the file": "valid by the key the file names (no public key given: "
    "proves the file unchanged, not who signed it)",
    "unsigned": "unsigned",
    "missing": "missing (a public key was given, the checkpoint has no signature)",
    "invalid": "invalid: trust nothing the checkpoint says",
}


def _label(key: str) -> str:
    return _LABELS.get(key, key)


def _fact(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key == "difference" and value is None:
        return "none"
    if key == "signature" and isinstance(value, str):
        return _SIGNATURES.get(value, value)
    return _json(value)


def _list(items: list[Any]) -> str:
    if not items:
        return "<p>none</p>"
    if all(isinstance(i, dict) for i in items):
        keys = list(dict.fromkeys(k for i in items for k in i))
        return _table(keys, [[_t(_json(i.get(k))) for k in keys] for i in items])
    return "<ul>" + "".join(f"<li>{_t(_json(i))}</li>" for i in items) + "</ul>"


def _json(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str | int | float | bool):
        return str(value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _late(n: int) -> str:
    return f"<span class=late-count>{n}</span>" if n else "0"


def _counties(title: str, lines: Sequence[CountyLine]) -> str:
    rows = [
        (
            f"<span class=mono>{_t(c.county)}</span>",
            _t(c.applications),
            _late(c.cards_overdue),
            _late(c.reviews_overdue),
        )
        for c in lines
    ]
    total = (
        "<strong>all</strong>",
        _t(sum(c.applications for c in lines)),
        _late(sum(c.cards_overdue for c in lines)),
        _late(sum(c.reviews_overdue for c in lines)),
    )
    headers = ["county", "applications", "cards overdue", "reviews overdue"]
    table = _table(headers, [*rows, total], numeric=(1, 2, 3))
    return f"<div><h4>{_t(title)}</h4>{table}</div>"


def _distribution(d: Distribution) -> str:
    largest = max((b.count for b in d.buckets), default=0) or 1
    rows = [
        (
            _t(b.label),
            _t(b.count),
            f'<div class=bar style="width:{100 * b.count / largest:.1f}%"></div>',
        )
        for b in d.buckets
    ]
    classes = ["late" if b.over_limit and b.count else "" for b in d.buckets]
    mean = "—" if d.mean_days is None else f"{d.mean_days:.1f} days"
    longest = "—" if d.max_days is None else f"{d.max_days:.1f} days"
    table = _table(["time taken", "applications", ""], rows, numeric=(1,), classes=classes)
    table = table.replace('<td class="wrap"><div class=bar', '<td class="barcell"><div class=bar')
    return (
        f"<div><h4>{_t(d.title)}</h4>"
        f"<p>{d.count} measured · mean {mean} · longest {longest} · limit {d.limit_days} days · "
        f"<strong>{d.past_due}</strong> after their own due date.</p>{table}</div>"
    )


def _deadlines(d: Deadlines) -> str:
    refusals = _table(
        ["ground", "refused applications"],
        [(f"<code>{_t(g)}</code>", _t(n)) for g, n in d.refusals],
        numeric=(1,),
    )
    return f"""
<p>Judged at {_t(_when(d.as_of))}. A card is <em>overdue</em> when it is not ready by its due
date: 60 days after submission, plus the extension (at most 30 days, once) where one was granted
({d.extended} applications were extended). A review is <em>overdue</em> when the
household-registration county has not decided 5 days after the transmission.</p>
<div class="verdict {"bad" if d.cards_overdue or d.reviews_overdue else "ok"}">{d.cards_overdue}
cards overdue · {d.reviews_overdue} reviews overdue</div>
<div class=grid>
{_counties("By acceptance county", d.by_acceptance)}
{_counties("By household-registration county", d.by_hukou)}
</div>
<h3>How long the steps took</h3>
<p>From the history: the time from the transmission to the decision (approve or reject), and
from the submission to the card being ready at the acceptance point. Red rows lie beyond the
statutory limit; <em>after their own due date</em> counts the extension.</p>
<div class=grid>
{_distribution(d.review_times)}
{_distribution(d.issue_times)}
</div>
<h3>Refusals by ground</h3>
{refusals}"""


def _record(r: RecordPath) -> str:
    facts = "".join(f"<dt>{_t(k)}</dt><dd>{_t(v)}</dd>" for k, v in r.facts)
    rows = [
        (
            _t(h.seq),
            f"<code>{_t(h.event)}</code>",
            _t(h.from_state or "(new)"),
            _t(h.to_state),
            _t(h.actor_id),
            _t(h.actor_role),
            f"<span class=mono>{_t(h.actor_unit)}</span>",
            _t(_when(h.at)),
            _facts(h.details),
        )
        for h in r.history
    ]
    problem = (
        f'<div class="verdict bad">The stored history is not a path of the machine: '
        f"{_t(r.path_problem)}. The diagram shows the machine alone; see the verification.</div>"
        if r.path_problem
        else ""
    )
    return f"""
<dl class=facts><dt>{_t(r.noun)} id</dt><dd class=mono id="record-id">{_t(r.record_id)}</dd>
<dt>machine</dt><dd><code>{_t(r.machine)}</code></dd>
<dt>fingerprint</dt><dd class=fingerprint>{_t(r.fingerprint)}</dd>{facts}</dl>
{problem}
<figure>{inline_svg(r.svg, "record-path")}
<figcaption>The states it visited are filled blue; the transitions it took are bold blue and
numbered in the order they happened.</figcaption></figure>
<h3>History</h3>
{_table(_HISTORY_HEADERS, rows, numeric=(0,), nowrap=(1, 6, 7))}"""


def _facts(details: Mapping[str, Any]) -> str:
    """A history row's recorded facts, one a line (long digests may break anywhere)."""
    if not details:
        return "—"
    return "<br>".join(
        f"<span class=fact><code>{_t(k)}</code>: {_t(_json(v))}</span>" for k, v in details.items()
    )


_HISTORY_HEADERS = ("seq", "event", "from", "to", "actor", "role", "unit", "at", "facts recorded")


# ---------------------------------------------------------------------------------------------
# The page


def render(report: AuditReport) -> str:
    """The whole page."""
    present = [
        k
        for k in SECTIONS
        if (k != "checkpoint" or report.checkpoint is not None)
        and (k != "record" or report.record is not None)
    ]
    nav = "".join(f'<li><a href="#{k}">{_t(SECTIONS[k])}</a></li>' for k in present)
    bodies = {
        "processes": lambda: _processes(report),
        "verification": lambda: _verification(report),
        "checkpoint": lambda: _checkpoint(report.checkpoint or {}),
        "deadlines": lambda: _deadlines(report.deadlines),
        "record": lambda: _record(report.record) if report.record else "",
    }
    sections = "".join(
        f'<section id="{k}"><h2>{_t(SECTIONS[k])}</h2>{bodies[k]()}</section>' for k in present
    )
    revision = report.revision or "none"
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="idcard-workflow {_t(report.library_version)}">
<title>Audit report: remote acceptance of resident identity cards</title>
<style>{CSS}</style>
</head>
<body>
<header>
<h1>Audit report: remote acceptance of resident identity cards</h1>
<div class=meta>Generated {_t(_when(report.generated_at))} by idcard-workflow
{_t(report.library_version)} · database {_t(report.database)} at revision {_t(revision)} ·
citizen numbers masked; names and receipt numbers never shown</div>
<nav><ol>{nav}</ol></nav>
</header>
<main>
{sections}
</main>
</body>
</html>
"""
    return mask_text(page)
