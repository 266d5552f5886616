"""Helpers shared by the conformance tests: run, judge, explain, record.

Each test builds a :class:`Context` for one (clause, adapter) pair.  Every
Hypothesis example ends in :meth:`Context.conclude` with either nothing wrong
or a problem description; a problem that an expectations entry covers is
counted and the search goes on; any other problem saves the case, writes a
reproduction command and fails with a message naming the clause, the config,
the measured error against its budget and that command.
"""
from __future__ import annotations

import functools
import json
import math
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pytest

from convlstm_conformance import features, oracle_twin, records, registry, tolerance
from convlstm_conformance.expectations import Expectation, for_adapter
from convlstm_conformance.model import Adapter, Case, Outcome, OK, RAISED
from convlstm_conformance.spec import Clause, Spec
from convlstm_conformance.strategies import Drawn


def xfail_if_expected(spec: Spec, adapter_name: str, clause_id: str, problem: str,
                      env: Mapping[str, Any] | None, record: dict) -> None:
    """For tests that check by assertion: xfail when an expectations entry
    explains ``problem``; return otherwise (the caller then fails)."""
    entries = [e for e in for_adapter(spec, adapter_name)
               if e.matches(clause_id, env or {}, problem) and (env is not None or e.when is None)]
    entries = [e for e in entries if e.clause == clause_id] or entries
    if entries:
        record["reason"] = entries[0].describe()
        pytest.xfail(f"[{clause_id}] expected failure on {adapter_name}: {entries[0].describe()}")


def judge_for(adapter: Adapter) -> Callable:
    """The judge of an adapter's outputs: the oracle, or for the oracle itself
    the second formulation (a judge judged against itself proves nothing)."""
    if getattr(adapter, "is_judge", False):
        return functools.partial(tolerance.judge, expected=oracle_twin.forward_calls)
    return tolerance.judge


def judged_against(adapter: Adapter) -> str:
    return "oracle_twin" if getattr(adapter, "is_judge", False) else "oracle"


def repro_command(case_path: Path, adapter: str, clause: str | None) -> str:
    """The command re-running a saved case; without ``clause`` it judges the
    numbers against the oracle."""
    return (f"python -m convlstm_conformance repro {shlex.quote(str(case_path))} "
            f"--adapter {shlex.quote(adapter)}" + (f" --clause {clause}" if clause else ""))


def _fmt_config(config: Mapping[str, Any]) -> str:
    return json.dumps(config, default=str, sort_keys=False)


class ConformanceFailure(AssertionError):
    """A failure already said in full (clause, adapter, configuration, error
    against budget, reproduction): the terminal shows its message alone."""


def save_case(results_dir: Path, stem: str, case: Case) -> Path:
    """Save a failing case under ``results_dir/cases`` for its reproduction."""
    cases_dir = results_dir / "cases"
    cases_dir.mkdir(parents=True, exist_ok=True)
    return case.save(cases_dir / (re.sub(r"[^A-Za-z0-9_.-]", "_", stem) + ".npz"))


def failure_message(spec: Spec, clause: Clause, adapter_name: str, problem: str,
                    config: Mapping[str, Any], dims: Mapping[str, Any], dtype: str,
                    repro: str, extra: str = "", outcome: Outcome | None = None) -> str:
    """The one block a failure reads as, in the terminal and the report: what
    is wrong (with the error against its budget), the clause, the minimal
    configuration, and the command reproducing it."""
    lines = [f"[{clause.id}] {adapter_name}: {problem}",
             f"  clause: {clause.title} ({spec.path.name}:{clause.line})",
             f"  config: {_fmt_config(config)}",
             f"  input dims: {_fmt_config(dims)}, dtype {dtype}{extra}"]
    if outcome is not None and outcome.status != OK:
        lines.append(f"  implementation: {outcome.summary()}")
    lines.append(f"  reproduce: {repro}")
    return "\n".join(lines)


#: Examples per test still run inside an adapter-wide known divergence.
EXCUSED_RUNS = 2


