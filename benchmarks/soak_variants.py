"""Soak of the correct variants (tests/correct_variants.py) and of the
mutant zoo's base (tests/mutant_zoo.py): many cases, none may be flagged.

Cases are drawn the way the suite draws them for its semantic clauses, in
turn: each clause's focus, sizes and call (masks, initial state, stateful
follow-ups, injected dropout masks), float32 and float64 alternately, every
weight scale.  Each case runs on every implementation and is judged by
``tolerance.judge``; the zoo's base is also judged on gradients every
``--gradient-every`` cases.  Reported per implementation: cases judged, not
judged (outside the model's domain), flagged (ratio above 1 or a problem),
and the error/budget ratio's percentiles and maximum, with the case of the
maximum.  Exit status 1 when anything was flagged.

    python benchmarks/soak_variants.py --cases 10000 --json soak.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from convlstm_conformance import tolerance  # noqa: E402
from convlstm_conformance.spec import load_cached  # noqa: E402
from convlstm_conformance.strategies import (Chooser, draw_config, scales,  # noqa: E402
                                             focus_for, make_case)
from tests.correct_variants import VARIANTS, capabilities  # noqa: E402
from tests.mutant_zoo import TorchConvLSTM  # noqa: E402

PERCENTILES = (50, 90, 99, 99.9)


def semantic_clauses(spec) -> list:
    caps = capabilities()
    return [c for c in spec.of_kind("semantics")
            if not (c.dtypes and not set(c.dtypes) & caps.dtype)
            and not c.call.get("roundtrip") and not c.call.get("symbolic")]


def cases(spec, n: int, seed: int):
    """(clause id, case) pairs, the clauses in turn."""
    rng = np.random.default_rng(seed)
    clauses = semantic_clauses(spec)
    caps = capabilities()
    for k in range(n):
        clause = clauses[k % len(clauses)]
        drawn = draw_config(Chooser(rng=rng), spec, focus=focus_for(spec, clause),
                            sizes=clause.sizes, caps=caps)
        dtype = ("float32", "float64")[(k // len(clauses)) % 2]
        yield clause.id, make_case(spec, drawn, int(rng.integers(2 ** 32)), dtype=dtype,
                                   scale=scales().weights[int(rng.integers(len(scales().weights)))],
                                   **dict(clause.call))


class Series:
    def __init__(self):
        self.ratios: list[float] = []
        self.not_judged = 0
        self.flagged: list[dict] = []
        self.worst: dict = {}

    def add(self, clause: str, case, verdict) -> None:
        if verdict.unjudged:
            self.not_judged += 1
            return
        ratio = verdict.worst
        self.ratios.append(ratio)
        where = {"clause": clause, "dtype": case.dtype, "config": case.config,
                 "inputs": list(case.inputs.shape), "ratio": ratio}
        if not verdict.passed:
            self.flagged.append({**where, "verdict": verdict.describe()})
        if ratio >= self.worst.get("ratio", -1.0):
            self.worst = where

    def summary(self) -> dict:
        r = np.asarray(self.ratios)
        out = {"judged": len(r), "not_judged": self.not_judged, "flagged": len(self.flagged),
               "max": float(r.max()) if len(r) else None, "worst_case": self.worst,
               "flagged_cases": self.flagged[:20]}
        for p in PERCENTILES:
            out[f"p{p}"] = float(np.percentile(r, p)) if len(r) else None
        return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gradient-every", type=int, default=5,
                    help="judge the zoo base's gradients on every n-th case (0: never)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    spec = load_cached()
    impls = {cls.name: cls() for cls in VARIANTS.values()}
    base = TorchConvLSTM()
    impls[base.name] = base
    series = {name: {"float32": Series(), "float64": Series()} for name in impls}
    gradients = {"float32": Series(), "float64": Series()}
    start = time.perf_counter()
    for k, (clause, case) in enumerate(cases(spec, args.cases, args.seed)):
        for name, impl in impls.items():
            series[name][case.dtype].add(clause, case, tolerance.judge(case, impl.run(case)))
        if args.gradient_every and k % args.gradient_every == 0 and not case.followups \
                and case.mask is None and case.masking_value is None and not case.training:
            g = make_case(spec, _drawn_of(case), k, dtype=case.dtype, cotangent=True,
                          initial_state=True)
            gradients[case.dtype].add(clause, g, tolerance.judge_gradients(g, base.run(g)))
        if (k + 1) % 1000 == 0:
            print(f"{k + 1} cases, {time.perf_counter() - start:.0f} s", file=sys.stderr)
    figures = {"cases": args.cases, "seed": args.seed,
               "seconds": round(time.perf_counter() - start, 1),
               "outputs": {n: {d: s.summary() for d, s in by.items()} for n, by in series.items()},
               "gradients": {base.name: {d: s.summary() for d, s in gradients.items()}}}
    print(table(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1, default=str))
    flagged = sum(s["flagged"] for by in (*figures["outputs"].values(),
                                          *figures["gradients"].values()) for s in by.values())
    return 1 if flagged else 0


def _drawn_of(case):
    """The drawn configuration and dimensions behind a case (for a gradient case of it)."""
    from convlstm_conformance.strategies import Drawn
    cf = case.config.get("data_format") == "channels_first"
    B, T = case.inputs.shape[:2]
    rows, cols, ch = ((case.inputs.shape[3], case.inputs.shape[4], case.inputs.shape[2]) if cf
                      else case.inputs.shape[2:])
    return Drawn(dict(case.config), dict(batch=B, timesteps=T, rows=rows, cols=cols,
                                         channels=ch))


def _fmt(v) -> str:
    return "—" if v is None else f"{v:.3g}"


def table(figures: dict) -> str:
    lines = [f"{figures['cases']} cases (seed {figures['seed']}), {figures['seconds']} s", "",
             "| implementation | quantity | dtype | judged | not judged | flagged | p50 | p90 "
             "| p99 | p99.9 | max |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- "
             "| --- | --- |"]
    for what in ("outputs", "gradients"):
        for name, by in figures[what].items():
            for dtype, s in by.items():
                lines.append(f"| {name} | {what} | {dtype} | {s['judged']} | {s['not_judged']} "
                             f"| {s['flagged']} | " + " | ".join(
                                 _fmt(s[f"p{p}"]) for p in PERCENTILES) + f" | {_fmt(s['max'])} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
