"""Differential throughput: cases per second the fuzzer can judge.

A case is drawn from the spec at fuzzer size (batch <= 4, timesteps <= 6,
rows and cols <= 16), run, and judged against the float64 oracle
(``conformance.tolerance.judge``).  Two modes:

* ``ref``: the fast reference alone (``ref-torch-cpu``; the float32 NumPy
  implementation of tests/mutants.py stands in while that adapter is not
  installed).  Target: 20 cases/s.
* ``all``: every installed adapter whose capabilities cover the case, the
  oracle evaluated once per case.  Target: 5 cases/s.

Worker start-up and framework imports are excluded: every adapter runs a couple
of cases before the clock starts.  Each mode runs ``--repeats`` times for
``--seconds`` each; the median rate is reported with the mean time per case of
each adapter.  Frameworks that compile every new configuration (XLA) cannot
reach the target; their compile cost is measured (a new configuration, then the
same case again) and the rate without them is measured too.

    python benchmarks/throughput.py                      # both modes
    python benchmarks/throughput.py --mode ref --seconds 10 --json out.json
    python benchmarks/throughput.py --adapters keras3-torch,conv-lstm
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from convlstm_conformance import oracle, registry  # noqa: E402
from convlstm_conformance.model import Adapter  # noqa: E402
from convlstm_conformance.worker import WorkerAdapter  # noqa: E402
from convlstm_conformance import tolerance  # noqa: E402
from convlstm_conformance.spec import load_cached  # noqa: E402
from convlstm_conformance.strategies import Chooser, draw_config, make_case, scales  # noqa: E402

REFERENCE = "ref-torch-cpu"
FLOAT32 = "float32-numpy"
TARGETS = {"ref": 20.0, "all": 5.0}
# Fuzzer-sized inputs: what a campaign draws at size "small", checked, not assumed.
LIMITS = {"batch": 4, "timesteps": 6, "rows": 16, "cols": 16}
DTYPES = ("float32", "float64")
WARM_CASES = 2
# An adapter "compiles every new configuration" when a new one costs more
# than this and three times a repeat of the same case: the rate without those
# adapters shows what the rest of the harness achieves.  (The whole per-case
# budget of the 5 cases/s target, shared by all adapters, is 0.2 s.)
COMPILE_S = 0.1


# --------------------------------------------------------------------------
# Machine and adapters


def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    # The load average says whether the figures were taken on a busy machine.
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {"nproc": usable, "cpu_model": model or platform.processor(),
            "python": platform.python_version(), "load_avg_1m": round(load[0], 2),
            "date": time.strftime("%Y-%m-%d %H:%M %Z")}


def open_adapter(name: str) -> Adapter:
    if name == FLOAT32:
        from tests.mutants import Float32ConvLSTM
        return Float32ConvLSTM()
    return registry.create(name)


def reference_name() -> tuple[str, str]:
    if REFERENCE in registry.installed():
        return REFERENCE, ""
    return FLOAT32, (f"{REFERENCE} is not installed here; the float32 NumPy implementation "
                     f"of tests/mutants.py stands in for it")


# --------------------------------------------------------------------------
# Cases


class CaseSource:
    """Fuzzer-sized cases from a seeded generator, redrawn when too big.

    With several adapters' capabilities, case k is drawn inside those of
    adapter k mod n: a config drawn from the whole spec seldom fits the narrow
    ones (tanh/sigmoid, 'same' only), and each adapter should get its share.
    """

    def __init__(self, seed: int, caps=None, data_per_config: int = 1):
        self.spec = load_cached()
        self.rng = np.random.default_rng(seed)
        self.caps = list(caps) if isinstance(caps, (list, tuple)) else [caps]
        self.n = 0
        # A configuration (shapes, arguments, dtype) serves this many cases,
        # each with fresh weights and inputs: what compiling adapters need to
        # amortize their compilation.  1 = every case a new configuration.
        self.data_per_config = max(1, data_per_config)
        self._current = None
        self._left = 0

    def next(self):
        if self._left <= 0:
            caps = self.caps[self.n % len(self.caps)]
            self.n += 1
            while True:
                # One call per case: stateful layers compute the same numbers.
                drawn = draw_config(Chooser(rng=self.rng), self.spec, caps=caps,
                                    focus={"stateful": [False]})
                if all(drawn.dims[k] <= v for k, v in LIMITS.items()):
                    break
            dtypes = [d for d in DTYPES if caps is None or d in caps.dtype]
            self._current = (drawn, dtypes[int(self.rng.integers(len(dtypes)))])
            self._left = self.data_per_config
        self._left -= 1
        drawn, dtype = self._current
        return make_case(self.spec, drawn, seed=int(self.rng.integers(2 ** 32)), dtype=dtype,
                         scale=scales().weights[int(self.rng.integers(len(scales().weights)))])


@dataclass
class Tally:
    cases: int = 0
    seconds: float = 0.0
    cpu_s: float = 0.0      # this process only: workers' time is not in it
    oracle_s: float = 0.0
    judge_s: float = 0.0
    failed: int = 0
    per_adapter: dict = field(default_factory=dict)   # name -> [runs, seconds, not passed]

    @property
    def rate(self) -> float:
        return self.cases / self.seconds if self.seconds else 0.0


def run_for(adapters: dict[str, Adapter], source: CaseSource, seconds: float) -> Tally:
    """Draw, run on every covering adapter, judge; for ``seconds`` of wall time."""
    tally = Tally()
    caps = {n: a.capabilities() for n, a in adapters.items()}
    start, cpu = time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        case = source.next()
        users = [n for n in adapters if caps[n].covers(case)]
        if not users:
            continue
        t0 = time.perf_counter()
        result = oracle.forward(case)
        tally.oracle_s += time.perf_counter() - t0
        for name in users:
            t1 = time.perf_counter()
            outcome = adapters[name].run(case)
            t2 = time.perf_counter()
            verdict = tolerance.judge(case, outcome, result)
            tally.judge_s += time.perf_counter() - t2
            runs = tally.per_adapter.setdefault(name, [0, 0.0, 0])
            runs[0] += 1
            runs[1] += t2 - t1
            runs[2] += not verdict.passed
            tally.failed += not verdict.passed
        tally.cases += 1
    tally.seconds += time.perf_counter() - start
    tally.cpu_s += time.process_time() - cpu
    return tally


def cpu_seconds(adapter: Adapter) -> float | None:
    """CPU time so far of the process that runs ``adapter``: its worker's
    (user + system, from /proc), or this process's for in-process adapters.
    None where it cannot be read."""
    if isinstance(adapter, WorkerAdapter):
        proc = adapter.process.proc
        if proc is None or proc.poll() is not None:
            return None
        try:
            # Fields after the parenthesised command name; utime and stime are
            # fields 14 and 15 of proc(5), in clock ticks.
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None
    return time.process_time()


def compile_cost(adapter: Adapter, source: CaseSource, n: int = 3) -> dict:
    """Wall and CPU time of a new configuration against the same case run
    again.  CPU time counts every thread: XLA compiles on several cores, so
    running the compiling adapters side by side would not add up their wall
    times' worth of speed."""
    first, again, cpu_first = [], [], []
    for _ in range(n):
        case = source.next()
        if not adapter.capabilities().covers(case):
            continue
        c = cpu_seconds(adapter)
        t = time.perf_counter()
        adapter.run(case)
        first.append(time.perf_counter() - t)
        c2 = cpu_seconds(adapter)
        if c is not None and c2 is not None:
            cpu_first.append(c2 - c)
        t = time.perf_counter()
        adapter.run(case)
        again.append(time.perf_counter() - t)
    return {"new_config_s": statistics.median(first) if first else None,
            "new_config_cpu_s": statistics.median(cpu_first) if cpu_first else None,
            "same_case_again_s": statistics.median(again) if again else None}