@dataclass
class Context:
    spec: Spec
    adapter: Adapter
    clause: Clause
    record: dict
    results_dir: Path
    test: str = "numerics"
    key: str = ""             # how the command line named the adapter
    examples: int = 0
    worst: float = 0.0
    expected: dict = field(default_factory=dict)   # Expectation -> [failed, passed]
    excused: int = 0          # examples drawn inside a "*" expectation (see steer)
    # Per expectation, the failures in the current search that steering counts
    # (random draws only: the explicit boundary examples run whatever it says).
    steer_failed: dict = field(default_factory=dict)
    in_boundary: bool = False

    def __post_init__(self):
        self.expectations: list[Expectation] = for_adapter(self.spec, self.adapter.name)
        self.record.update({"clause": self.clause.id, "adapter": self.adapter.name,
                            "examples": 0, "worst_ratio": None, "errors": {},
                            "judge": judged_against(self.adapter)})

    # -- per example ---------------------------------------------------
    def steer(self, drawn: Drawn, dtype: str | None = None) -> None:
        """Redraw examples that fall inside an adapter-wide known divergence
        already seen failing in this test.

        A "*" expectation with a ``when`` (keras3-jax computing float64 in
        float32, say) covers a region of every clause; examples drawn there
        mostly repeat that known failure and can hide another one behind it.
        Examples in the region run until the divergence has failed
        EXCUSED_RUNS times in this search (see new_search); only then are
        further ones rejected before anything runs, and Hypothesis draws
        again.  So a region whose divergence was fixed is never skipped: its
        examples run, pass, and the expectation is reported stale.  And a
        search whose whole focus lies in the region (SEM-ACTIVATIONS' search
        of an activation a "*" entry names) still runs its EXCUSED_RUNS
        examples: had earlier searches, or the boundary examples (which
        always run, see boundary_examples), used them up, every draw would
        be rejected and Hypothesis would end it Unsatisfiable.
        """
        env = self.env(drawn, dtype)
        region = [e for e in self.expectations
                  if e.clause == "*" and e.when is not None and e.matches(self.clause.id, env)]
        if not region:
            return
        self.excused += 1
        self.record["excused_draws"] = self.excused
        if self.in_boundary:
            return
        if any(self.steer_failed.get(e, 0) >= EXCUSED_RUNS for e in region):
            from hypothesis import reject
            reject()

    def new_search(self) -> None:
        """A new Hypothesis search of this test begins (harness.searches):
        steering counts its excused runs afresh."""
        self.steer_failed.clear()

    def judge_cases(self, drawn: Drawn, data, make: Callable, judge: Callable,
                    diverges: str, nondeterministic: str) -> None:
        """One example: ``make(seed, scale)`` for each pair of ``data`` (see
        data_draws), run on the adapter and judged against the oracle with
        ``judge``; steered on the first case (see steer).  A mismatch is run a
        second time to tell nondeterminism from divergence, whose wordings
        the caller gives."""
        if getattr(self.adapter, "is_judge", False):
            diverges = diverges.replace("the oracle", "the oracle's twin (core/oracle_twin.py)")
        worst = None
        self.in_boundary = isinstance(data, BoundaryData)
        for k, (seed, scale) in enumerate(data):
            case = make(seed, scale)
            if k == 0:
                self.steer(drawn, case.dtype)
            outcome = self.adapter.run(case)
            verdict = judge(case, outcome)
            if verdict.unjudged:
                self.not_judged(verdict.unjudged)
                continue
            problem = None
            if not verdict.passed:
                again = judge(case, self.adapter.run(case))
                kind = diverges if not again.passed else nondeterministic
                problem = f"{kind}\n  " + verdict.describe().replace("\n", "\n  ")
            self.conclude(drawn, case, problem, errors=verdict.errors, outcome=outcome)
            ratios = [e.ratio for e in (verdict.errors or {}).values() if math.isfinite(e.ratio)]
            worst = max([worst or 0.0, *ratios]) if ratios else worst
        if worst is not None and not self.in_boundary:
            # Lead dev and nightly searches (Phase.target) toward cases that use
            # more of their budget: where a near-miss is, a miss is likely near.
            # (Only inside a Hypothesis search: a corpus replay has none.)
            from hypothesis import target
            from hypothesis.control import currently_in_test_context
            if currently_in_test_context():
                target(worst, label="error/budget")

    def not_judged(self, reason: str) -> None:
        """A case outside the tolerance model's domain (tolerance.unjudgeable):
        counted in the record with its reason, neither passed nor failed."""
        records.note_not_judged(self.record, reason)

    def env(self, drawn: Drawn, dtype: str | None = None) -> dict[str, Any]:
        env = self.spec.environment(drawn.config, drawn.dims, drawn.input_rank, drawn.probes)
        env["dtype"] = dtype
        return env

    def conclude(self, drawn: Drawn, case: Case, problem: str | None,
                 errors: Mapping[str, Any] | None = None, outcome: Outcome | None = None) -> None:
        self.examples += 1
        self.record["examples"] = self.examples
        ratio = max((e.ratio for e in (errors or {}).values()), default=None)
        if ratio is not None and problem is None:
            self.worst = max(self.worst, ratio)
            self.record["worst_ratio"] = self.worst
        env = self.env(drawn, case.dtype)
        matching = [e for e in self.expectations if e.matches(self.clause.id, env, problem)]
        # An entry naming this clause explains a failure better than a "*" one.
        specific = [e for e in matching if e.clause == self.clause.id]
        matching = specific or matching
        for e in matching:
            counts = self.expected.setdefault(e, [0, 0])
            counts[0 if problem else 1] += 1
            if problem and not self.in_boundary:
                self.steer_failed[e] = self.steer_failed.get(e, 0) + 1
        if problem is None or matching:
            return
        self.fail(drawn, case, problem, errors, outcome)

    def fail(self, drawn: Drawn, case: Case, problem: str,
             errors: Mapping[str, Any] | None, outcome: Outcome | None) -> None:
        # One file per test: Hypothesis replays the minimal example last, so
        # the file left behind is the shrunk one.
        path = save_case(self.results_dir, f"{self.test}-{self.clause.id}-{self.adapter.name}",
                         case)
        repro = repro_command(path, self.key or self.adapter.name, self.clause.id)
        extra = ((f", input rank {drawn.input_rank}" if drawn.input_rank != 5 else "")
                 + "".join(f", {k} {v}" for k, v in drawn.probes.items()))
        message = failure_message(self.spec, self.clause, self.adapter.name, problem,
                                  drawn.config, drawn.dims, case.dtype, repro, extra, outcome)
        self.record.update({"config": drawn.config, "dims": drawn.dims, "dtype": case.dtype,
                            "errors": {k: e.to_json() for k, e in (errors or {}).items()},
                            "message": message, "repro": repro})
        if errors:
            self.record["worst_ratio"] = max(e.ratio for e in errors.values())
        raise ConformanceFailure(message)

    # -- after the search ----------------------------------------------
    def finish(self) -> None:
        """Turn the expectation counts into an xfail, or a failure when an
        expected failure has stopped failing."""
        self.record["expected"] = [
            {"reason": e.describe(), "clause": e.clause, "file": e.path, "line": e.line,
             "failed": f, "passed": p}
            for e, (f, p) in self.expected.items()]
        if self.examples == 0:
            self.nothing_judged()
        failed = [e for e, (f, _) in self.expected.items() if f]
        fixed = [e for e, (f, p) in self.expected.items() if p and not f and e.clause == self.clause.id]
        if fixed:
            e = fixed[0]
            message = (f"[{self.clause.id}] {self.adapter.name}: an expected failure no longer fails "
                       f"({self.expected[e][1]} matching examples passed): {e.describe()} -- remove it "
                       f"from {e.where}")
            self.record.update({"message": message, "xpassed": True})
            pytest.fail(message)
        if failed:
            reason = "; ".join(sorted({e.describe() for e in failed}))
            self.record["reason"] = reason
            pytest.xfail(f"[{self.clause.id}] expected failure on {self.adapter.name}: {reason}")


    def nothing_judged(self) -> None:
        """A test that judged no example is not a pass: it fails, saying why
        the suite could not judge (harness rule, docs/harness-rules.md)."""
        nj = self.record.get("not_judged")
        if nj:
            why = (f"all {nj['count']} cases were outside the tolerance model's domain: "
                   + "; ".join(nj["reasons"]))
        elif self.excused:
            why = f"all {self.excused} drawn examples fell inside a known divergence"
        else:
            why = "no example ran"
        message = (f"[{self.clause.id}] {self.adapter.name}: nothing was judged, so nothing "
                   f"is shown to conform: {why}")
        self.record["message"] = message
        pytest.fail(message)


