"""Calibration of the tolerance model (core/tolerance.py).

Two questions, answered on random cases drawn from the spec:

1. Does a correct implementation computed differently from the oracle stay
   below its budget?  Correct implementations (the float32 im2col + GEMM one of
   tests/mutants.py, plus adapters named with ``--adapters``) run on many cases
   in every dtype they claim; the distribution of error/budget ratios is
   reported per implementation, dtype and quantity (outputs; gradients where
   claimed).  Any ratio above 1 is a false alarm of the model or a bug in the
   implementation: either way its config is printed and the script exits 1.
2. Does the budget still catch small real deviations?  Every mutant of
   tests/mutants.py (forget-gate bias + 0.01, swapped gates, ...) runs on the
   float32 cases; a case is *live* for a mutant when the mutant's output
   differs from the correct one's at all, and the catch rate is over live cases.

Cases matching a documented divergence of the adapter
(conformance/expectations/*.yaml, e.g. keras3-jax computing float64 layers in
float32) are counted apart, not as false alarms.

    python benchmarks/soak_tolerance.py                       # float32 + the fast references
    python benchmarks/soak_tolerance.py --adapters all --adapter-cases 40
    python benchmarks/soak_tolerance.py --cases 500 --json soak.json
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from convlstm_conformance import oracle, registry  # noqa: E402
from convlstm_conformance.features import formats  # noqa: E402
from convlstm_conformance.model import OK, Adapter  # noqa: E402
from benchmarks.throughput import FLOAT32, machine, open_adapter  # noqa: E402
from convlstm_conformance import tolerance  # noqa: E402
from convlstm_conformance.expectations import for_adapter  # noqa: E402
from convlstm_conformance.spec import load_cached  # noqa: E402
from convlstm_conformance.strategies import Chooser, draw_config, make_case, scales  # noqa: E402
from tests.mutants import MUTATIONS, Float32ConvLSTM  # noqa: E402

# Fast references: cheap enough per case to soak by default.
QUICK = ("ref-torch-cpu", "ref-jax-cpu")
# The clauses the numeric comparisons check, for matching documented divergences.
OUTPUT_CLAUSE, GRADIENT_CLAUSE = "SEM-STEP", "SEM-GRADIENTS"
# How conformance/test_numerics.py and test_gradients.py word a failure.
PROBLEM = {"outputs": "diverges from the oracle", "gradients": "gradients diverge from the oracle"}
MAX_SHOWN = 10
# A series whose largest ratio passes this is printed with its case: a model
# that is right has its correct implementations far below 1.
NEAR = 0.5


@dataclass
class Series:
    """Error/budget ratios of one implementation, dtype and quantity."""

    ratios: list = field(default_factory=list)
    known: int = 0          # cases under a documented divergence, kept apart
    known_failed: int = 0
    not_judged: int = 0     # outside the model's domain (tolerance.unjudgeable)
    worst: dict | None = None   # the case of the largest ratio, to look at near-misses

    def add(self, ratio: float, case, dims: dict, detail: str) -> None:
        self.ratios.append(ratio)
        if self.worst is None or not ratio <= self.worst["ratio"]:
            self.worst = {"ratio": float(ratio), "config": dict(case.config), "dims": dict(dims),
                          "initial_state": case.initial_state is not None,
                          "mask": case.mask is not None, "detail": detail}

    def stats(self) -> dict:
        if not self.ratios:
            return {"n": 0, "known": self.known, "known_failed": self.known_failed,
                    "not_judged": self.not_judged}
        r = np.asarray(self.ratios, dtype=np.float64)
        # "higher" picks an observed ratio: no interpolation across inf.
        pct = {q: float(np.percentile(r, q, method="higher")) for q in (50, 99, 99.9)}
        return {"n": int(r.size), "max": float(r.max()), "p99.9": pct[99.9], "p99": pct[99],
                "median": pct[50], "over_1": int((r > 1).sum()), "known": self.known,
                "known_failed": self.known_failed, "not_judged": self.not_judged,
                "worst": self.worst}


@dataclass
class Alarm:
    implementation: str
    quantity: str
    case: object
    dims: dict
    detail: str
    why: str = "error/budget above 1"
    path: Path | None = None

    def describe(self) -> str:
        return (f"{self.implementation} {self.quantity} [{self.case.dtype}]: {self.why}\n"
                f"  config: {self.case.config}\n  dims: {self.dims}, initial_state "
                f"{self.case.initial_state is not None}, mask {self.case.mask is not None}\n  "
                + self.detail.replace("\n", "\n  ")
                + (f"\n  case: {self.path}" if self.path else ""))


# --------------------------------------------------------------------------
# Drawing


def cases(spec, caps, n: int, seed: int):
    """(drawn, case) pairs inside ``caps``, cycling through the claimed dtypes."""
    rng = np.random.default_rng(seed)
    dtypes = [d for d in formats() if d in caps.dtype]
    focus = {"stateful": [False]}           # one call per case
    if caps.return_state:
        focus["return_state"] = [True]      # judge h and c as well
    for k in range(n):
        drawn = draw_config(Chooser(rng=rng), spec, caps=caps, focus=focus)
        case = make_case(spec, drawn, int(rng.integers(2 ** 32)), dtype=dtypes[k % len(dtypes)],
                         scale=scales().weights[int(rng.integers(len(scales().weights)))],
                         initial_state=caps.initial_state and rng.random() < 1 / 3,
                         mask=caps.mask and rng.random() < 1 / 3,
                         cotangent=caps.gradients)
        yield drawn, case


# --------------------------------------------------------------------------
# Soak of a correct implementation


def soak(name: str, adapter: Adapter, spec, n: int, seed: int, seconds: float,
         keep: int = 0) -> tuple[dict, list, list]:
    """Ratios per (dtype, quantity), false alarms, and the first ``keep``
    float32 cases with their oracle results and outputs (for the mutants)."""
    caps = adapter.capabilities()
    expected = for_adapter(spec, name)
    series: dict[tuple[str, str], Series] = {}
    alarms: list[Alarm] = []
    kept: list = []
    start = time.perf_counter()
    for drawn, case in cases(spec, caps, n, seed):
        if time.perf_counter() - start > seconds:
            break
        outcome = adapter.run(case)
        result = oracle.forward(case)
        env = spec.environment(drawn.config, drawn.dims, drawn.input_rank)
        env["dtype"] = case.dtype
        checks = [("outputs", OUTPUT_CLAUSE, tolerance.judge)]
        if case.cotangent is not None:
            checks.append(("gradients", GRADIENT_CLAUSE, tolerance.judge_gradients))
        for quantity, clause, judge in checks:
            verdict = judge(case, outcome, result)
            s = series.setdefault((case.dtype, quantity), Series())
            if verdict.unjudged:
                s.not_judged += 1
                continue
            documented = [e for e in expected if e.matches(clause, env)]
            if documented:
                s.known += 1
                if verdict.passed:
                    continue
                s.known_failed += 1
                # The message the suite would match the entry's pattern against.
                problem = PROBLEM[quantity] + "\n  " + verdict.describe().replace("\n", "\n  ")
                if any(e.matches(clause, env, problem) for e in documented):
                    continue
                alarms.append(Alarm(name, quantity, case, drawn.dims, verdict.describe(),
                                    "a documented divergence's condition holds but its "
                                    "'match' pattern does not fit this failure"))
                continue
            s.add(verdict.worst, case, drawn.dims, verdict.describe())
            if not verdict.passed:
                alarms.append(Alarm(name, quantity, case, drawn.dims, verdict.describe()))
        if len(kept) < keep and case.dtype == "float32" and outcome.status == OK:
            kept.append((case, result, outcome.outputs))
    return series, alarms, kept


# --------------------------------------------------------------------------
# Mutants


def mutant_rates(kept: list) -> dict:
    out = {}
    for mutation in MUTATIONS[1:]:
        mutant = Float32ConvLSTM(mutation)
        live, caught, ratios = 0, 0, []
        for case, result, correct in kept:
            outcome = mutant.run(case)
            same = (outcome.status == OK and len(outcome.outputs) == len(correct)
                    and all(np.array_equal(a, b, equal_nan=True)
                            for a, b in zip(outcome.outputs, correct)))
            if same:
                continue
            verdict = tolerance.judge(case, outcome, result)
            if verdict.unjudged:
                continue
            live += 1
            caught += not verdict.passed
            ratios.append(verdict.worst)
        out[mutation] = {"cases": len(kept), "live": live, "caught": caught,
                         "caught_of_live": caught / live if live else None,
                         "median_ratio": float(np.median(ratios)) if ratios else None,
                         "min_ratio": float(np.min(ratios)) if ratios else None}
    return out


# --------------------------------------------------------------------------
# Report


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def _finite(obj):
    """JSON has no infinity: non-finite ratios become strings."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