def compile_bound(costs: dict, coverage: dict, cores: int) -> float | None:
    """Cases per second that the compiling adapters' CPU time alone allows
    when every case is a new configuration: ``cores`` CPU-seconds a second
    over what one case costs them (each adapter's CPU per new configuration,
    times the share of cases it runs)."""
    per_case = 0.0
    for name, c in costs.items():
        if not compiles(c) or c.get("new_config_cpu_s") is None:
            continue
        per_case += c["new_config_cpu_s"] * coverage.get(name, 0.0)
    return cores / per_case if per_case > 0 else None


# --------------------------------------------------------------------------
# Modes


def measure(names: list[str], adapters: dict[str, Adapter], seconds: float, repeats: int,
            seed: int, data_per_config: int = 1) -> dict:
    subset = {n: adapters[n] for n in names}
    # One stream across repeats, so the round-robin reaches every adapter even
    # when a repeat holds only a few (compile-bound) cases.
    source = CaseSource(seed, [a.capabilities() for a in subset.values()], data_per_config)
    tallies = [run_for(subset, source, seconds) for _ in range(repeats)]
    total = Tally()
    for t in tallies:
        total.cases += t.cases
        total.seconds += t.seconds
        total.cpu_s += t.cpu_s
        total.oracle_s += t.oracle_s
        total.judge_s += t.judge_s
        total.failed += t.failed
        for n, (k, s, f) in t.per_adapter.items():
            acc = total.per_adapter.setdefault(n, [0, 0.0, 0])
            acc[0] += k
            acc[1] += s
            acc[2] += f
    judged = sum(k for k, _, _ in total.per_adapter.values())
    return {
        "adapters": names,
        "data_per_config": data_per_config,
        "rates": [round(t.rate, 2) for t in tallies],
        "cases_per_s": round(statistics.median(t.rate for t in tallies), 2),
        "cases": total.cases,
        # Less sensitive to other work on a shared machine; meaningful only
        # when every adapter runs in this process.
        "cases_per_cpu_s": round(total.cases / total.cpu_s, 2) if total.cpu_s else None,
        "in_process": all(not isinstance(adapters[n], WorkerAdapter) for n in names),
        "oracle_ms_per_case": round(1e3 * total.oracle_s / max(total.cases, 1), 2),
        "judge_ms_per_run": round(1e3 * total.judge_s / max(judged, 1), 2),
        "adapter_ms_per_case": {n: round(1e3 * s / k, 2) for n, (k, s, _) in total.per_adapter.items()},
        # Share of cases inside each adapter's capabilities.
        "coverage": {n: round(k / max(total.cases, 1), 2) for n, (k, _, _) in total.per_adapter.items()},
        # Divergences, documented or not: the benchmark counts, the suite judges.
        "not_passed_by_adapter": {n: f for n, (_, _, f) in total.per_adapter.items() if f},
        "runs_per_case": round(judged / max(total.cases, 1), 2),
        "not_passed": total.failed,
    }


