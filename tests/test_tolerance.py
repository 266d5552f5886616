"""The tolerance model: no false alarm on a correct implementation written
differently, and every mutant caught."""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from convlstm_conformance.model import Outcome
from convlstm_conformance import tolerance
from convlstm_conformance.spec import load_cached
from convlstm_conformance.strategies import Chooser, configs, draw_config, make_case, scales, seeds
from tests.mutants import MUTATIONS, Float32ConvLSTM

SPEC = load_cached()
CORRECT = Float32ConvLSTM()
CAPS = CORRECT.capabilities()


@settings(max_examples=120, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(drawn=configs(SPEC, caps=CAPS, focus={"return_state": [True]}), seed=seeds())
def test_correct_float32_implementation_stays_inside_budget(drawn, seed):
    for scale in scales().weights:
        case = make_case(SPEC, drawn, seed, scale=scale)
        verdict = tolerance.judge(case, CORRECT.run(case))
        # Headroom: a correct float32 implementation uses a small share of the budget.
        assert verdict.passed and verdict.worst < 0.5, (
            f"false alarm on a correct float32 implementation, config {drawn.config}, "
            f"dims {drawn.dims}, scale {scale}:\n{verdict.describe()}")


# Configurations on which each mutation must show.
TARGETS = {
    "forget_bias_plus_0.01": {},
    "swap_input_forget": {},
    "same_pad_top_left": {"padding": ["same"], "kernel_size": [2, [2, 2]], "strides": [1]},
    "recurrent_valid": {"kernel_size": [3]},
    "keras2_hard_sigmoid": {"recurrent_activation": ["hard_sigmoid"]},
    "no_reverse_backwards": {"go_backwards": [True], "return_sequences": [True]},
    "output_is_c": {"return_sequences": [False]},
}


@pytest.mark.parametrize("mutation", [m for m in MUTATIONS if m])
def test_every_mutant_is_caught(mutation):
    mutant = Float32ConvLSTM(mutation)
    focus = {"return_state": [True], **TARGETS[mutation]}
    rng = np.random.default_rng(7)
    caught = 0
    for k in range(10):
        drawn = draw_config(Chooser(rng=rng), SPEC, focus=focus, caps=CAPS,
                            sizes={"timesteps": 3, "rows": 6, "cols": 6})
        case = make_case(SPEC, drawn, k)
        caught += not tolerance.judge(case, mutant.run(case)).passed
    # Some draws cannot show a mutation (one time step, saturated gates); most must.
    assert caught >= 7, f"mutant {mutation} caught in only {caught} of 10 cases"


def test_forget_bias_off_by_a_hundredth_is_far_outside_budget():
    rng = np.random.default_rng(3)
    drawn = draw_config(Chooser(rng=rng), SPEC, focus={"return_state": [True]}, caps=CAPS,
                        sizes={"timesteps": 4})
    case = make_case(SPEC, drawn, 1)
    verdict = tolerance.judge(case, Float32ConvLSTM("forget_bias_plus_0.01").run(case))
    assert verdict.errors["c"].ratio > 10, verdict.describe()


def test_gamma_is_the_classical_bound_then_probabilistic():
    u = tolerance.UNIT_ROUNDOFF["float32"]
    assert tolerance.gamma(10, u) == pytest.approx(10 * u / (1 - 10 * u))
    big = tolerance.UNIT_ROUNDOFF["bfloat16"]
    assert tolerance.gamma(1000, big) == pytest.approx(tolerance.LAMBDA * math.sqrt(1000) * big)


def _case():
    rng = np.random.default_rng(0)
    drawn = draw_config(Chooser(rng=rng), SPEC, focus={"return_state": [True]}, caps=CAPS)
    return make_case(SPEC, drawn, 0)


def test_nan_and_inf_are_compared_as_such():
    want = np.array([1.0, np.nan, np.inf])
    budget = np.full(3, 1e-6)
    assert tolerance.compare_tensor("x", np.array([1.0, np.nan, np.inf]), want, budget).ratio == 0
    assert "NaN" in tolerance.compare_tensor("x", np.array([1.0, 2.0, np.inf]), want, budget)
    assert "infinity" in tolerance.compare_tensor("x", np.array([1.0, np.nan, -np.inf]), want, budget)
    assert "NaN" in tolerance.compare_tensor("x", np.array([np.nan, np.nan, np.inf]), want, budget)


def test_wrong_shape_and_structure_are_problems_not_numbers():
    case = _case()
    good = CORRECT.run(case)
    short = Outcome(status="ok", outputs=good.outputs[:1], structure="tensor")
    assert not tolerance.judge(case, short).passed
    bad = Outcome(status="ok", outputs=[good.outputs[0][..., :1]] + good.outputs[1:], structure="list")
    verdict = tolerance.judge(case, bad)
    assert not verdict.passed and "shape" in verdict.describe()


def test_float64_budget_is_tight():
    """A float64 result off by 1e-9 relative is a failure: the budget scales with u."""
    case = _case()
    case.dtype = "float64"
    res = tolerance.oracle.forward(case)
    outputs = [res.output * (1 + 1e-9), res.h, res.c]
    verdict = tolerance.judge(case, Outcome(status="ok", outputs=outputs, structure="list"))
    assert not verdict.passed, verdict.describe()


def _scalar(bias, activation, T=1, u=0.0, x=1.0, w=0.0, dtype="float32"):
    """1 pixel, 1 channel, 1 filter, 1x1 kernels: input weight w on the c gate,
    recurrent weight u on every gate."""
    from convlstm_conformance.model import Case
    return Case(config={"filters": 1, "kernel_size": 1, "activation": activation,
                        "return_state": True},
                inputs=np.full((1, T, 1, 1, 1), x), kernel=np.array([0.0, 0.0, w, 0.0]).reshape(1, 1, 1, 4),
                recurrent_kernel=np.full((1, 1, 1, 4), u), bias=np.asarray(bias, float),
                dtype=dtype)


def test_values_beyond_the_format_range_are_not_judged():
    """x = 1e20 times a weight of 1e20, both float32 numbers: the product 1e40
    is finite in float64 and beyond float32, so a float32 implementation
    returns inf, which the model cannot judge against a finite oracle.  The
    verdict says so instead of failing or passing silently."""
    case = _scalar([10.0, 0.0, 0.0, 10.0], "linear", x=1e20, w=1e20)
    res = tolerance.oracle.forward(case)
    assert np.isfinite(res.h).all() and res.h.max() > 3.5e38
    inf = Outcome(status="ok", outputs=[np.full_like(res.h, np.inf)] * 3, structure="list")
    verdict = tolerance.judge(case, inf)
    assert verdict.passed and "beyond the largest float32" in verdict.unjudged, verdict.describe()
    assert verdict.describe().startswith("not judged")
    case.cotangent = np.ones_like(res.output)
    grads = Outcome(status="ok", outputs=inf.outputs, structure="list", grads={})
    assert "beyond the largest float32" in tolerance.judge_gradients(case, grads).unjudged
    case.dtype = "float64"      # well inside float64's range: judged, and inf is wrong
    assert not tolerance.judge(case, inf).passed


def test_unbounded_budgets_are_not_judged():
    """Bounds past float64's range would pass any result: reported instead."""
    case = _scalar([0.1, 0.1, 0.5, 0.1], "relu", T=3, u=3.0)
    res = tolerance.oracle.forward(case)
    full = tolerance.budgets(case, res)
    bud = {k: full[k] for k in ("output", "h", "c")}
    assert tolerance.unjudgeable(case, res, bud) == "", "a three-step relu case is judgeable"
    bud["h"] = np.full_like(bud["h"], np.inf)
    assert "unbounded" in tolerance.unjudgeable(case, res, bud)


def test_saturated_gate_within_its_error_bound_is_covered():
    """Regression: an expanding relu recurrence (21 steps, 1x2 kernel dilated
    by 2) where the oracle saturates the input and forget gates of an element
    (f, i ~ 0, so the first-order terms |f| dc and |c| df vanish) while the
    error bound of their pre-activations reaches the unsaturated region.  The
    float32 reference computed c ~ 1e4 there against the oracle's 0, and the
    first-order model gave a budget of 1e-45: error/budget 1e10, a false alarm.
    The second-order product terms (df dc, di dg, do da) cover it."""
    pytest.importorskip("torch")
    from pathlib import Path
    from convlstm_conformance.model import Case
    from convlstm_conformance.adapters.ref_torch import TorchReferenceAdapter as TorchReference
    case = Case.load(Path(__file__).parent / "data" / "expanding_relu_saturated_gates.npz")
    verdict = tolerance.judge(case, TorchReference("cpu").run(case))
    assert verdict.passed and not verdict.unjudged, verdict.describe()


# -- gradients --------------------------------------------------------------

def _grad_case(k, **kw):
    rng = np.random.default_rng(100 + k)
    drawn = draw_config(Chooser(rng=rng), SPEC, **kw)
    return make_case(SPEC, drawn, k, initial_state=True, mask=(k % 3 == 0), cotangent=True,
                     scale=1.0)


@pytest.mark.parametrize("k", range(10))
def test_oracle_backward_matches_central_differences(k):
    """The hand-written BPTT agrees with float64 central differences along a
    random direction, for every gradient (strides, dilation, masks, go_backwards
    and channels_first all drawn)."""
    import copy
    case = _grad_case(k)
    res = tolerance.oracle.forward(case)
    grads = tolerance.oracle.backward(case, res)
    rng = np.random.default_rng(k)

    def loss(c):
        return float((tolerance.oracle.forward(c).output * c.cotangent).sum())

    for name, g in grads.items():
        v = rng.standard_normal(g.shape)

        def moved(step):
            c = copy.copy(case)
            if name in ("initial_h", "initial_c"):
                h0, c0 = case.initial_state
                c.initial_state = (h0 + step * v, c0) if name == "initial_h" else (h0, c0 + step * v)
            else:
                setattr(c, name, getattr(case, name) + step * v)
            return c

        eps = 1e-6
        fd = (loss(moved(eps)) - loss(moved(-eps))) / (2 * eps)
        assert float((g * v).sum()) == pytest.approx(fd, rel=1e-6, abs=1e-9), (name, case.config)


def _with_grads(case, grads):
    """An outcome carrying ``grads`` (judge_gradients looks at nothing else)."""
    return Outcome(status="ok", outputs=[tolerance.oracle.forward(case).output],
                   structure="tensor", grads=grads)


def test_gradients_rounded_to_float32_pass_and_perturbed_fail():
    for k in range(6):
        case = _grad_case(k, caps=CAPS)
        want = tolerance.oracle.backward(case, tolerance.oracle.forward(case))
        rounded = {n: g.astype(np.float32).astype(np.float64) for n, g in want.items()}
        verdict = tolerance.judge_gradients(case, _with_grads(case, rounded))
        assert verdict.passed and verdict.worst < 0.1, verdict.describe()
        # One kernel entry off by 0.1 % of the largest kernel gradient.
        bad = dict(rounded)
        bad["kernel"] = rounded["kernel"].copy()
        idx = np.unravel_index(np.argmax(np.abs(bad["kernel"])), bad["kernel"].shape)
        bad["kernel"][idx] *= 1.001
        verdict = tolerance.judge_gradients(case, _with_grads(case, bad))
        assert not verdict.passed and verdict.errors["kernel"].ratio > 1, verdict.describe()


def test_missing_gradient_is_a_problem():
    case = _grad_case(1, caps=CAPS)
    want = tolerance.oracle.backward(case, tolerance.oracle.forward(case))
    partial = {n: g for n, g in want.items() if n != "recurrent_kernel"}
    verdict = tolerance.judge_gradients(case, _with_grads(case, partial))
    assert not verdict.passed and "recurrent_kernel" in verdict.describe()


@pytest.mark.parametrize("name", sorted(tolerance.oracle.SLOPES))
def test_hand_written_slopes_match_central_differences(name):
    """Every activation's slope away from its kinks, against float64 central
    differences of the activation itself."""
    fn = tolerance.oracle.activation(name)
    _, kinks = tolerance.oracle.SLOPES[name]
    x = np.linspace(-5.3, 5.3, 211)
    x = x[np.all([np.abs(x - k) > 1e-3 for k in kinks], axis=0)] if kinks else x
    h = 1e-6
    numeric = (fn(x + h) - fn(x - h)) / (2 * h)
    slope, half = tolerance.oracle.derivative(name, x)
    np.testing.assert_allclose(slope, numeric, rtol=1e-6, atol=1e-8, err_msg=name)
    assert not half.any()


def test_slope_ambiguity_at_kinks():
    slope, half = tolerance.oracle.derivative("relu", np.array([0.0, 1.0]))
    assert slope[0] == 0.5 and half[0] == 0.5 and half[1] == 0.0
    slope, half = tolerance.oracle.derivative("hard_sigmoid", np.array([3.0]))
    assert slope[0] == pytest.approx(1 / 12) and half[0] == pytest.approx(1 / 12)


def test_float16_gradients_rounded_into_the_subnormals_pass():
    """Below float16's smallest normal (2^-14) values round to multiples of
    2^-24 whatever their magnitude: a relative budget alone calls that rounding
    an error (model item 4).  The oracle's gradients, rounded to float16, must
    pass; a small cotangent puts many of them among the subnormals."""
    rng = np.random.default_rng(5)
    subnormal = 0
    for k in range(6):
        drawn = draw_config(Chooser(rng=rng), SPEC, caps=CAPS)
        case = make_case(SPEC, drawn, k, dtype="float16", cotangent=True, scale=1.0)
        case.cotangent = (case.cotangent * 2.0 ** -18).astype(np.float16).astype(np.float64)
        want = tolerance.oracle.backward(case, tolerance.oracle.forward(case))
        rounded = {n: g.astype(np.float16).astype(np.float64) for n, g in want.items()}
        subnormal += sum(int(((r != 0) & (np.abs(r) < 2.0 ** -14)).sum()) for r in rounded.values())
        verdict = tolerance.judge_gradients(case, _with_grads(case, rounded))
        assert verdict.passed, (f"false alarm on float16 rounding, config {drawn.config}:\n"
                                f"{verdict.describe()}")
    assert subnormal > 100, f"only {subnormal} subnormal gradients: the test shows nothing"
