"""Output structure, shapes and layouts: clauses of kind structure, shape, layout.

For every return_sequences x return_state combination the layer returns the
documented structure (one tensor, or [output, h, c]) with the documented
shapes, for both data formats and both paddings.
"""
from hypothesis import given

from convlstm_conformance import harness
from convlstm_conformance.strategies import Unsatisfiable, configs, focus_for, make_case, seeds

CLAUSE_KINDS = ("structure", "shape", "layout")


def test_structure(adapter_name, clause_id, adapters, spec, record, results_dir, size):
    adapter = adapters.get(adapter_name)
    clause = spec.clause(clause_id)
    ctx = harness.Context(spec, adapter, clause, record, results_dir, test="structure",
                          key=adapter_name)
    try:
        focus = focus_for(spec, clause)
    except Unsatisfiable as exc:
        raise AssertionError(f"[{clause_id}] spec error: {exc}") from None
    harness.skip_unless_claimed(adapter, focus, clause_id)

    @harness.examples_for(adapter_name)
    @given(drawn=configs(spec, focus=focus, caps=adapter.capabilities(), size=size), seed=seeds())
    def example(drawn, seed):
        case = make_case(spec, drawn, seed)
        ctx.steer(drawn, case.dtype)
        outcome = adapter.run(case)
        ctx.conclude(drawn, case, harness.check_structure(spec, clause, drawn, outcome),
                     outcome=outcome)

    example()
    ctx.finish()