def warm(adapters: dict[str, Adapter], seed: int) -> dict[str, float]:
    """Start workers and import frameworks before the clock starts."""
    took = {}
    for name, adapter in adapters.items():
        source = CaseSource(seed, adapter.capabilities())
        t = time.perf_counter()
        for _ in range(WARM_CASES):
            adapter.run(source.next())
        took[name] = round(time.perf_counter() - t, 2)
    return took


def mode_ref(args) -> dict:
    name, note = reference_name()
    adapters = {name: open_adapter(name)}
    try:
        warm(adapters, args.seed)
        out = measure([name], adapters, args.seconds, args.repeats, args.seed)
    finally:
        for a in adapters.values():
            a.close()
    out.update(mode="ref", target=TARGETS["ref"], note=note)
    return out


def mode_all(args) -> dict:
    names = args.adapters or [n for n in registry.installed() if n != "oracle"]
    adapters = {}
    try:
        for n in names:
            adapters[n] = open_adapter(n)
        startup = warm(adapters, args.seed)
        # What a new configuration costs against the same case again, per adapter:
        # the difference is compilation (XLA), which a fuzzer pays on every case.
        costs = {n: compile_cost(a, CaseSource(args.seed + 7, a.capabilities()))
                 for n, a in adapters.items()}
        out = measure(names, adapters, args.seconds, args.repeats, args.seed)
        out.update(mode="all", target=TARGETS["all"], startup_s=startup, new_config=costs)
        compiling = [n for n, c in costs.items() if compiles(c)]
        out["compiling"] = compiling
        bound = compile_bound(costs, out["coverage"], machine()["nproc"])
        out["compile_bound_cases_per_s"] = round(bound, 2) if bound else None
        if compiling and out["cases_per_s"] < TARGETS["all"]:
            rest = [n for n in names if n not in compiling]
            if rest:
                out["without_compiling"] = measure(rest, adapters, args.seconds, args.repeats,
                                                   args.seed)
        if args.data_per_config > 1:
            # The same adapters, each configuration serving several cases.
            out["amortized"] = measure(names, adapters, args.seconds, args.repeats, args.seed,
                                       args.data_per_config)
    finally:
        for a in adapters.values():
            a.close()
    return out


