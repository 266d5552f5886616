"""What the suite's draws exercise: measured from the oracle's trace, changes nothing.

Two sources of cases:

* ``ci``: exactly what the ``ci`` profile judges.  The suite's numeric and
  gradient tests run on the mutant zoo's base (tests/mutant_zoo.py), which
  claims every activation, masks, states, stateful calls, dropout and
  gradients, so its draws are the widest any adapter gets; every case they
  judge is kept (benchmarks/case_probe.py).
* ``drawn``: ``--cases`` more drawn the same way with a NumPy generator
  (``strategies.draw_config`` / ``make_case``, each semantic clause's focus,
  sizes and call in turn), for shares with more weight behind them.

Measured on the float64 oracle's trace of every call (follow-up calls too):

* per activation, the share of its arguments in each piece of its
  definition: both sides of every kink, and the saturated tails of tanh
  (|x| > 3) and sigmoid (|x| > 5).  ``activation`` reads z_c and the cell
  state c; ``recurrent_activation`` reads z_i, z_f and z_o;
* the forget gate: closed (f < 0.01), open (f > 0.99), in between, negative;
* the sign of the cell state, and the cases holding both signs;
* sequence lengths.

    python benchmarks/coverage.py --cases 2000 --json coverage.json
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from convlstm_conformance import oracle  # noqa: E402
from convlstm_conformance.model import Case  # noqa: E402
from convlstm_conformance.spec import load_cached  # noqa: E402
from convlstm_conformance.strategies import (Chooser, draw_config, scales,  # noqa: E402
                                             focus_for, make_case)
from tests.mutant_zoo import capabilities, object_path  # noqa: E402

# Where each activation's definition changes: kinks (the slope jumps: relu,
# hard_sigmoid, ...), pieces of a piecewise formula (elu, sparse_plus), the
# sign of the argument for smooth ones, and the saturated tails of tanh and
# sigmoid (the value within 0.5% of its limit).
BREAKS = {
    "tanh": (-3.0, 0.0, 3.0), "sigmoid": (-5.0, 0.0, 5.0), "hard_sigmoid": (-3.0, 3.0),
    "relu": (0.0,), "relu6": (0.0, 6.0), "leaky_relu": (0.0,), "elu": (0.0,), "selu": (0.0,),
    "celu": (0.0,), "softplus": (0.0,), "softsign": (0.0,), "squareplus": (0.0,),
    "soft_shrink": (-0.5, 0.5), "hard_shrink": (-0.5, 0.5), "tanh_shrink": (0.0,),
    "hard_tanh": (-1.0, 1.0), "sparse_plus": (-1.0, 1.0), "sparse_sigmoid": (-1.0, 1.0),
    "silu": (0.0,), "swish": (0.0,), "gelu": (0.0,), "exponential": (0.0,),
    "hard_silu": (-3.0, 3.0), "hard_swish": (-3.0, 3.0), "mish": (0.0,), "log_sigmoid": (0.0,),
    "linear": (0.0,),
}

#: The clauses each coverage target serves.
SERVES = {
    "activation pieces": "SEM-ACTIVATIONS (each definition piece by piece), SEM-STEP and "
                         "SEM-DEFAULTS (tanh, sigmoid), SEM-GRADIENTS (the slope on both sides "
                         "of a kink, and the kink ambiguity the gradient budget allows)",
    "saturated tails": "SEM-STEP and the tolerance model's bounded-activation clamp "
                       "(ACT_RANGE), SEM-GRADIENTS (vanishing slopes), SEM-HALF-PRECISION",
    "forget gate": "SEM-STEP (a forget bias off by 0.01 hides behind a saturated gate), "
                   "SEM-INITIAL-STATE, SEM-STATEFUL-CARRY and SEM-STATEFUL-INITIAL-STATE (a "
                   "closed gate forgets the state they check), the model's df*dc term",
    "cell sign": "SEM-STEP and SEM-ACTIVATIONS (act(c) on both sides of relu/elu kinks), "
                 "SEM-GRADIENTS (the slope of act at c)",
    "sequence length": "SEM-GO-BACKWARDS, SEM-MASK, SEM-MASK-LEADING, SEM-DROPOUT-MASKS and "
                       "SEM-STATEFUL-* need T >= 2; long sequences grow the error bounds and "
                       "the BPTT depth of SEM-GRADIENTS",
}


def pieces(name: str) -> list[str]:
    b = BREAKS[name]
    edges = [-np.inf, *b, np.inf]
    return [f"({_e(lo)}, {_e(hi)})" for lo, hi in zip(edges[:-1], edges[1:])]


def _e(v) -> str:
    return "-inf" if v == -np.inf else "inf" if v == np.inf else f"{v:g}"


class Tally:
    def __init__(self):
        # (role, activation) -> counts per piece, cases seen
        self.pieces: dict = collections.defaultdict(lambda: None)
        self.reached: dict = {}      # (role, activation) -> cases with a value in each piece
        self.cases: collections.Counter = collections.Counter()
        self.forget = collections.Counter()
        self.cell = collections.Counter()
        self.cell_cases = collections.Counter()
        self.timesteps = collections.Counter()
        self.n = 0

    def add(self, case: Case) -> None:
        self.n += 1
        cfg = case.config
        F = int(cfg["filters"])
        act = cfg.get("activation", "tanh") or "linear"
        ract = cfg.get("recurrent_activation", "sigmoid") or "linear"
        self.cases[("activation", act)] += 1
        self.cases[("recurrent_activation", ract)] += 1
        T = case.inputs.shape[1]
        self.timesteps[T] += 1
        signs = set()
        self._seen: dict = {}
        for result in oracle.forward_calls(case):
            for st in result.trace.steps:
                z = st.z
                self.count("activation", act, z[..., 2 * F:3 * F])
                self.count("activation", act, st.c)
                self.count("recurrent_activation", ract,
                           np.concatenate([z[..., :2 * F], z[..., 3 * F:]], -1))
                f = st.gates[..., F:2 * F]
                self.forget["closed (|f| < 0.01)"] += int((np.abs(f) < 0.01).sum())
                self.forget["open (f > 0.99)"] += int((f > 0.99).sum())
                self.forget["negative (f < -0.01)"] += int((f < -0.01).sum())
                self.forget["in between"] += int(((f >= 0.01) & (f <= 0.99)).sum())
                self.cell["c < 0"] += int((st.c < 0).sum())
                self.cell["c > 0"] += int((st.c > 0).sum())
                self.cell["c = 0"] += int((st.c == 0).sum())
                if (st.c < 0).any():
                    signs.add("-")
                if (st.c > 0).any():
                    signs.add("+")
        self.cell_cases["both signs" if len(signs) == 2 else "one sign or none"] += 1
        for key, seen in self._seen.items():
            self.reached[key] = self.reached.get(key, 0) + seen

    def count(self, role: str, name: str, values: np.ndarray) -> None:
        v = values[np.isfinite(values)].ravel()
        edges = [-np.inf, *BREAKS[name], np.inf]
        counts = np.histogram(v, bins=edges)[0]
        key = (role, name)
        self.pieces[key] = counts if self.pieces[key] is None else self.pieces[key] + counts
        self._seen[key] = self._seen.get(key, 0) | (counts > 0)

    def summary(self) -> dict:
        acts = {}
        for (role, name), counts in sorted(self.pieces.items()):
            total = int(counts.sum())
            acts.setdefault(name, {})[role] = {
                "cases": self.cases[(role, name)], "values": total,
                "shares": {p: (float(c) / total if total else 0.0)
                           for p, c in zip(pieces(name), counts)},
                "cases_reaching": {p: int(r) for p, r in
                                   zip(pieces(name), self.reached[(role, name)])}}
        return {"cases": self.n, "activations": acts,
                "forget": _shares(self.forget), "cell": _shares(self.cell),
                "cell_cases": dict(self.cell_cases),
                "timesteps": {int(k): v for k, v in sorted(self.timesteps.items())}}


def _shares(counter) -> dict:
    total = sum(counter.values())
    return {k: v / total for k, v in sorted(counter.items())} if total else {}


def ci_cases(tmp: Path) -> list[tuple[str, Case]]:
    out = tmp / "cases"
    cmd = [sys.executable, "-m", "pytest", "conformance/test_numerics.py",
           "conformance/test_gradients.py", "-q", "-p", "no:cacheprovider",
           "-p", "benchmarks.case_probe", "--profile", "ci", "--adapters", "",
           "--adapter-object", object_path(None), "--results-dir", str(tmp / "records"),
           "--no-report"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800,
                          env=dict(os.environ, CONVLSTM_CASES_OUT=str(out)))
    if proc.returncode != 0:
        raise RuntimeError("the ci suite failed on the zoo's base:\n" + proc.stdout[-3000:])
    return [(p.stem.rsplit("-", 1)[0], Case.load(p)) for p in sorted(out.glob("*.npz"))]


def drawn_cases(n: int, seed: int) -> list[tuple[str, Case]]:
    spec = load_cached()
    caps = capabilities()
    clauses = [c for c in spec.of_kind("semantics")
               if not (c.dtypes and not set(c.dtypes) & caps.dtype)
               and not c.call.get("roundtrip") and not c.call.get("symbolic")]
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        clause = clauses[k % len(clauses)]
        drawn = draw_config(Chooser(rng=rng), spec, focus=focus_for(spec, clause),
                            sizes=clause.sizes, caps=caps)
        out.append((clause.id, make_case(spec, drawn, k, dtype="float64",
                                         scale=scales().weights[k % len(scales().weights)],
                                         **dict(clause.call))))
    return out


def measure(cases) -> dict:
    tally = Tally()
    by_clause: dict = collections.defaultdict(Tally)
    for clause, case in cases:
        tally.add(case)
        by_clause[clause].timesteps[case.inputs.shape[1]] += 1
    out = tally.summary()
    out["timesteps_by_clause"] = {c: {int(k): v for k, v in sorted(t.timesteps.items())}
                                  for c, t in sorted(by_clause.items())}
    return out


def report(name: str, m: dict) -> str:
    lines = [f"### {name}: {m['cases']} cases", "",
             "| activation | role | cases | per piece of the argument: share of the values "
             "(cases reaching it) |",
             "| --- | --- | --- | --- |"]
    for act in BREAKS:
        roles = m["activations"].get(act, {})
        if not roles:
            lines.append(f"| {act} | — | 0 | never drawn |")
        for role, r in roles.items():
            shares = ", ".join(f"{p} {_pct(s)} ({r['cases_reaching'][p]})"
                               for p, s in r["shares"].items())
            lines.append(f"| {act} | {'act' if role == 'activation' else 'recurrent'} | "
                         f"{r['cases']} | {shares} |")
    lines += ["", "forget gate (elements): " + ", ".join(
                  f"{k} {100 * v:.1f}%" for k, v in m["forget"].items()),
              "cell state (elements): " + ", ".join(f"{k} {100 * v:.1f}%"
                                                   for k, v in m["cell"].items())
              + "; cases with both signs: "
              + f"{m['cell_cases'].get('both signs', 0)} of {m['cases']}",
              "timesteps (cases): " + ", ".join(f"T={k}: {v}" for k, v in m["timesteps"].items())]
    return "\n".join(lines)


def _pct(share: float) -> str:
    if share == 0:
        return "0"
    return "<0.1%" if share < 0.001 else f"{100 * share:.1f}%"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=2000, help="cases of the drawn source")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="coverage-") as tmp:
        ci = measure(ci_cases(Path(tmp)))
    drawn = measure(drawn_cases(args.cases, args.seed))
    print(report("ci", ci) + "\n\n" + report(f"drawn (seed {args.seed})", drawn))
    print("\nclauses each target serves:\n" + "\n".join(f"- {k}: {v}" for k, v in SERVES.items()))
    if args.json:
        args.json.write_text(json.dumps({"ci": ci, "drawn": drawn, "serves": SERVES}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
