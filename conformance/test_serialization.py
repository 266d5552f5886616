"""Serialization: clauses of kind serialization.

The layer is rebuilt from its config, or saved inside a model and loaded
back; the rebuilt layer must return exactly what the original returned on the
same input (bit for bit: same weights, same computation).
"""
import numpy as np
from hypothesis import given

from convlstm_conformance import harness
from convlstm_conformance.strategies import configs, focus_for, make_case, seeds

CLAUSE_KINDS = ("serialization",)


def test_roundtrip_is_identical(adapter_name, clause_id, adapters, spec, record, results_dir,
                                size):
    adapter = adapters.get(adapter_name)
    clause = spec.clause(clause_id)
    caps = adapter.capabilities()
    ctx = harness.Context(spec, adapter, clause, record, results_dir, test="serialization",
                          key=adapter_name)
    harness.skip_unless_call_claimed(adapter, clause)
    focus = focus_for(spec, clause)

    @harness.examples_for(adapter_name)
    @given(drawn=configs(spec, focus=focus, caps=caps, size=size), seed=seeds())
    def example(drawn, seed):
        case = make_case(spec, drawn, seed, **harness.case_options(clause))
        ctx.steer(drawn, case.dtype)
        outcome = adapter.run(case)
        problem = None
        if outcome.status != "ok":
            problem = f"did not run: {outcome.summary()}"
        elif len(outcome.followup_outputs) != 1:
            problem = "the adapter returned no outputs for the rebuilt layer"
        else:
            rebuilt = outcome.followup_outputs[0]
            if len(rebuilt) != len(outcome.outputs):
                problem = (f"the rebuilt layer returned {len(rebuilt)} tensors, the original "
                           f"{len(outcome.outputs)}")
            else:
                for i, (a, b) in enumerate(zip(outcome.outputs, rebuilt)):
                    if a.shape != b.shape or not np.array_equal(a, b, equal_nan=True):
                        diff = (float(np.nanmax(np.abs(a - b))) if a.shape == b.shape
                                else f"shape {b.shape} vs {a.shape}")
                        problem = f"tensor {i} of the rebuilt layer differs from the original: {diff}"
                        break
        ctx.conclude(drawn, case, problem, outcome=outcome)

    example()
    ctx.finish()
