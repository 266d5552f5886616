"""Command line: ``python -m convlstm_conformance.reports build|history ...``.

Exit status: 0 on success, 2 when the input cannot be used (missing results,
unusable history database, unknown run id), as argparse does for bad usage.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import history
from .records import OUTCOMES, InputError, load

EXIT_INPUT = 2


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except (InputError, history.HistoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except OSError as exc:
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_INPUT


def _build(args: argparse.Namespace) -> int:
    from .html import build  # jinja2 is only needed here

    out, results = build(args.results_dir, args.output, args.history)
    for w in results.warnings:
        print(f"warning: {w}", file=sys.stderr)
    totals = results.totals()
    summary = ", ".join(f"{totals[o]} {o}" for o in OUTCOMES if totals[o]) or "no results"
    print(f"{out}: {summary}")
    return 0


def _history_add(args: argparse.Namespace) -> int:
    results = load(args.results_dir)
    for w in results.warnings:
        print(f"warning: {w}", file=sys.stderr)
    run_id, new = history.add_results(results, args.db, args.label)
    print(f"{'added' if new else 'updated'} run {run_id} in {args.db}")
    return 0


def _history_list(args: argparse.Namespace) -> int:
    rows = history.runs(args.db)
    if args.json:
        print(json.dumps([r.__dict__ for r in rows], indent=2))
        return 0
    if not rows:
        print(f"{args.db}: no runs")
        return 0
    print(f"{'run id':<36} {'started':<26} {'profile':<12} {'adapters':>8}  results")
    for r in rows:
        totals = ", ".join(f"{r.totals[o]} {o}" for o in OUTCOMES if r.totals.get(o))
        print(f"{r.run_id:<36} {r.started or '-':<26} {r.profile or '-':<12} "
              f"{r.adapters:>8}  {totals}")
    return 0


def _history_diff(args: argparse.Namespace) -> int:
    d = history.diff(args.db, args.run_a, args.run_b)
    if args.json:
        print(json.dumps(d.to_dict(), indent=2))
        return 0
    print(" -> ".join(f"{run} ({label})" if label else run
                      for run, label in ((d.run_a, d.label_a), (d.run_b, d.label_b))))
    if d.scope:
        print(f"note: {d.scope}")
    if d.empty:
        print("no changes")
    sections = [("newly failing", d.newly_failing), ("newly fixed", d.newly_fixed),
                ("other status changes", d.other_changes),
                ("new error messages", d.message_changes), ("new pairs", d.added),
                ("removed pairs", d.removed), ("adapter status changes", d.adapter_changes)]
    for title, items in sections:
        if items:
            print(f"\n{title} ({len(items)}):")
            for c in items:
                where = f"{c.clause} / {c.adapter}" if c.clause else c.adapter
                print(f"  {where}: {c.before or '-'} -> {c.after or '-'}")
    if d.drift:
        print(f"\nerror-budget drift, worst error/budget ({len(d.drift)}):")
        for c in d.drift:
            print(f"  {c.clause} / {c.adapter}: {c.before:.3g} -> {c.after:.3g}")
    if d.version_changes:
        print(f"\nversion changes ({len(d.version_changes)}):")
        for v in d.version_changes:
            print(f"  {v.adapter} {v.package}: {v.before or '-'} -> {v.after or '-'}")
    return 0


def _history_trend(args: argparse.Namespace) -> int:
    from . import trend

    releases = [r for r in args.releases.split(",") if r] if args.releases else None
    t = trend.build(args.db, args.adapter, releases)
    if args.html:
        args.html.write_text(trend.to_html(t), encoding="utf-8")
        print(f"wrote {args.html}", file=sys.stderr)
    print(trend.to_text(t), end="")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m convlstm_conformance.reports",
                                description="HTML reports and history of conformance runs.")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="render a results directory as one HTML file")
    b.add_argument("results_dir", type=Path, metavar="RESULTS_DIR")
    b.add_argument("-o", "--output", type=Path,
                   help="output file (default: RESULTS_DIR/report.html)")
    b.add_argument("--history", type=Path, metavar="DB",
                   help="history database: add a 'changes since previous run' section")
    b.set_defaults(func=_build)

    h = sub.add_parser("history", help="store and compare runs").add_subparsers(
        dest="history_command", required=True)
    add = h.add_parser("add", help="store a run (idempotent on its run id)")
    add.add_argument("results_dir", type=Path, metavar="RESULTS_DIR")
    add.add_argument("--db", type=Path, required=True)
    add.add_argument("--label", help="the release the run stands for, e.g. 2024-07")
    add.set_defaults(func=_history_add)
    ls = h.add_parser("list", help="list stored runs, oldest first")
    ls.add_argument("--db", type=Path, required=True)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_history_list)
    df = h.add_parser("diff", help="what changed from RUN_A to RUN_B")
    df.add_argument("run_a", metavar="RUN_A", help="run id, release label or unique id prefix")
    df.add_argument("run_b", metavar="RUN_B", help="run id, release label or unique id prefix")
    df.add_argument("--db", type=Path, required=True)
    df.add_argument("--json", action="store_true")
    df.set_defaults(func=_history_diff)
    tr = h.add_parser("trend", help="clause x release for one adapter, and where each change "
                                    "first appeared")
    tr.add_argument("--db", type=Path, required=True)
    tr.add_argument("--adapter", required=True)
    tr.add_argument("--releases", help="comma-separated labels or run ids, in order "
                                       "(default: every labelled run, by label)")
    tr.add_argument("--html", type=Path, help="also write the trend as one HTML file")
    tr.set_defaults(func=_history_trend)
    return p


if __name__ == "__main__":
    sys.exit(main())
