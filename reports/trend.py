"""The trend of one implementation across an ordered series of releases.

A clause x release table of the implementation's verdicts, and for every
clause the release where each change first appeared: newly failing, newly
passing, another verdict, a new error message under the same verdict, and
error-budget drift (``history.drifted``).  Each release is compared with the
one before it through :func:`history.compare`, so two runs of different suite
or spec versions are compared only on the clauses both have, and the trend
says so for that step.  Rendered as text and as one self-contained HTML page
(every stored string escaped: adapter names, versions and messages come from
untrusted runs).
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field

from . import history
from .records import BAD

# One character per verdict in the text table; "." where the run has no cell.
SYMBOL = {"failed": "F", "error": "E", "crashed": "C", "xpassed": "X", "xfailed": "x",
          "passed": "P", "skipped": "s", None: "."}


@dataclass
class Change:
    clause: str
    release: str          # the release where it first appeared
    previous: str         # the release it is compared with
    kind: str             # newly failing, newly passing, verdict, message, drift, ...
    before: str | None
    after: str | None


@dataclass
class Column:
    release: str
    run_id: str
    status: str | None            # the adapter's status in that run
    versions: dict[str, str]
    suite_version: str | None
    spec_sha256: str | None


@dataclass
class Trend:
    adapter: str
    columns: list[Column]
    clauses: list[str]
    cells: dict[tuple[str, str], str | None]            # (clause, release) -> status
    ratios: dict[tuple[str, str], float | None]
    changes: list[Change] = field(default_factory=list)
    scope_notes: list[str] = field(default_factory=list)

    def first_changes(self) -> dict[str, list[Change]]:
        """Per clause, its changes in release order."""
        out: dict[str, list[Change]] = {}
        for c in self.changes:
            out.setdefault(c.clause, []).append(c)
        return out


def build(db, adapter: str, releases: list[str] | None = None) -> Trend:
    """The trend of ``adapter`` over ``releases`` (labels or run ids, in that
    order); by default every labelled run that declared the adapter, by label."""
    snaps = history.series(db, releases)
    # A run that did not run the adapter (declared it, but no result) is no release of it.
    snaps = [s for s in snaps if any(a == adapter for _, a in s.cells)]
    if not snaps:
        raise history.HistoryError(f"no run in the series has the adapter {adapter!r}")
    names = [s.name for s in snaps]
    if len(set(names)) != len(names):
        raise history.HistoryError(f"the series names a release twice: {', '.join(names)}")
    columns = [Column(s.name, s.run_id, s.adapter_status.get(adapter),
                      s.versions.get(adapter, {}), s.suite_version, s.spec_sha256) for s in snaps]
    clauses: list[str] = []
    for s in snaps:
        ordered = s.clauses if s.clauses is not None else sorted(s.clause_ids())
        clauses += [c for c in ordered if c not in clauses]
    cells = {(c, s.name): s.cells.get((c, adapter)) for s in snaps for c in clauses}
    ratios = {(c, s.name): s.ratios.get((c, adapter)) for s in snaps for c in clauses}
    trend = Trend(adapter, columns, clauses, cells, ratios)
    for prev, cur in zip(snaps, snaps[1:]):
        d = history.compare(prev, cur)
        if d.scope:
            trend.scope_notes.append(f"{prev.name} -> {cur.name}: {d.scope}")
        trend.changes += _changes(d, adapter, prev.name, cur.name)
    return trend


def _changes(d: history.Diff, adapter: str, prev: str, cur: str) -> list[Change]:
    out = []
    for kind, items in (("newly failing", d.newly_failing), ("newly passing", d.newly_fixed),
                        ("verdict", d.other_changes), ("message", d.message_changes)):
        for c in items:
            if c.adapter == adapter and c.before is not None:
                if kind == "newly passing" and c.after != "passed":
                    kind = "no longer failing"     # e.g. now an expected failure
                out.append(Change(c.clause, cur, prev, kind, c.before, c.after))
    for c in d.added:
        if c.adapter == adapter and c.after in BAD:
            continue   # already listed as newly failing
        if c.adapter == adapter:
            out.append(Change(c.clause, cur, prev, "appeared", None, c.after))
    for c in d.removed:
        if c.adapter == adapter:
            out.append(Change(c.clause, cur, prev, "disappeared", c.before, None))
    for c in d.drift:
        if c.adapter == adapter:
            out.append(Change(c.clause, cur, prev, "drift", _ratio(c.before), _ratio(c.after)))
    order = {"newly failing": 0, "newly passing": 1, "no longer failing": 1, "verdict": 2, "message": 3, "drift": 4,
             "appeared": 5, "disappeared": 6}
    return sorted(out, key=lambda c: (c.clause, order[c.kind]))


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _versions(col: Column) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(col.versions.items())) or "-"


# -- text ----------------------------------------------------------------------

def to_text(trend: Trend) -> str:
    lines = [f"trend of {trend.adapter} over {len(trend.columns)} releases "
             f"(verdicts: {', '.join(f'{v} {k}' for k, v in SYMBOL.items() if k)}, . no result)",
             ""]
    for col in trend.columns:
        lines.append(f"  {col.release}: {col.status or 'not in run'}; {_versions(col)}; "
                     f"suite {col.suite_version or '?'}, spec {(col.spec_sha256 or '?')[:12]}")
    for note in trend.scope_notes:
        lines.append(f"  note: {note}")
    width = max(len(c) for c in trend.clauses) if trend.clauses else 6
    head = " ".join(f"{col.release:>8}" for col in trend.columns)
    lines += ["", f"{'clause':<{width}} {head}"]
    for clause in trend.clauses:
        row = " ".join(f"{SYMBOL.get(trend.cells[(clause, col.release)], '?'):>8}"
                       for col in trend.columns)
        lines.append(f"{clause:<{width}} {row}")
    lines += ["", f"changes ({len(trend.changes)}), by clause, each at the release where "
                  "it first appeared:"]
    if not trend.changes:
        lines.append("  none")
    for clause, changes in trend.first_changes().items():
        lines.append(f"  {clause}")
        for c in changes:
            lines.append(f"    {c.release} (since {c.previous}) {c.kind}: "
                         f"{c.before or '-'} -> {c.after or '-'}")
    return "\n".join(lines) + "\n"


# -- HTML ----------------------------------------------------------------------

_CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:2px 6px}
th{background:#f3f3f3;text-align:left}td.v{text-align:center;font-family:monospace}
.failed,.error,.crashed{background:#f8c9c4}.xpassed{background:#ffe2a8}
.xfailed{background:#fbeec8}.passed{background:#d4efd4}.skipped{background:#eee}
.changed{outline:2px solid #333;outline-offset:-2px}code{font-size:12px}"""