def compiles(cost: dict) -> bool:
    """A new configuration costs visibly more than the same case again."""
    first, again = cost["new_config_s"], cost["same_case_again_s"]
    return first is not None and first > COMPILE_S and again < first / 3


# --------------------------------------------------------------------------
# Report


def show(res: dict) -> str:
    lines = [f"mode {res['mode']}: {res['cases_per_s']} cases/s (median of {res['rates']}; "
             f"target {res['target']}) over {res['cases']} cases, "
             f"{res['runs_per_case']} adapter runs per case, {res['not_passed']} not passed"]
    if res.get("in_process"):
        lines.append(f"  {res['cases_per_cpu_s']} cases per CPU-second of this process "
                     f"(less sensitive to other load on the machine)")
    if res.get("note"):
        lines.append(f"  note: {res['note']}")
    lines.append(f"  oracle forward {res['oracle_ms_per_case']} ms/case, "
                 f"judge {res['judge_ms_per_run']} ms/run")
    for n, ms in sorted(res["adapter_ms_per_case"].items(), key=lambda kv: -kv[1]):
        failed = res["not_passed_by_adapter"].get(n)
        lines.append(f"  {n:20s} {ms:10.2f} ms/case  (runs on {res['coverage'][n]:.0%} of cases"
                     + (f", {failed} not passed)" if failed else ")"))
    if "new_config" in res:
        lines.append("  a new configuration (wall s, CPU s of its process) against the same "
                     "case again (wall s):")
        for n, c in res["new_config"].items():
            if c["new_config_s"] is None:
                continue
            cpu = c.get("new_config_cpu_s")
            lines.append(f"    {n:18s} {c['new_config_s']:8.3f} "
                         + (f"{cpu:8.3f}" if cpu is not None else f"{'?':>8s}")
                         + f" {c['same_case_again_s']:8.3f}"
                         + ("  compiles every new configuration" if n in res["compiling"] else ""))
        if res.get("compile_bound_cases_per_s"):
            lines.append(f"  their compilation alone, at the coverage above, allows at most "
                         f"{res['compile_bound_cases_per_s']} cases/s on "
                         f"{machine()['nproc']} CPUs")
    if "without_compiling" in res:
        w = res["without_compiling"]
        lines.append(f"  without {', '.join(res['compiling'])}: {w['cases_per_s']} cases/s "
                     f"(median of {w['rates']}) over {w['cases']} cases")
        for n, ms in sorted(w["adapter_ms_per_case"].items(), key=lambda kv: -kv[1]):
            lines.append(f"    {n:18s} {ms:10.2f} ms/case")
    if "amortized" in res:
        a = res["amortized"]
        lines.append(f"  every adapter, {a['data_per_config']} cases (fresh weights and inputs) "
                     f"per configuration: {a['cases_per_s']} cases/s (median of {a['rates']}) "
                     f"over {a['cases']} cases, {a['not_passed']} not passed")
        for n, ms in sorted(a["adapter_ms_per_case"].items(), key=lambda kv: -kv[1]):
            lines.append(f"    {n:18s} {ms:10.2f} ms/case")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=("ref", "all", "both"), default="both")
    p.add_argument("--seconds", type=float, default=15.0, help="wall time per repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--adapters", type=lambda s: [x for x in s.split(",") if x],
                   help="comma-separated adapters for mode 'all' (default: every installed one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-per-config", type=int, default=8,
                   help="mode 'all' also runs with this many cases per configuration "
                        "(fresh weights and inputs each); 1 skips that run")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)
    info = machine()
    print(f"machine: {info['nproc']} CPUs ({info['cpu_model']}), load {info['load_avg_1m']}, "
          f"{info['date']}")
    results = {"machine": info, "limits": LIMITS, "modes": []}
    for mode in (("ref", "all") if args.mode == "both" else (args.mode,)):
        res = mode_ref(args) if mode == "ref" else mode_all(args)
        results["modes"].append(res)
        print(show(res), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
