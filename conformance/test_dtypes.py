"""Result dtypes: clauses of kind dtype.

Outputs and states must come back in the layer's compute dtype (the dtype it
was built with, or the compute dtype of a mixed-precision policy), for every
dtype and policy the adapter claims.  The dtype names an adapter reports are
not taken on trust: every value returned must be representable in that dtype
(a float16 layer that computes in float32 returns values float16 cannot hold).
"""
from hypothesis import given, strategies as st

from convlstm_conformance import harness
from convlstm_conformance.strategies import configs, focus_for, make_case, round_to, seeds

CLAUSE_KINDS = ("dtype",)


def test_result_dtype(adapter_name, clause_id, adapters, spec, record, results_dir, size):
    adapter = adapters.get(adapter_name)
    clause = spec.clause(clause_id)
    caps = adapter.capabilities()
    ctx = harness.Context(spec, adapter, clause, record, results_dir, test="dtypes",
                          key=adapter_name)
    focus = focus_for(spec, clause)
    harness.skip_unless_claimed(adapter, focus, clause_id)
    dtypes = harness.dtypes_for(adapter, clause, tuple(clause.result_dtypes))

    @harness.examples_for(adapter_name)
    @given(drawn=configs(spec, focus=focus, caps=caps, size=size), seed=seeds(),
           dtype=st.sampled_from(dtypes))
    def example(drawn, seed, dtype):
        case = make_case(spec, drawn, seed, dtype=dtype)
        ctx.steer(drawn, case.dtype)
        outcome = adapter.run(case)
        want = clause.result_dtypes[dtype]
        problem = None
        if outcome.status != "ok":
            problem = f"a valid {dtype} configuration did not run: {outcome.summary()}"
        elif len(outcome.dtypes) != len(outcome.outputs) or any(d != want for d in outcome.dtypes):
            problem = f"a {dtype} layer returned {outcome.dtypes}, expected {want} for every tensor"
        else:
            problem = not_representable(outcome.outputs, want)
        ctx.conclude(drawn, case, problem, outcome=outcome)

    example()
    ctx.finish()


def not_representable(outputs, dtype: str) -> str | None:
    """Which returned tensor holds values ``dtype`` cannot represent, if any."""
    import numpy as np
    for i, a in enumerate(outputs):
        a = np.asarray(a, np.float64)
        finite = np.isfinite(a)
        if not np.array_equal(round_to(a[finite], dtype), a[finite]):
            k = int(np.argmax(round_to(a[finite], dtype) != a[finite]))
            return (f"tensor {i} holds {a[finite][k]!r}, which {dtype} cannot represent: the "
                    f"layer reports {dtype} but computed in a wider format")
    return None
