"""Command line: run the suite, reproduce a failure, list adapters.

    python -m conformance run [--profile ci] [--adapters a,b] [-- PYTEST ARGS]
    python -m conformance repro CASE.npz --adapter NAME [--clause ID]
    python -m conformance adapters
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _adapters(args) -> int:
    from adapters import registry
    for spec in registry.KNOWN:
        ok, why = spec.available()
        if ok and not registry.module_present(spec.target):
            ok, why = False, f"adapter module {spec.target} missing"
        print(f"{spec.name:20s} {'available' if ok else 'unavailable':12s} {why}")
    return 0


def _repro(args) -> int:
    from adapters import registry
    from adapters.base import Case, CaseFileError
    from conformance import harness, tolerance
    from conformance.spec import load
    try:
        case = Case.load(args.case)
    except CaseFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    spec = load(args.spec)
    try:
        if args.adapter.startswith("object:"):
            adapter = registry.from_object(args.adapter[len("object:"):])
        elif args.adapter.startswith("command:"):
            adapter = registry.from_command(args.adapter[len("command:"):])
        else:
            adapter = registry.create(registry.known(args.adapter))
    except Exception as exc:
        print(f"error: cannot create adapter {args.adapter}: {exc}", file=sys.stderr)
        return 2
    try:
        outcome = adapter.run(case)
    finally:
        adapter.close()
    print(f"case {args.case}: config {case.config}, inputs {case.inputs.shape}, dtype {case.dtype}")
    print(f"{adapter.name}: {outcome.summary()}")
    clause = spec.clauses.get(args.clause) if args.clause else None
    if args.clause and clause is None:
        print(f"error: unknown clause {args.clause}", file=sys.stderr)
        return 2
    if clause is not None and clause.forbidding:
        problem = harness.check_raises(clause, outcome)
    elif clause is not None and clause.kind in ("structure", "shape", "layout"):
        problem = harness.check_structure(spec, clause, drawn_from_case(spec, case), outcome)
    else:
        verdict = tolerance.judge(case, outcome)
        print(verdict.describe())
        if verdict.unjudged:
            print(f"NOT JUDGED [{args.clause or 'numerics'}]: outside the tolerance model's domain")
            return 0
        problem = None if verdict.passed else "diverges from the oracle"
    if problem:
        print(f"FAIL [{args.clause or 'numerics'}]: {problem}")
        return 1
    print(f"PASS [{args.clause or 'numerics'}]")
    return 0


def drawn_from_case(spec, case):
    from conformance.strategies import Drawn
    shape = case.inputs.shape
    cf = (case.config.get("data_format") or "channels_last") == "channels_first"
    if len(shape) == 5:
        b, t = shape[:2]
        c, r, w = (shape[2], shape[3], shape[4]) if cf else (shape[4], shape[2], shape[3])
        dims = dict(batch=b, timesteps=t, rows=r, cols=w, channels=c)
    else:
        dims = {}
    return Drawn(dict(case.config), dims, len(shape))


def _run(args, extra: list[str]) -> int:
    cmd = [sys.executable, "-m", "pytest", str(REPO_ROOT / "conformance"),
           "--profile", args.profile, "--adapters", args.adapters,
           "--results-dir", args.results_dir, "-p", "no:cacheprovider", "-q"]
    if args.workers > 1:
        cmd += ["-n", str(args.workers)]
    cmd += extra
    print("running:", " ".join(cmd), flush=True)
    code = subprocess.call(cmd, cwd=REPO_ROOT)
    report = Path(args.results_dir) / "report.html"
    if report.exists():
        print(f"report: {report}")
    return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1:]
        argv = argv[:argv.index("--")]
    p = argparse.ArgumentParser(prog="python -m conformance", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the conformance suite and write the report")
    r.add_argument("--profile", default="ci")
    r.add_argument("--adapters", default="all")
    r.add_argument("--results-dir", default=str(REPO_ROOT / "reports" / "out"))
    r.add_argument("-n", "--workers", type=int, default=2)
    q = sub.add_parser("repro", help="re-run a saved failing case")
    q.add_argument("case")
    q.add_argument("--adapter", required=True)
    q.add_argument("--clause")
    q.add_argument("--spec", default=str(REPO_ROOT / "specs" / "convlstm2d.yaml"))
    sub.add_parser("adapters", help="list known adapters and whether they are installed")
    args = p.parse_args(argv)
    if args.cmd == "run":
        return _run(args, extra)
    if args.cmd == "repro":
        return _repro(args)
    return _adapters(args)


if __name__ == "__main__":
    sys.exit(main())
