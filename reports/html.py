"""Render a results directory as one self-contained HTML file.

Everything an adapter wrote (names, messages, configs, reasons) is untrusted:
it reaches the page only through jinja2 autoescaping, and only http(s) URLs
found in reasons become links.  The page has no external assets.
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from . import history, summary
from .plot import strip_plot
from .records import OUTCOMES, REPORTED, Cell, Record, Results, load, ratio_key

TEMPLATE_DIR = Path(__file__).parent / "templates"
# Long tracebacks stay readable and one runaway adapter cannot bloat the page.
MAX_MESSAGE = 20_000
# Per cell, tests listed in full; passes and skips are capped harder, worst first.
MAX_CELL_ROWS = 200
MAX_CELL_PASSES = 20
SHORT = {"failed": "F", "error": "E", "crashed": "C", "xpassed": "XP", "xfailed": "XF",
         "passed": "P", "skipped": "S"}
_URL = re.compile(r"https?://[^\s<>\"'`]+", re.IGNORECASE)


@dataclass
class Failure:
    anchor: str
    record: Record
    config: str | None
    errors: list[tuple[str, Any, Any, Any, bool]]
    message: str
    finding: str = ""                 # anchor of the finding it belongs to
    snippet: str | None = None        # standalone script showing it (adapters/snippets.py)
    snippet_note: str = ""            # why there is none


@dataclass
class CellView:
    anchor: str
    cell: Cell
    status: str
    counts: list[tuple[str, int]]
    worst: float | None
    rows: list[tuple[Record, str | None]] = field(default_factory=list)
    hidden_rows: int = 0


@dataclass
class Changes:
    previous_run: str | None
    previous_started: str | None
    diff: history.Diff | None


def build(results_dir: str | Path, output: str | Path | None = None,
          history_db: str | Path | None = None) -> tuple[Path, Results]:
    """Load ``results_dir``, write the report, return (path, results)."""
    results = load(results_dir)
    changes = None
    if history_db is not None and not Path(history_db).exists():
        changes = Changes(None, None, None)  # first run of a new history
    elif history_db is not None:
        current = history.snapshot(results)
        prev = history.previous(history_db, current)
        changes = Changes(prev.run_id if prev else None, prev.started if prev else None,
                          history.compare(prev, current) if prev else None)
    out = Path(output) if output else Path(results_dir) / "report.html"
    out.write_text(render(results, changes), encoding="utf-8")
    return out, results


def render(results: Results, changes: Changes | None = None) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR), autoescape=True,
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(ratio=fmt_ratio, sci=fmt_sci, segments=link_segments,
                       duration=fmt_duration, short=lambda o: SHORT.get(o, o))
    return env.get_template("report.html.j2").render(**context(results, changes))


def context(results: Results, changes: Changes | None = None) -> dict[str, Any]:
    full, results = results, summary.in_run(results)
    found = summary.findings(results)
    failures = _failures(results, found)
    anchors = {id(f.record): f.anchor for f in failures}
    matrix = results.matrix()
    totals = results.totals()
    clause_ids = [c.id for c in results.clauses]
    adapter_names = [a.name for a in results.adapters]

    cell_views: dict[tuple[str, str], CellView] = {}
    for i, cid in enumerate(clause_ids):
        for j, name in enumerate(adapter_names):
            cell = matrix.get((cid, name))
            if cell is not None:
                cell_views[(cid, name)] = _cell_view(f"cell-{i}-{j}", cell, anchors)
    rows = []
    for clause in results.clauses:
        cells = [cell_views.get((clause.id, name)) for name in adapter_names]
        present = [c for c in cells if c]
        rows.append({"clause": clause, "cells": cells,
                     "clean": all(c.status in ("passed", "skipped") for c in present)})
    column_totals = [Counter(r.outcome for r in results.records if r.adapter == name)
                     for name in adapter_names]

    return {
        "results": results, "run": results.run, "adapters": results.adapters,
        "title": f"ConvLSTM2D conformance — {results.run.run_id or 'unknown run'}",
        "totals": [(o, totals[o]) for o in OUTCOMES if totals[o]],
        "outcomes": OUTCOMES, "short": SHORT, "max_passes": MAX_CELL_PASSES,
        "capabilities": _capability_rows(results),
        "rows": rows, "column_totals": column_totals,
        "cell_views": [cell_views[k] for k in sorted(
            cell_views, key=lambda k: (clause_ids.index(k[0]), adapter_names.index(k[1])))],
        "plot": strip_plot(results, anchors),
        "failures": failures,
        "lines": summary.implementation_lines(results, found),
        "findings": [f for f in found if f.kind == "failure"],
        "finding_links": {f.anchor: [(r.clause, anchors.get(id(r))) for r in f.records]
                          for f in found},
        "known": [f for f in found if f.kind == "expected"],
        "left_out": summary.left_out(full, results),
        "spec_clauses": sum(1 for c in results.clauses if c.in_spec),
        "skips": _grouped(results, "skipped", by_clause=False),
        "changes": changes,
        "environment": _environment(results),
    }


# -- view helpers ------------------------------------------------------------

def _failures(results: Results, found: list[summary.Finding]) -> list[Failure]:
    order = {o: i for i, o in enumerate(OUTCOMES)}
    clause_pos = {c.id: i for i, c in enumerate(results.clauses)}
    picked = sorted((r for r in results.records if r.outcome in REPORTED),
                    key=lambda r: (order[r.outcome], clause_pos.get(r.clause, 1 << 30),
                                   r.adapter, r.nodeid))
    out = []
    for n, r in enumerate(picked, 1):
        errors = [(name, m.max_abs, m.budget, m.ratio, not (m.ratio is not None and m.ratio <= 1))
                  for name, m in r.errors.items()]
        f = Failure(f"f{n}", r, pretty_json(r.config), errors, _truncate(r.message),
                    finding=next((g.anchor for g in found if any(x is r for x in g.records)), ""))
        if n <= summary.MAX_SNIPPETS:
            f.snippet, f.snippet_note = summary.snippet(results.directory, r)
        else:
            f.snippet_note = f"snippets are written for the first {summary.MAX_SNIPPETS} failures"
        out.append(f)
    return out


def _cell_view(anchor: str, cell: Cell, anchors: dict[int, str]) -> CellView:
    counts = cell.counts
    order = {o: i for i, o in enumerate(OUTCOMES)}
    recs = sorted(cell.records, key=lambda r: (order[r.outcome], -ratio_key(r.worst_ratio)))
    view = CellView(anchor, cell, cell.status or "", [(o, counts[o]) for o in OUTCOMES
                                                      if counts[o]], cell.worst_ratio)
    severe = [r for r in recs if r.outcome not in ("passed", "skipped")][:MAX_CELL_ROWS]
    mild = [r for r in recs if r.outcome in ("passed", "skipped")][:MAX_CELL_PASSES]
    view.rows = [(r, anchors.get(id(r))) for r in severe + mild]
    view.hidden_rows = len(recs) - len(view.rows)
    return view


def _grouped(results: Results, outcome: str, by_clause: bool) -> list[dict[str, Any]]:
    """xfails per (clause, adapter, reason); skips per (adapter, reason)."""
    groups: dict[tuple, dict[str, Any]] = {}
    for r in results.records:
        if r.outcome != outcome:
            continue
        reason = r.reason or r.message or ""
        key = (r.clause if by_clause else "", r.adapter, reason)
        g = groups.setdefault(key, {"clause": key[0], "adapter": r.adapter, "reason": reason,
                                    "count": 0, "clauses": [], "nodeids": []})
        g["count"] += 1
        if r.clause not in g["clauses"]:
            g["clauses"].append(r.clause)
        if len(g["nodeids"]) < 5:
            g["nodeids"].append(r.nodeid)
    return sorted(groups.values(), key=lambda g: (g["adapter"], g["clause"], -g["count"]))


def _capability_rows(results: Results) -> list[tuple[str, list[tuple[str, str]]]]:
    """Rows of (feature, [(css class, text) per adapter])."""
    features: list[str] = []
    for a in results.adapters:
        features += [f for f in a.capabilities if f not in features]
    rows = []
    for f in features:
        cells = []
        for a in results.adapters:
            v = a.capabilities.get(f)
            if v is True:
                cells.append(("yes", "✓"))
            elif v is False:
                cells.append(("no", "✗"))
            elif v is None:
                cells.append(("unknown", "–"))
            elif isinstance(v, list):
                cells.append(("list", ", ".join(str(x) for x in v) or "none"))
            else:
                cells.append(("list", str(v)))
        rows.append((f, cells))
    return rows


def _environment(results: Results) -> list[tuple[str, str]]:
    env = results.run.environment
    keys = ["python", "platform", "machine", "cpu_count"]
    keys += sorted(k for k in env if k not in keys)
    return [(k, str(env[k])) for k in keys if k in env]


# -- filters -----------------------------------------------------------------

def link_segments(text: str | None) -> list[tuple[str, str | None]]:
    """Split text into (text, href) parts; only http(s) URLs get an href."""
    if not text:
        return []
    parts, pos = [], 0
    for m in _URL.finditer(text):
        url = m.group(0).rstrip(".,;:!?)]}")
        if m.start() > pos:
            parts.append((text[pos:m.start()], None))
        parts.append((url, url))
        pos = m.start() + len(url)
    if pos < len(text):
        parts.append((text[pos:], None))
    return parts


def pretty_json(value: Any) -> str | None:
    """Indented JSON that keeps flat lists on one line: ``"kernel_size": [3, 3]``."""
    if value is None:
        return None
    return _json(value, 0)


def _json(value: Any, depth: int) -> str:
    nested = isinstance(value, (dict, list)) and any(
        isinstance(v, (dict, list)) and v for v in (value.values() if isinstance(value, dict)
                                                   else value))
    if isinstance(value, dict) and value and (nested or depth == 0):
        pad = "  " * (depth + 1)
        items = [f"{pad}{json.dumps(str(k), ensure_ascii=False)}: {_json(v, depth + 1)}"
                 for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))]
        return "{\n" + ",\n".join(items) + "\n" + "  " * depth + "}"
    if isinstance(value, list) and nested:
        pad = "  " * (depth + 1)
        items = [pad + _json(v, depth + 1) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + "  " * depth + "]"
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def fmt_ratio(value: float | None) -> str:
    if value is None:
        return "—"
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:.3g}"


def fmt_sci(value: float | None) -> str:
    if value is None:
        return "—"
    if not math.isfinite(value):
        return fmt_ratio(value)
    return f"{value:.3e}"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _truncate(text: str) -> str:
    if len(text) <= MAX_MESSAGE:
        return text
    return text[:MAX_MESSAGE] + f"\n… ({len(text) - MAX_MESSAGE} more characters)"
