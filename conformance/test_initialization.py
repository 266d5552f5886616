"""Initialization: clauses of kind initialization (unit_forget_bias).

The layer runs with its own initializers (the case carries no weights) and
reports the canonical weights it used.  Their shapes must follow
SEM-WEIGHT-LAYOUT, the bias blocks must hold the values the clause lists for
the configuration, and the outputs must match the oracle run on those weights.
"""
import numpy as np
import pytest
from hypothesis import given

from convlstm_conformance import harness
from convlstm_conformance.strategies import configs, focus_for, make_case, round_to, seeds

CLAUSE_KINDS = ("initialization",)


def check_initial_weights(spec, clause, drawn, case, outcome):
    if outcome.status != "ok":
        return f"a valid configuration did not run: {outcome.summary()}"
    if not outcome.weights:
        return "the adapter reported no initial weights"
    env = spec.environment(drawn.config, drawn.dims)
    F, (kh, kw), C = env["filters"], env["kernel_size"], env["channels"]
    want = {"kernel": (kh, kw, C, 4 * F), "recurrent_kernel": (kh, kw, F, 4 * F), "bias": (4 * F,)}
    for name, shape in want.items():
        got = outcome.weights.get(name)
        if got is None or tuple(got.shape) != shape:
            return (f"initial {name} has shape {None if got is None else tuple(got.shape)}, "
                    f"expected {shape} (SEM-WEIGHT-LAYOUT)")
    bias = outcome.weights["bias"].reshape(4, F)
    for when, gates in clause.initial_bias:
        if when(env):
            expected = np.repeat(np.asarray(gates)[:, None], F, axis=1)
            if not np.array_equal(bias, expected):
                return (f"initial bias per gate (i, f, c, o) is {bias.tolist()}, expected "
                        f"{expected.tolist()} when {when.source}")
    return None


def test_initialization(adapter_name, clause_id, adapters, spec, record, results_dir, size):
    adapter = adapters.get(adapter_name)
    clause = spec.clause(clause_id)
    ctx = harness.Context(spec, adapter, clause, record, results_dir, test="initialization",
                          key=adapter_name)
    focus = focus_for(spec, clause)
    harness.skip_unless_claimed(adapter, focus, clause_id)
    caps = adapter.capabilities()
    if caps.return_state:
        focus.setdefault("return_state", [True])
    probe = adapter.run(make_case(spec, next_config(spec, focus, caps), 0, weights=False))
    if probe.status == "refused" or (probe.status == "ok" and not probe.weights):
        pytest.skip(f"{adapter_name} does not run with its own initializers: {probe.summary()}")
    assert probe.status in ("ok", "raised"), f"[{clause_id}] {adapter_name}: {probe.summary()}"

    @harness.examples_for(adapter_name)
    @given(drawn=configs(spec, focus=focus, caps=caps, size=size), seed=seeds())
    def example(drawn, seed):
        case = make_case(spec, drawn, seed, weights=False)
        ctx.steer(drawn, case.dtype)
        outcome = adapter.run(case)
        problem = check_initial_weights(spec, clause, drawn, case, outcome)
        errors = None
        if problem is None:
            # The outputs must be those of the oracle on the weights the layer used.
            for name in ("kernel", "recurrent_kernel", "bias"):
                setattr(case, name, round_to(outcome.weights[name], case.dtype))
            verdict = harness.judge_for(adapter)(case, outcome)
            errors = verdict.errors
            if verdict.unjudged:
                ctx.not_judged(verdict.unjudged)
                return
            if not verdict.passed:
                problem = "outputs differ from the oracle on the layer's own initial weights\n  " + \
                    verdict.describe().replace("\n", "\n  ")
        ctx.conclude(drawn, case, problem, errors=errors, outcome=outcome)

    example()
    ctx.finish()


def next_config(spec, focus, caps):
    import numpy as np
    from convlstm_conformance.strategies import Chooser, draw_config
    return draw_config(Chooser(rng=np.random.default_rng(0)), spec, focus=focus, caps=caps)
