"""Numerical conformance against the float64 oracle: clauses of kind semantics.

Each semantic clause names a focus (the argument values that exercise it) and
how to call the layer (initial state, mask, stateful follow-up calls, dropout
masks, dtypes); Hypothesis draws configurations inside that focus and inside
the adapter's claimed capabilities, and output, final h and final c (of every
call) are compared element by element against the oracle under the budgets of
core/tolerance.py.  Each example runs the adapter's data_per_example
cases (fresh weights and inputs) on its configuration.  A mismatch is run a second time to tell
nondeterminism from divergence.  A clause with ``each`` (SEM-ACTIVATIONS) is
searched once per claimed value of that argument, so none goes undrawn.
"""
from hypothesis import given, strategies as st

from convlstm_conformance import harness
from convlstm_conformance.strategies import configs, focus_for, make_case

CLAUSE_KINDS = ("semantics",)
# Formats every semantic clause is judged in unless it names its own.
DTYPES = ("float32", "float64")


def test_matches_oracle(adapter_name, clause_id, adapters, spec, record, results_dir, size):
    adapter = adapters.get(adapter_name)
    clause = spec.clause(clause_id)
    caps = adapter.capabilities()
    ctx = harness.Context(spec, adapter, clause, record, results_dir, test="numerics",
                          key=adapter_name)
    focus = focus_for(spec, clause)
    if clause.defaults_only:
        focus = harness.defaults_focus(spec)
    harness.skip_unless_claimed(adapter, focus, clause_id)
    harness.skip_unless_call_claimed(adapter, clause)
    if caps.return_state and not clause.defaults_only:
        focus.setdefault("return_state", [True])   # judge h and c too
    dtypes = harness.dtypes_for(adapter, clause, DTYPES)
    options = harness.case_options(clause)

    def search(focus, settings):
        ctx.new_search()

        @settings
        @given(drawn=configs(spec, focus=focus, sizes=clause.sizes, caps=caps, size=size),
               data=harness.data_draws(adapter_name), dtype=st.sampled_from(dtypes))
        def example(drawn, data, dtype):
            if clause.defaults_only:
                drawn = harness.strip_to_required(spec, drawn)
            ctx.judge_cases(
                drawn, data,
                lambda seed, scale: make_case(spec, drawn, seed, dtype=dtype, scale=scale,
                                              **options),
                harness.judge_for(adapter), "diverges from the oracle",
                "is nondeterministic: a second run of the same case passed")
        harness.boundary_examples(spec, clause, focus, caps, adapter_name, dtypes, size)(example)()

    for sub_focus, settings in harness.searches(adapter, adapter_name, clause, focus):
        search(sub_focus, settings)
    ctx.finish()
