"""Argument constraints: every forbidding clause raises the documented error.

For each clause that forbids something (an argument outside its domain, strides
with dilation, an input too small for the kernel, inputs of the wrong rank),
configurations breaking exactly that clause must raise the exception type the
spec names, at the moment it names, with a message matching its pattern.
Accepting such a configuration silently is a failure.
"""
from hypothesis import given

from convlstm_conformance import harness
from convlstm_conformance.strategies import invalid_configs, make_case, seeds

CLAUSE_KINDS = ("domain", "constraint")


def test_invalid_configuration_raises(adapter_name, clause_id, adapters, spec, record,
                                      results_dir, size):
    adapter = adapters.get(adapter_name)
    clause = spec.clause(clause_id)
    ctx = harness.Context(spec, adapter, clause, record, results_dir, test="arguments",
                          key=adapter_name)
    if not adapter.capabilities().argument_validation:
        import pytest
        pytest.skip(f"{adapter_name} does not claim argument validation")

    harness.skip_unless_call_claimed(adapter, clause)
    # Weights go with the case whenever their shapes are defined (they depend on
    # filters and kernel_size only); otherwise the layer uses its initializers,
    # so an error is judged on what the layer does, not on weights the suite
    # could not have shaped.
    weights = not (set(clause.breaks) & {"filters", "kernel_size"})

    @harness.examples_for(adapter_name)
    @given(drawn=invalid_configs(spec, clause, caps=adapter.capabilities(), size=size),
           seed=seeds())
    def example(drawn, seed):
        case = make_case(spec, drawn, seed, weights=weights, **harness.case_options(clause))
        ctx.steer(drawn, case.dtype)
        outcome = adapter.run(case)
        ctx.conclude(drawn, case, harness.check_raises(clause, outcome), outcome=outcome)

    example()
    ctx.finish()