def _registered(adapter_key: str, attribute: str, default):
    """An attribute of the adapter's registry entry; ``default`` for adapters
    from elsewhere (--adapter-object, --adapter-command)."""
    entry = registry.entry_for(adapter_key)
    return default if entry is None else getattr(entry, attribute)


def data_draws(adapter_key: str):
    """Strategy for the (seed, weight scale) pairs of one example: as many as
    the adapter's ``data_per_example`` (AdapterEntry, core/registry.py), each a case of
    its own on the example's configuration."""
    from hypothesis import strategies as st
    from convlstm_conformance.strategies import scales, seeds
    n = _data_per_example(adapter_key)
    return st.lists(st.tuples(seeds(), st.sampled_from(scales().weights)), min_size=n, max_size=n)


def _data_per_example(adapter_key: str) -> int:
    return max(1, _registered(adapter_key, "data_per_example", 1))


class BoundaryData(list):
    """The ``data`` of an explicit boundary example: marks it for steering
    (Context.steer) and keeps it out of ``hypothesis.target``."""


def boundary_examples(spec: Spec, clause: Clause, focus: Mapping[str, Any], caps,
                      adapter_key: str, dtypes: Sequence[str], size: str):
    """Decorator adding a search's two explicit boundary examples, run first in
    every profile, each a configuration inside ``focus``:

    * saturated: weights at the boundary scale (strategies.Scales), so the
      search reaches the tails of the gates, shut and wide-open forget gates
      and the far pieces of the activations;
    * long: the long length at weight scale 1, a state carried over many steps.

    The random draws reach both rarely or never (benchmarks/coverage.py).  An
    example is left out when no configuration of the focus admits it (a clause
    fixing the length has no long one)."""
    import zlib
    from hypothesis import example
    from convlstm_conformance.strategies import fixed_config, scales
    knobs = scales()
    n = _data_per_example(adapter_key)
    seed = zlib.crc32(f"{clause.id}:{sorted(focus.items(), key=str)}".encode())
    fixed = dict(clause.sizes or {})
    # Three steps: a carried state, still short enough at the boundary scale
    # for an unbounded activation's recurrence not to run away.
    plans = [(dict({"timesteps": 3}, **fixed), knobs.boundary_weights)]
    if "timesteps" not in fixed:
        plans.append((dict(fixed, timesteps=knobs.long_timesteps), 1.0))
    decorators = []
    for k, (sizes, scale) in enumerate(plans):
        rng = np.random.default_rng(seed + k)
        drawn = fixed_config(spec, rng, focus=focus, sizes=sizes, caps=caps, size=size)
        if drawn is not None:
            data = BoundaryData(((seed + k + j) % 2 ** 32, scale) for j in range(n))
            decorators.append(example(drawn=drawn, data=data, dtype=dtypes[0]))

    def apply(test):
        for add in decorators:
            test = add(test)
        return test
    return apply


