"""How fast the suite catches each mutant of tests/mutant_zoo.py.

For every seed, one pytest run of the suite in the ``dev`` profile (random,
``--hypothesis-seed``) with every mutant on the suite's test of the clause
describing it, ``CONVLSTM_EXAMPLES`` examples at most, no shrinking and no
example database (benchmarks/detection_probe.py).  Measured per mutant and
seed: the Hypothesis examples and the seconds until that test first failed.
Reported per mutant: median and maximum over the seeds (a seed that never
failed counts as more than the limit), and the targets: every mutant
caught, median at most 10 examples, none above 100.  For a clause searched
once per value of an argument (``each``: SEM-ACTIVATIONS, one search per
activation) the examples are those of the mutant's own search; the seconds
run from the test's start.

    python benchmarks/detection_speed.py --seeds 1,2,3,4,5 --json detection.json

``--spec`` and ``--clause NAME=CLAUSE`` measure a proposed change of the
spec: a mutant judged on another clause of another spec file.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from convlstm_conformance.spec import load_cached  # noqa: E402
from tests.mutant_zoo import MUTATIONS, object_path, suite_node  # noqa: E402


def run_seed(seed: int, limit: int, names: list[str], clause: dict[str, str],
             spec_path: Path | None = None) -> dict[str, dict]:
    """{mutant: {"examples", "seconds"}} of the mutants caught under ``seed``."""
    spec = load_cached(spec_path) if spec_path else load_cached()
    with tempfile.TemporaryDirectory(prefix="detection-") as tmp:
        probe = Path(tmp) / "probe.jsonl"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "-p", "benchmarks.detection_probe", "-p", "hypothesis",
               f"--hypothesis-seed={seed}", "--profile", "dev", "--adapters", "",
               "--results-dir", str(Path(tmp) / "records"), "--no-report"]
        if spec_path:
            cmd += ["--spec", str(spec_path)]
        # The base first: a control that must not fail, and it pays the
        # one-off imports so the first mutant's seconds do not.
        cmd.append(suite_node(spec, object_path(None), "SEM-STEP"))
        cmd += [suite_node(spec, object_path(n), clause[n]) for n in names]
        for n in [None] + names:
            cmd += ["--adapter-object", object_path(n)]
        env = dict(os.environ, CONVLSTM_EXAMPLES=str(limit), CONVLSTM_PROBE_OUT=str(probe))
        env.pop("CONVLSTM_HYPOTHESIS_REDIS", None)
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=3600)
        if proc.returncode not in (0, 1):
            raise RuntimeError(proc.stdout[-3000:] + proc.stderr[-3000:])
        found = {}
        if probe.exists():
            for line in probe.read_text().splitlines():
                r = json.loads(line)
                if r["adapter"] == "zoo-base":
                    raise RuntimeError(f"the correct base failed under seed {seed}: {r}")
                name = r["adapter"].removeprefix("zoo-")
                if r["clause"] == clause.get(name):
                    found[name] = {"examples": r["examples"], "seconds": r["seconds"]}
        return found


def summarize(runs: dict[int, dict], limit: int, names: list[str],
              clause: dict[str, str]) -> dict[str, dict]:
    out = {}
    for n in names:
        got = [runs[s].get(n) for s in sorted(runs)]
        ex = [g["examples"] if g else limit + 1 for g in got]
        sec = [g["seconds"] for g in got if g]
        out[n] = {"clause": clause[n],
                  "caught": sum(g is not None for g in got), "seeds": len(got),
                  "examples": ex, "median_examples": float(np.median(ex)),
                  "max_examples": max(ex),
                  "median_seconds": float(np.median(sec)) if sec else None,
                  "max_seconds": max(sec) if sec else None}
    return out


def _n(v, limit):
    return f">{limit}" if v > limit else f"{v:g}"


def table(summary: dict, limit: int) -> str:
    lines = ["| mutant | clause | caught | examples: median | max | seconds: median | max |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for n, s in summary.items():
        sec = ("—", "—") if s["median_seconds"] is None else (
            f"{s['median_seconds']:.2f}", f"{s['max_seconds']:.2f}")
        lines.append(f"| {n} | {s['clause']} | {s['caught']}/{s['seeds']} | "
                     f"{_n(s['median_examples'], limit)} | {_n(s['max_examples'], limit)} | "
                     f"{sec[0]} | {sec[1]} |")
    meds = [s["median_examples"] for s in summary.values()]
    slow = [n for n, s in summary.items() if s["median_examples"] > 10]
    over = [n for n, s in summary.items() if s["max_examples"] > 100]
    lines += ["", f"median of the medians: {np.median(meds):g} examples; median above 10: "
                  f"{', '.join(slow) or 'none'}; any seed above 100: {', '.join(over) or 'none'}"]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1,2,3,4,5")
    ap.add_argument("--examples", type=int, default=100,
                    help="examples per test at most (a mutant not caught reads as more)")
    ap.add_argument("--mutants", default="", help="comma-separated names (default: all)")
    ap.add_argument("--spec", type=Path, help="another spec file (default: the suite's)")
    ap.add_argument("--clause", action="append", default=[], metavar="NAME=CLAUSE",
                    help="judge mutant NAME on CLAUSE instead of its own (repeatable)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    names = [n for n in args.mutants.split(",") if n] or [m.name for m in MUTATIONS]
    clause = {m.name: m.clause for m in MUTATIONS}
    clause.update(dict(c.split("=", 1) for c in args.clause))
    runs, start = {}, time.perf_counter()
    for seed in (int(s) for s in args.seeds.split(",")):
        t = time.perf_counter()
        runs[seed] = run_seed(seed, args.examples, names, clause,
                              args.spec.resolve() if args.spec else None)
        print(f"seed {seed}: {len(runs[seed])}/{len(names)} caught, "
              f"{time.perf_counter() - t:.0f} s", file=sys.stderr)
    summary = summarize(runs, args.examples, names, clause)
    print(table(summary, args.examples))
    if args.json:
        args.json.write_text(json.dumps({"seeds": sorted(runs), "limit": args.examples,
                                         "seconds": round(time.perf_counter() - start, 1),
                                         "mutants": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