def to_html(trend: Trend) -> str:
    e = html.escape
    changed = {(c.clause, c.release) for c in trend.changes}
    head = "".join(f"<th>{e(c.release)}<br><small>{e(_versions(c))}</small></th>"
                   for c in trend.columns)
    rows = []
    for clause in trend.clauses:
        tds = []
        for col in trend.columns:
            status = trend.cells[(clause, col.release)]
            ratio = trend.ratios[(clause, col.release)]
            cls = f"v {status or ''}" + (" changed" if (clause, col.release) in changed else "")
            tip = f"{status or 'no result'}; worst error/budget {_ratio(ratio)}"
            tds.append(f'<td class="{e(cls)}" title="{e(tip)}">{e(SYMBOL.get(status, "?"))}</td>')
        rows.append(f"<tr><th>{e(clause)}</th>{''.join(tds)}</tr>")
    changes = "".join(
        f"<tr><td>{e(c.clause)}</td><td>{e(c.release)}</td><td>{e(c.previous)}</td>"
        f"<td>{e(c.kind)}</td><td><code>{e(c.before or '-')}</code></td>"
        f"<td><code>{e(c.after or '-')}</code></td></tr>" for c in trend.changes)
    notes = "".join(f"<li>{e(n)}</li>" for n in trend.scope_notes)
    runs = "".join(f"<li>{e(c.release)}: run <code>{e(c.run_id)}</code>, adapter "
                   f"{e(c.status or 'not in run')}, suite {e(c.suite_version or '?')}, spec "
                   f"<code>{e((c.spec_sha256 or '?')[:12])}</code></li>" for c in trend.columns)
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<title>Trend of {e(trend.adapter)}</title><style>{_CSS}</style></head><body>"
            f"<h1>Trend of {e(trend.adapter)} across {len(trend.columns)} releases</h1>"
            f"<ul>{runs}</ul>"
            + (f"<p>Compared on the clauses both runs have:</p><ul>{notes}</ul>" if notes else "")
            + f"<p>Verdicts: {e(', '.join(f'{v} {k}' for k, v in SYMBOL.items() if k))}, "
              f". no result; a framed cell is where a change first appeared.</p>"
            f"<table><tr><th>clause</th>{head}</tr>{''.join(rows)}</table>"
            f"<h2>Changes ({len(trend.changes)})</h2>"
            + (f"<table><tr><th>clause</th><th>first in</th><th>since</th><th>change</th>"
               f"<th>before</th><th>after</th></tr>{changes}</table>" if changes
               else "<p>None.</p>")
            + "</body></html>\n")