def examples_for(adapter_key: str):
    """Hypothesis settings giving this adapter its share of the profile's examples."""
    from hypothesis import settings
    share = _registered(adapter_key, "example_share", 1.0)
    current = settings()
    return settings(current, max_examples=max(3, round(current.max_examples * share)))


def case_options(clause: Clause) -> dict[str, Any]:
    """make_case keyword arguments for the way a clause calls the layer."""
    return dict(clause.call)


def skip_unless_call_claimed(adapter: Adapter, clause: Clause) -> None:
    caps = adapter.capabilities()
    for option, value in clause.call.items():
        feature = features.feature_for_call(option)
        if feature is not None and value and not getattr(caps, feature.name):
            pytest.skip(f"{adapter.name} does not claim {feature.name}, needed by {clause.id}")


def dtypes_for(adapter: Adapter, clause: Clause, default: tuple[str, ...]) -> list[str]:
    """The dtypes a clause is judged in that the adapter claims; skip if none."""
    caps = adapter.capabilities()
    wanted = clause.dtypes or default
    have = [d for d in wanted
            if (caps.mixed_precision if features.is_policy(d) else d in caps.dtype)]
    if not have:
        pytest.skip(f"{adapter.name} claims none of the dtypes {list(wanted)} of {clause.id}")
    return have


