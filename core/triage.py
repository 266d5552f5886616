"""Triage: the necessary conditions of a failure, and the smallest piece of the layer that shows it.

For a numeric failure (a ``numerics`` or ``gradients`` test) with its saved
minimal case, against the oracle:

1. **Reproduce** the case.  A gradients failure whose forward pass already
   diverges is triaged as that forward divergence (its gradients are wrong
   because its outputs are).
2. **Isolate the layer's pieces** on the case's own data: the input
   convolution alone (recurrent kernel zero), the recurrent convolution with
   the input convolution silenced (kernel zero), the gate arithmetic alone
   (both kernels zero: only the bias goes through the activations and the
   state update), the first step alone (no carried state) and no bias.  Each
   piece that still fails narrows the bug down; the smallest failing one is
   the operation to report upstream.
3. **Vary one configuration feature at a time** on regenerated cases (same
   seed, same shape of problem): each argument the case gives is set back to
   its default and, for an enumerated argument, to each other value the
   implementation claims; the dtype to each other claimed float format.  An
   argument with a passing value is necessary: "only when padding in
   ('same',), never when padding in ('valid',)".

The result (a plain dict, stored in findings.json) holds the ``character``
(part of the finding's signature: the problem, the wrong tensors, whether the
first step alone shows it), the ``pieces``, the ``conditions`` and the
``necessary`` arguments, and ``when``: the conditions as a spec expression,
the condition of the finding's expectation entry.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from convlstm_conformance import features, tolerance
from convlstm_conformance.model import Adapter, Case, CaseFileError
from convlstm_conformance.spec import Spec
from convlstm_conformance.strategies import Drawn, check, make_case

#: The tests whose failures triage re-runs (others are checked by assertion).
NUMERIC_TESTS = ("numerics", "gradients")
#: Seeds tried to regenerate a failing case on the failure's configuration.
SEEDS = tuple(range(6))
SCALES = (1.0, 2.0)
#: Further draws a passing variation must pass too.
CONFIRM = 2
#: Enumerated values tried per argument (an activation has a dozen).
MAX_VALUES = 12
FLOATS = ("float32", "float64")
#: The piece that carries no state.
FIRST_STEP = "first step alone, from zero state"
#: Arguments set by the suite's own call (the clause), not the user's choices.
NOT_VARIED = ("filters",)


def base_name(tensor: str) -> str:
    """'call 2 h' -> 'h': the same tensor whatever call of a stateful layer."""
    return re.sub(r"^call \d+ ", "", tensor)


def wrong_tensors(verdict: tolerance.Verdict) -> list[str]:
    return sorted({base_name(n) for n, e in verdict.errors.items() if e.ratio > 1})


class Triage:
    """Triage of failures on one adapter (created once, reused)."""

    def __init__(self, spec: Spec, adapter: Adapter, judge_forward: Callable | None = None):
        self.spec = spec
        self.adapter = adapter
        self.caps = adapter.capabilities()
        self.judge_forward = judge_forward or tolerance.judge
        self.runs = 0

    # -- running one case -----------------------------------------------
    def verdict(self, case: Case) -> tolerance.Verdict:
        self.runs += 1
        outcome = self.adapter.run(case)
        if case.cotangent is not None:
            return tolerance.judge_gradients(case, outcome)
        return self.judge_forward(case, outcome)

    def fails(self, case: Case) -> bool | None:
        """True, False, or None when the case cannot be judged (outside the
        tolerance model's domain) or cannot be built."""
        try:
            v = self.verdict(case)
        except (ValueError, CaseFileError):
            return None
        if v.unjudged:
            return None
        return not v.passed

    # -- the whole triage -------------------------------------------------
    def triage(self, case: Case, test: str, clause_id: str) -> dict[str, Any]:
        out: dict[str, Any] = {"test": test, "clause": clause_id, "reproduced": False,
                               "character": None, "pieces": {}, "conditions": [],
                               "necessary": [], "when": None, "notes": []}
        if test not in NUMERIC_TESTS:
            out["notes"].append(f"{test} failures are checked by assertion, not re-run here")
            return out
        first = self.verdict(case)
        if first.passed or first.unjudged:
            out["notes"].append("the saved case passes on this run" if first.passed
                                else f"the saved case is not judged: {first.unjudged}")
            return out
        out["reproduced"] = True
        if case.cotangent is not None:
            forward = dataclasses.replace(case, cotangent=None)
            fv = self.verdict(forward)
            if not fv.passed and not fv.unjudged:
                out["notes"].append("the forward pass already diverges: triaged as forward")
                case, first = forward, fv
        problem = "raised" if first.problems and "did not return" in first.problems[0] else (
            "shape or special values" if first.problems else "diverges")
        out["pieces"] = self.pieces(case)
        out["character"] = {"problem": problem, "tensors": wrong_tensors(first),
                            "gradients": case.cotangent is not None,
                            "needs_state": out["pieces"].get(FIRST_STEP) == "passes"}
        self.vary(case, clause_id, out)
        return out

    # -- pieces -----------------------------------------------------------
    def pieces(self, case: Case) -> dict[str, str]:
        """Which isolated pieces of the layer still fail on the case's data."""
        zeros = np.zeros_like
        variants: dict[str, Case] = {}
        if case.recurrent_kernel is not None:
            variants["input convolution (recurrent kernel zero)"] = dataclasses.replace(
                case, recurrent_kernel=zeros(case.recurrent_kernel))
        if case.kernel is not None:
            variants["recurrent convolution (input kernel zero)"] = dataclasses.replace(
                case, kernel=zeros(case.kernel))
        if case.kernel is not None and case.recurrent_kernel is not None:
            variants["gate arithmetic (both kernels zero)"] = dataclasses.replace(
                case, kernel=zeros(case.kernel), recurrent_kernel=zeros(case.recurrent_kernel))
        if case.bias is not None:
            variants["no bias (bias zero)"] = dataclasses.replace(case, bias=zeros(case.bias))
        step = first_step(case)
        if step is not None:
            variants[FIRST_STEP] = step
        return {name: _word(self.fails(v)) for name, v in variants.items()}

    # -- one feature at a time --------------------------------------------
    def vary(self, case: Case, clause_id: str, out: dict[str, Any]) -> None:
        drawn = drawn_of(case)
        clause = self.spec.clause(clause_id)
        options = dict(clause.call)
        if case.cotangent is not None:
            options["cotangent"] = True
        if case.initial_state is not None:
            options["initial_state"] = True

        def make(d: Drawn, seed: int, scale: float, dtype: str) -> Case:
            return make_case(self.spec, d, seed, dtype=dtype, scale=scale, **options)

        base = None
        for seed in SEEDS:
            for scale in SCALES:
                try:
                    regenerated = make(drawn, seed, scale, case.dtype)
                except (ValueError, KeyError):
                    continue
                if self.fails(regenerated):
                    base = (seed, scale)
                    break
            if base:
                break
        if base is None:
            out["notes"].append("no regenerated case on this configuration fails: the bug "
                                "needs the saved case's own numbers; features not varied")
            return
        seed, scale = base
        admit = features.restrictions(self.caps)
        conditions, when = [], []
        for name, value, alternatives in self.alternatives(drawn, case.dtype, admit):
            show = functools.partial(_show, self.spec, name)
            failing, passing = [show(value)], []
            for alt in alternatives:
                if name == "dtype":
                    d, dtype = drawn, alt
                else:
                    config = dict(drawn.config)
                    if alt is _DEFAULT:
                        config.pop(name)
                    else:
                        config[name] = alt
                    d, dtype = dataclasses.replace(drawn, config=config), case.dtype
                    if not check(self.spec, d):
                        continue
                verdict = self.fails_on(lambda sd, sc: make(d, sd, sc, dtype), seed, scale)
                shown = show(self.spec.defaults().get(name) if alt is _DEFAULT else alt)
                if verdict is True:
                    failing.append(shown)
                elif verdict is False:
                    passing.append(shown)
            if passing:
                conditions.append({"argument": name, "fails": failing, "passes": passing})
                enumerated = name == "dtype" or bool(self.spec.values(name))
                when.append(condition(name, failing, passing, enumerated))
        out["seed"], out["scale"] = seed, scale
        out["conditions"] = conditions
        out["when"] = " and ".join(sorted(when)) if when else None
        out["necessary"] = sorted(when)

    def fails_on(self, make_one: Callable, seed: int, scale: float) -> bool | None:
        """Whether a varied configuration fails: True at the first failing
        case; False only when the base data and CONFIRM more draws all pass
        (a bug may hide in one draw's numbers, an activation's flat part)."""
        verdicts = []
        for sd, sc in [(seed, scale)] + [(seed + 100 + k, s) for k in range(CONFIRM)
                                         for s in SCALES[-1:]]:
            try:
                v = self.fails(make_one(sd, sc))
            except (ValueError, KeyError):
                v = None
            if v:
                return True
            verdicts.append(v)
        return False if False in verdicts else None

    def alternatives(self, drawn: Drawn, dtype: str, admit):
        """(argument, its value, values to try instead) for each varied feature."""
        defaults = self.spec.defaults()
        for name, value in drawn.config.items():
            if name in NOT_VARIED or name not in self.spec.arguments:
                continue
            alts: list[Any] = []
            if name in defaults and self.spec.normalize(name, value) != self.spec.normalize(
                    name, defaults[name]):
                alts.append(_DEFAULT)
            keep = admit.get(name, lambda v: True)
            for v in self.spec.values(name)[:MAX_VALUES]:
                if v != value and v != defaults.get(name, _DEFAULT) and keep(v):
                    alts.append(v)
            if name == "kernel_size" and self.spec.normalize(name, value) != (1, 1):
                alts.append(1)
            if alts:
                yield name, value, alts
        others = [d for d in FLOATS if d != dtype and d in self.caps.dtype]
        if dtype in FLOATS and others:
            yield "dtype", dtype, others


_DEFAULT = object()


def condition(name: str, failing: list, passing: list, enumerated: bool) -> str:
    """A spec expression for one necessary argument: the failing values of an
    enumerated one (padding, an activation, the dtype), else every value but
    the passing ones (kernel_size != (1, 1) holds for every other kernel)."""
    def values(vs):
        return ", ".join(sorted({repr(v) for v in vs})) + ","
    if enumerated or name == "dtype":
        return f"{name} in ({values(failing)})"
    return f"{name} not in ({values(passing)})"


class Cache:
    """Triage of campaign failures (core/findings.py's ``triage``): one
    adapter per implementation, created on first use and closed at the end."""

    def __init__(self, spec: Spec):
        self.spec = spec
        self.triages: dict[str, Triage | str] = {}

    def __call__(self, failure) -> dict[str, Any] | None:
        if failure.case is None or failure.test not in NUMERIC_TESTS:
            return None
        try:
            case = Case.load(failure.case)
        except CaseFileError as exc:
            return {"reproduced": False, "notes": [f"case file unusable: {exc}"],
                    "character": None, "necessary": [], "conditions": [], "pieces": {}}
        t = self._triage_for(failure.key)
        if isinstance(t, str):
            return {"reproduced": False, "notes": [f"cannot create {failure.key}: {t}"],
                    "character": None, "necessary": [], "conditions": [], "pieces": {}}
        return t.triage(case, failure.test, failure.clause)

    def _triage_for(self, key: str) -> Triage | str:
        """The adapter's Triage, or why the adapter cannot be created here."""
        t = self.triages.get(key)
        if t is None:
            from convlstm_conformance import harness, registry
            if key.startswith("object:") and os.getcwd() not in sys.path:
                # As pytest and ``python -m`` resolve --adapter-object: from here.
                sys.path.insert(0, os.getcwd())
            try:
                adapter = registry.create(key)
                t = Triage(self.spec, adapter, harness.judge_for(adapter))
            except Exception as exc:       # an implementation that will not start here
                t = f"{type(exc).__name__}: {exc}"
            self.triages[key] = t
        return t

    def still_fails(self, key: str, case_path: Path) -> bool | None:
        """Does the saved case fail on the implementation now?  None when it
        cannot be said (the implementation will not start, the case is
        unreadable or outside the tolerance model's domain)."""
        t = self._triage_for(key)
        if isinstance(t, str):
            return None
        try:
            case = Case.load(case_path)
        except CaseFileError:
            return None
        return t.fails(case)

    def close(self) -> None:
        for t in self.triages.values():
            if isinstance(t, Triage):
                t.adapter.close()


def _word(verdict: bool | None) -> str:
    return {True: "fails", False: "passes", None: "not judged"}[verdict]


def _show(spec: Spec, name: str, value: Any) -> Any:
    """A value as the spec's expressions see it (pairs as tuples)."""
    value = spec.normalize(name, value)
    return tuple(value) if isinstance(value, list) else value


def first_step(case: Case) -> Case | None:
    """The case cut to its first time step, starting from zeros: no state
    carried in (no initial_state, no further calls of a stateful layer)."""
    if case.inputs.ndim != 5:
        return None
    sequences = bool(case.config.get("return_sequences"))
    cot = case.cotangent
    if cot is not None and sequences:
        cot = cot[:, :1]
    return dataclasses.replace(
        case, inputs=case.inputs[:, :1], mask=None if case.mask is None else case.mask[:, :1],
        cotangent=cot, initial_state=None, followups=[])


def drawn_of(case: Case) -> Drawn:
    """The configuration and input dimensions of a saved case."""
    from convlstm_conformance.cli import drawn_from_case
    return drawn_from_case(case)


def describe(t: dict[str, Any]) -> str:
    """One paragraph: the triage in words."""
    if not t.get("reproduced"):
        return "not triaged: " + "; ".join(t.get("notes") or ["the case did not reproduce"])
    ch = t["character"]
    parts = [f"{ch['problem']} ({', '.join(ch['tensors']) or 'no tensor over budget'})"
             + (" in the gradients" if ch["gradients"] else "")
             + ("; only through a carried state" if ch["needs_state"] else
                "; the first step from zero state shows it")]
    failing = [p for p, v in t["pieces"].items() if v == "fails"]
    if failing:
        parts.append("still fails with: " + "; ".join(failing))
    for c in t["conditions"]:
        parts.append(f"only when {c['argument']} in {tuple(c['fails'])}, "
                     f"never when {c['argument']} in {tuple(c['passes'])}")
    if t.get("reproduced") and not t["conditions"] and not t.get("notes"):
        parts.append("no single configuration feature is necessary")
    parts += t.get("notes") or []
    return "; ".join(parts)