def table(rows: list[list], header: list[str]) -> str:
    cells = [header] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=2000, help="cases for the float32 implementation")
    p.add_argument("--adapters", default=None,
                   help="comma-separated adapters to soak besides the float32 one; 'all' for every "
                        f"installed one; default: the fast references ({', '.join(QUICK)}) if installed")
    p.add_argument("--adapter-cases", type=int, default=200, help="cases per adapter")
    p.add_argument("--seconds-per-adapter", type=float, default=120.0,
                   help="stop an adapter's soak after this long")
    p.add_argument("--mutant-cases", type=int, default=500,
                   help="float32 cases each mutant runs on")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--failures", type=Path,
                   help="save the case of every false alarm here (.npz, for conformance repro)")
    args = p.parse_args(argv)

    have = [n for n in registry.installed() if n != "oracle"]
    if args.adapters is None:
        names = [n for n in QUICK if n in have]
    elif args.adapters == "all":
        names = have
    else:
        names = [n for n in args.adapters.split(",") if n and n != FLOAT32]
    info = machine()
    print(f"machine: {info['nproc']} CPUs ({info['cpu_model']}), load {info['load_avg_1m']}, "
          f"{info['date']}", flush=True)

    spec = load_cached()
    results: dict = {"machine": info, "implementations": {}, "mutants": {}}
    alarms: list[Alarm] = []
    kept: list = []
    rows = []
    for i, name in enumerate([FLOAT32] + names):
        adapter = open_adapter(name)
        t = time.perf_counter()
        try:
            n = args.cases if name == FLOAT32 else args.adapter_cases
            limit = math.inf if name == FLOAT32 else args.seconds_per_adapter
            series, found, k = soak(name, adapter, spec, n, args.seed + i, limit,
                                    keep=args.mutant_cases if name == FLOAT32 else 0)
        finally:
            adapter.close()
        kept = kept or k
        alarms += found
        stats = {f"{d}/{q}": s.stats() for (d, q), s in sorted(series.items())}
        results["implementations"][name] = stats
        skipped = sum(s["not_judged"] for s in stats.values())
        print(f"{name}: {sum(s['n'] + s['known'] for s in stats.values())} judgements "
              f"in {time.perf_counter() - t:.0f} s"
              + (f"; {skipped} case(s) outside the model's domain, not judged" if skipped else ""),
              flush=True)
        for key, s in stats.items():
            d, q = key.split("/")
            rows.append([name, d, q, s["n"], s.get("median"), s.get("p99"), s.get("p99.9"),
                         s.get("max"), s.get("over_1", 0),
                         f"{s['known']} ({s['known_failed']} failed)" if s["known"] else "-"])

    t = time.perf_counter()
    results["mutants"] = mutant_rates(kept)
    print(f"mutants: {len(kept)} float32 cases each, {time.perf_counter() - t:.0f} s\n")

    print("Correct implementations: error/budget ratios (must stay <= 1)")
    print(table(rows, ["implementation", "dtype", "quantity", "n", "median", "p99", "p99.9",
                       "max", "> 1", "documented divergence"]))
    print("\nMutants: caught among live cases (output differs from the correct one)")
    print(table([[m, r["cases"], r["live"], r["caught"],
                  None if r["caught_of_live"] is None else f"{r['caught_of_live']:.1%}",
                  r["median_ratio"], r["min_ratio"]] for m, r in results["mutants"].items()],
                ["mutant", "cases", "live", "caught", "caught/live", "median ratio",
                 "min ratio"]))
    near = [(name, key, st["worst"]) for name, stats in results["implementations"].items()
            for key, st in stats.items()
            if st.get("worst") and NEAR < st["worst"]["ratio"] <= 1]
    if near:
        print(f"\nNear misses (largest ratio of a series above {NEAR}, within budget):")
        for name, key, w in near:
            print(f"{name} {key}: ratio {w['ratio']:.3g}\n  config: {w['config']}\n  dims: "
                  f"{w['dims']}, initial_state {w['initial_state']}, mask {w['mask']}\n  "
                  + w["detail"].replace("\n", "\n  "))
    if args.failures:
        args.failures.mkdir(parents=True, exist_ok=True)
        for k, a in enumerate(alarms):
            a.path = a.case.save(args.failures / f"{a.implementation}-{a.quantity}-{k}.npz")
    results["false_alarms"] = [a.describe() for a in alarms]
    if args.json:
        args.json.write_text(json.dumps(_finite(results), indent=2, allow_nan=False) + "\n")
    if alarms:
        print(f"\n{len(alarms)} case(s) over budget from implementations taken as correct "
              f"(a false alarm of the tolerance model, or a bug in the implementation):")
        for a in alarms[:MAX_SHOWN]:
            print(a.describe())
        return 1
    print("\nno false alarms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
