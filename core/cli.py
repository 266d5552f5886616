"""Command line: ``convlstm-conformance`` (or ``python -m convlstm_conformance``).

    convlstm-conformance run [--profile ci] [--adapters a,b] [--adapter-object M:A] [-- PYTEST ARGS]
    convlstm-conformance repro CASE.npz --adapter NAME [--clause ID]   (exit 0 pass, 1 fail,
                                                                      2 bad input, 3 not judged)
    convlstm-conformance adapters
    convlstm-conformance report RESULTS_DIR
    convlstm-conformance certify --adapter NAME [--profile quick] [--waivers FILE]   (core/certify.py)
    convlstm-conformance campaign DIR --adapters all --minutes 60   (core/campaign.py)

``run`` runs the suite from the installed package, from any directory, and
ends with the HTML report; the rest of the options go to pytest (see
``pytest --help``, group convlstm-conformance).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

EXIT_USAGE = 2
EXIT_NOT_JUDGED = 3


def _adapters(args) -> int:
    from convlstm_conformance import registry
    for entry in registry.entries():
        ok, why = entry.available()
        print(f"{entry.name:20s} {'available' if ok else 'unavailable':12s} {why}")
    for name, why in registry.discover()[1]:
        print(f"{name:20s} {'broken':12s} {why}")
    return 0


def _repro(args) -> int:
    from convlstm_conformance import registry
    from convlstm_conformance.model import Case, CaseFileError
    from convlstm_conformance.spec import SpecError, load
    try:
        case = Case.load(args.case)
    except CaseFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        spec = load(args.spec) if args.spec else load()
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    clause = spec.clauses.get(args.clause) if args.clause else None
    if args.clause and clause is None:
        print(f"error: unknown clause {args.clause}", file=sys.stderr)
        return EXIT_USAGE
    try:
        adapter = registry.create(args.adapter)
    except Exception as exc:
        print(f"error: cannot create adapter {args.adapter}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        outcome = adapter.run(case)
    finally:
        adapter.close()
    label = args.clause or "numerics"
    print(f"case {args.case}: config {case.config}, inputs {case.inputs.shape}, dtype {case.dtype}")
    print(f"{adapter.name}: {outcome.summary()}")
    try:
        problem = _verdict(spec, clause, case, outcome, adapter, label)
    except ValueError as exc:     # the judge refuses a malformed case (ExprError included)
        print(f"error: case cannot be judged: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if problem is NOT_JUDGED:
        return EXIT_NOT_JUDGED
    if problem:
        print(f"FAIL [{label}]: {problem}")
        return 1
    print(f"PASS [{label}]")
    return 0


NOT_JUDGED = object()


def _verdict(spec, clause, case, outcome, adapter, label: str):
    """The clause's check of one outcome: a problem, None, or NOT_JUDGED."""
    from convlstm_conformance import harness, tolerance
    if clause is not None and clause.forbidding:
        return harness.check_raises(clause, outcome)
    if clause is not None and clause.kind in ("structure", "shape", "layout"):
        return harness.check_structure(spec, clause, drawn_from_case(case), outcome)
    gradients = case.cotangent is not None
    judge = tolerance.judge_gradients if gradients else harness.judge_for(adapter)
    verdict = judge(case, outcome)
    print(verdict.describe())
    if verdict.unjudged:
        # Not a pass: the tolerance model cannot vouch for this case.
        print(f"NOT JUDGED [{label}]: outside the tolerance model's domain")
        return NOT_JUDGED
    return None if verdict.passed else (
        "gradients diverge from the oracle" if gradients else "diverges from the oracle")


def drawn_from_case(case):
    """The configuration and input dimensions of a saved case."""
    from convlstm_conformance.strategies import Drawn
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
    from convlstm_conformance.plugin import SUITE_DIR
    cmd = [sys.executable, "-m", "pytest", str(SUITE_DIR), "--profile", args.profile,
           "--adapters", args.adapters, "--results-dir", args.results_dir,
           "-p", "no:cacheprovider", "-q"]
    for path in args.adapter_object:
        cmd += ["--adapter-object", path]
    for command in args.adapter_command:
        cmd += ["--adapter-command", command]
    if args.workers > 1:
        cmd += ["-n", str(args.workers)]
    cmd += extra
    print("running:", " ".join(cmd), flush=True)
    # Run where the user stands: --adapter-object modules and relative paths
    # resolve against it, as they would in the user's own pytest run.
    code = subprocess.call(cmd)
    report = Path(args.results_dir) / "report.html"
    if report.exists():
        print(f"report: {report.resolve()}")
    return code


def _report(args) -> int:
    from convlstm_conformance.plugin import render_report
    results = Path(args.results_dir)
    if not results.is_dir():
        print(f"error: {results}: no such results directory", file=sys.stderr)
        return EXIT_USAGE
    path = render_report(results)
    print(f"report: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1:]
        argv = argv[:argv.index("--")]
    p = argparse.ArgumentParser(prog="convlstm-conformance", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the conformance suite and write the report")
    r.add_argument("--profile", default="ci")
    r.add_argument("--adapters", default="all",
                   help="comma-separated registered adapters, 'all', or '' for none")
    r.add_argument("--adapter-object", action="append", default=[], metavar="MODULE:ATTR",
                   help="an in-process adapter of yours (repeatable)")
    r.add_argument("--adapter-command", action="append", default=[], metavar="NAME=COMMAND",
                   help="an out-of-process implementation speaking the worker protocol "
                        "(repeatable)")
    r.add_argument("--results-dir", default=str(Path("reports") / "out"))
    r.add_argument("-n", "--workers", type=int, default=2)
    q = sub.add_parser("repro", help="re-run a saved failing case")
    q.add_argument("case")
    q.add_argument("--adapter", required=True,
                   help="a registered name, object:MODULE:ATTR or command:NAME=COMMAND")
    q.add_argument("--clause")
    q.add_argument("--spec", default=None, help="the spec file (default: the one shipped)")
    sub.add_parser("adapters", help="list registered adapters and whether they are installed")
    b = sub.add_parser("report", help="render the HTML report of a results directory")
    b.add_argument("results_dir")
    from convlstm_conformance import campaign
    campaign.add_parser(sub)
    from convlstm_conformance import certify
    certify.add_arguments(sub.add_parser(
        "certify", help="certify one implementation: its certificate (JSON, HTML) and level"))
    args = p.parse_args(argv)
    if args.cmd == "certify":
        return certify.main(args, extra)
    if args.cmd == "campaign":
        return campaign.main(args, extra)
    if args.cmd == "run":
        return _run(args, extra)
    if args.cmd == "repro":
        return _repro(args)
    if args.cmd == "report":
        return _report(args)
    return _adapters(args)


if __name__ == "__main__":
    sys.exit(main())