def searches(adapter: Adapter, adapter_key: str, clause: Clause, focus: dict):
    """(focus, Hypothesis settings) of each search a clause's test runs: one
    with the adapter's share of examples, or for a clause with ``each`` one
    per claimed value of that argument, the examples shared among them (at
    least MIN_EACH each: a value is never left undrawn)."""
    from hypothesis import settings
    whole = examples_for(adapter_key)
    if clause.each is None:
        return [(focus, whole)]
    admit = features.restrictions(adapter.capabilities()).get(clause.each, lambda v: True)
    values = [v for v in focus[clause.each] if admit(v)]
    n = max(MIN_EACH, -(-whole.max_examples // max(len(values), 1)))
    return [(dict(focus, **{clause.each: [v]}), settings(whole, max_examples=n))
            for v in values]


#: Examples per value of a clause's ``each`` argument.
MIN_EACH = 2


def defaults_focus(spec: Spec) -> dict[str, list]:
    """Focus that draws every drawable argument at its documented default."""
    return {a.name: [a.default] for a in spec.constructor_arguments()
            if not a.required and a.draw is not None}


def strip_to_required(spec: Spec, drawn: Drawn) -> Drawn:
    """The drawn configuration with every optional argument left out."""
    required = {a.name for a in spec.constructor_arguments() if a.required}
    drawn.config = {k: v for k, v in drawn.config.items() if k in required}
    return drawn


def skip_unless_claimed(adapter: Adapter, focus: Mapping[str, Any], what: str) -> None:
    """Skip when the adapter claims none of the values a clause needs."""
    allowed = features.restrictions(adapter.capabilities())
    for name, values in focus.items():
        pred = allowed.get(name)
        if pred is not None and not any(pred(v) for v in values):
            pytest.skip(f"{adapter.name} does not claim {name} in {list(values)}, needed by {what}")


# --------------------------------------------------------------------------
# Checks: each returns None when conforming, else a sentence saying what is wrong.


def check_structure(spec: Spec, clause: Clause, drawn: Drawn, outcome: Outcome) -> str | None:
    """Output structure and shapes as the clause's ``returns`` say."""
    if outcome.status != OK:
        return f"a valid configuration did not run: {outcome.summary()}"
    env = spec.environment(drawn.config, drawn.dims)
    if clause.returns:
        names = list(clause.returns)
        shapes = {n: tuple(e(env)) for n, e in clause.returns.items()}
    else:
        names = ["output"]
        key = "sequence_shape" if env["return_sequences"] else "state_shape"
        shapes = {"output": tuple(env[key])}
        if env["return_state"]:
            names += ["h", "c"]
            shapes.update(h=tuple(env["state_shape"]), c=tuple(env["state_shape"]))
    want_structure = "list" if len(names) > 1 else "tensor"
    if outcome.structure != want_structure or len(outcome.outputs) != len(names):
        return (f"returned a {outcome.structure} of {len(outcome.outputs)} tensor(s), expected a "
                f"{want_structure} of {len(names)} ({', '.join(names)})")
    got = dict(zip(names, outcome.outputs))
    for n in names:
        if tuple(got[n].shape) != shapes[n]:
            return f"{n} has shape {tuple(got[n].shape)}, expected {shapes[n]}"
    for group in clause.identical:
        first = got[group[0]]
        for other in group[1:]:
            if not np.array_equal(first, got[other], equal_nan=True):
                diff = float(np.nanmax(np.abs(first - got[other])))
                return f"{group[0]} and {other} should be identical; they differ by up to {diff:.3g}"
    if clause.last_step_equals:
        last = got["output"][:, -1]
        if not np.array_equal(last, got[clause.last_step_equals], equal_nan=True):
            return f"the last step of the output sequence differs from {clause.last_step_equals}"
    return None


def check_raises(clause: Clause, outcome: Outcome) -> str | None:
    """The documented exception, at the documented moment, with a telling message."""
    err = clause.error
    assert err is not None
    if outcome.status == OK:
        shapes = ", ".join(str(tuple(a.shape)) for a in outcome.outputs)
        return f"accepted an invalid configuration silently (returned {shapes}); expected {err.describe()}"
    if outcome.status != RAISED or outcome.error is None:
        return f"expected {err.describe()}, but the run ended as {outcome.summary()}"
    e = outcome.error
    problems = []
    if not e.is_a(err.type):
        problems.append(f"raised {e.type} (bases: {', '.join(e.mro[1:4])}), expected {err.type}")
    if err.phase != "any" and e.phase != err.phase:
        problems.append(f"raised at {e.phase}, expected at {err.phase}")
    if not err.match.search(e.message):
        problems.append(f"message does not match /{err.match.pattern}/")
    if problems:
        return "; ".join(problems) + f". Message: {e.message[:400]!r}"
    return None


def is_finite_run(outcome: Outcome) -> bool:
    return outcome.status == OK and all(np.isfinite(a).all() for a in outcome.outputs)


def nan_safe_max(values) -> float:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return max(vals) if vals else 0.0
