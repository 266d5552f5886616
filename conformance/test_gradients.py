"""Gradient conformance: clauses of kind gradients, for adapters claiming them.

The loss is sum(output * cotangent) with a random cotangent; gradients with
respect to inputs, kernel, recurrent_kernel, bias and (where the adapter takes
one) the initial state are compared element by element against the oracle's
hand-written backpropagation through time, under the gradient budgets of
core/tolerance.py.  Each example runs the adapter's data_per_example
cases (fresh weights, inputs and cotangent) on its configuration.
"""
import pytest
from hypothesis import given, strategies as st

from convlstm_conformance import harness, tolerance
from convlstm_conformance.strategies import configs, focus_for, make_case

CLAUSE_KINDS = ("gradients",)
DTYPES = ("float32", "float64")


def test_gradients_match_oracle(adapter_name, clause_id, adapters, spec, record, results_dir, size):
    adapter = adapters.get(adapter_name)
    caps = adapter.capabilities()
    if not caps.gradients:
        pytest.skip(f"{adapter_name} does not claim gradients")
    clause = spec.clause(clause_id)
    ctx = harness.Context(spec, adapter, clause, record, results_dir, test="gradients",
                          key=adapter_name)
    focus = focus_for(spec, clause)
    dtypes = [d for d in DTYPES if d in caps.dtype]

    @harness.examples_for(adapter_name)
    @given(drawn=configs(spec, focus=focus, caps=caps, size=size),
           data=harness.data_draws(adapter_name), dtype=st.sampled_from(dtypes))
    def example(drawn, data, dtype):
        ctx.judge_cases(
            drawn, data,
            lambda seed, scale: make_case(spec, drawn, seed, dtype=dtype, scale=scale,
                                          cotangent=True, initial_state=caps.initial_state),
            tolerance.judge_gradients, "gradients diverge from the oracle",
            "gradients are nondeterministic: a second run passed")

    harness.boundary_examples(spec, clause, focus, caps, adapter_name, dtypes, size)(example)()
    ctx.finish()
