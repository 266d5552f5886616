"""Context.steer: examples inside an adapter-wide known divergence are redrawn
once it has shown in the test, never before.

A "*" expectation with a ``when`` (e.g. keras3-jax computing float64 in
float32) would otherwise take a share of every clause's examples and can hide
another failure behind it: keras3-jax's mask bug hid that way behind float64.
"""
from __future__ import annotations

import pytest
from hypothesis.errors import UnsatisfiedAssumption

from convlstm_conformance.adapters.oracle import NumpyOracle
from convlstm_conformance import harness
from convlstm_conformance.expectations import Expectation
from convlstm_conformance.expr import parse
from convlstm_conformance.spec import load_cached
from convlstm_conformance.strategies import Drawn, make_case


def _context(entries):
    spec = load_cached()
    ctx = harness.Context(spec, NumpyOracle(), spec.clause("SEM-STEP"), {}, None)
    ctx.expectations = entries
    return ctx


DRAWN = Drawn(config={"filters": 2, "kernel_size": 3},
              dims={"batch": 2, "timesteps": 3, "rows": 5, "cols": 5, "channels": 1})
CASE = make_case(load_cached(), DRAWN, 0, dtype="float64")
FLOAT64 = Expectation("oracle", "*", "float64 is known to diverge", when=parse("dtype == 'float64'"))


# reject() is meant for a Hypothesis test body; here it is called directly.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
def test_inside_a_known_divergence_examples_run_until_it_has_failed_then_are_redrawn():
    ctx = _context([FLOAT64])
    for _ in range(3 * harness.EXCUSED_RUNS):
        ctx.steer(DRAWN, "float64")           # not yet seen failing: they run
    for k in range(harness.EXCUSED_RUNS):
        ctx.conclude(DRAWN, CASE, "diverges from the oracle")
        if k + 1 < harness.EXCUSED_RUNS:
            ctx.steer(DRAWN, "float64")
    with pytest.raises(UnsatisfiedAssumption):
        ctx.steer(DRAWN, "float64")
    assert ctx.record["excused_draws"] == 3 * harness.EXCUSED_RUNS + harness.EXCUSED_RUNS


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
def test_a_region_whose_examples_pass_is_never_redrawn():
    """A fixed divergence must show: its passing examples all run."""
    ctx = _context([FLOAT64])
    for _ in range(10 * harness.EXCUSED_RUNS):
        ctx.expected.setdefault(FLOAT64, [0, 0])[1] += 1
        ctx.steer(DRAWN, "float64")


def test_outside_the_region_nothing_is_redrawn():
    ctx = _context([FLOAT64])
    for _ in range(3 * harness.EXCUSED_RUNS):
        ctx.steer(DRAWN, "float32")
    assert ctx.excused == 0


def test_clause_specific_and_unconditional_entries_do_not_steer():
    """Those are what the clause is expected to show; its examples must see them."""
    entries = [Expectation("oracle", "SEM-STEP", "clause-specific", when=parse("dtype == 'float64'")),
               Expectation("oracle", "*", "everywhere (refused when loaded from a file)")]
    ctx = _context(entries)
    for _ in range(3 * harness.EXCUSED_RUNS):
        ctx.steer(DRAWN, "float64")
    assert ctx.excused == 0


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
def test_failing_boundary_examples_do_not_use_up_the_excused_runs():
    """The explicit boundary examples run first in every search; had their
    failures counted, a focus wholly inside the region would have every
    random draw rejected and the search end Unsatisfiable."""
    ctx = _context([FLOAT64])
    ctx.in_boundary = True
    for _ in range(2 * harness.EXCUSED_RUNS):
        ctx.steer(DRAWN, "float64")
        ctx.conclude(DRAWN, CASE, "diverges from the oracle")
    assert ctx.expected[FLOAT64] == [2 * harness.EXCUSED_RUNS, 0]
    ctx.in_boundary = False
    for _ in range(harness.EXCUSED_RUNS):
        ctx.steer(DRAWN, "float64")           # the random draws still run...
        ctx.conclude(DRAWN, CASE, "diverges from the oracle")
    with pytest.raises(UnsatisfiedAssumption):
        ctx.steer(DRAWN, "float64")           # ...until they have shown it themselves


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
def test_each_search_runs_its_own_excused_examples():
    """SEM-ACTIVATIONS searches one activation at a time: a search whose whole
    focus lies in the region (tf-keras's hard_sigmoid) must not inherit the
    excused runs an earlier search used up, or it draws nothing (Unsatisfiable)."""
    ctx = _context([FLOAT64])
    for _ in range(harness.EXCUSED_RUNS):
        ctx.steer(DRAWN, "float64")
        ctx.conclude(DRAWN, CASE, "diverges from the oracle")
    with pytest.raises(UnsatisfiedAssumption):
        ctx.steer(DRAWN, "float64")
    ctx.new_search()
    for _ in range(harness.EXCUSED_RUNS):
        ctx.steer(DRAWN, "float64")           # the next search's examples run
        ctx.conclude(DRAWN, CASE, "diverges from the oracle")
    with pytest.raises(UnsatisfiedAssumption):
        ctx.steer(DRAWN, "float64")
    assert ctx.expected[FLOAT64] == [2 * harness.EXCUSED_RUNS, 0]
