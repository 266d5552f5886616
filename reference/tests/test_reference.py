"""Tests of the fast references (reference/torch_ref.py, jax_ref.py).

Numerics are judged against the float64 NumPy oracle through the tolerance
model (``convlstm_conformance.tolerance.judge``); gradients against central finite
differences of the float64 torch reference, and the two references' gradients
against each other.  The JAX tests compile one XLA program per configuration,
so they use fewer, richer configurations than the torch tests.
"""
from __future__ import annotations

import importlib.util
import re

import numpy as np
import pytest

from convlstm_conformance.model import CALL, CONSTRUCT, Call, Case, OK, RAISED, REFUSED
from convlstm_conformance.tolerance import judge
from convlstm_conformance.reference import config as rc, torch_plan as tp, torch_train as tt

HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_JAX = importlib.util.find_spec("jax") is not None


# --------------------------------------------------------------------------
# helpers


def _round(a: np.ndarray, dtype: str) -> np.ndarray:
    """Values exactly representable in ``dtype``, held in float64 (the suite's rule)."""
    if dtype == "bfloat16":
        import ml_dtypes
        return np.asarray(a).astype(ml_dtypes.bfloat16).astype(np.float64)
    return np.asarray(a).astype(dtype).astype(np.float64)


def make_case(config: dict, B=2, T=3, H=7, W=6, C=2, dtype="float32", mask=None,
              initial_state=False, seed=0, scale=0.4, **extra) -> Case:
    """A random case for ``config`` with weights and inputs rounded to ``dtype``."""
    rng = np.random.default_rng(seed)
    cfg = dict(config)
    F = cfg["filters"]
    k = cfg["kernel_size"]
    kh, kw = (k, k) if isinstance(k, int) else tuple(k)
    cf = cfg.get("data_format") == "channels_first"
    x = rng.standard_normal((B, T, C, H, W) if cf else (B, T, H, W, C))
    case = Case(config=cfg, inputs=_round(x, dtype),
                kernel=_round(rng.standard_normal((kh, kw, C, 4 * F)) * scale, dtype),
                recurrent_kernel=_round(rng.standard_normal((kh, kw, F, 4 * F)) * scale, dtype),
                bias=(_round(rng.standard_normal(4 * F) * scale, dtype)
                      if cfg.get("use_bias", True) else None),
                dtype=dtype, **extra)
    if mask is not None:
        case.mask = np.asarray(mask, dtype=bool)
    if initial_state:
        shape = state_shape(case)
        case.initial_state = (_round(rng.standard_normal(shape) * 0.5, dtype),
                              _round(rng.standard_normal(shape) * 0.5, dtype))
    return case


def state_shape(case: Case) -> tuple[int, ...]:
    from convlstm_conformance.reference.config import geometry, parse_config
    spec = parse_config(case.config)
    g = geometry(spec, case.inputs.shape)
    F = spec.filters
    return (g.B, F, g.Ho, g.Wo) if spec.channels_first else (g.B, g.Ho, g.Wo, F)


def assert_conforms(case: Case, outcome, what: str = "") -> float:
    assert outcome.status == OK, f"{what} {case.config}: {outcome.summary()}"
    verdict = judge(case, outcome)
    assert verdict.passed, (f"{what} differs from the oracle beyond its error budget for "
                            f"config={case.config} dtype={case.dtype} mask={case.mask is not None} "
                            f"initial_state={case.initial_state is not None}:\n"
                            f"{verdict.describe()}")
    return verdict.worst


@pytest.fixture(scope="module")
def torch_ref():
    if not HAVE_TORCH:
        pytest.skip("torch is not installed")
    from convlstm_conformance.adapters.ref_torch import TorchReferenceAdapter as TorchReference
    return TorchReference("cpu")


@pytest.fixture(scope="module")
def jax_ref():
    if not HAVE_JAX:
        pytest.skip("jax is not installed")
    from convlstm_conformance.adapters.ref_jax import JaxReferenceAdapter as JaxReference
    return JaxReference("cpu")


# --------------------------------------------------------------------------
# The configurations: each line exercises a different part of the spec.

BASE = {"filters": 3, "kernel_size": 3}
CONFIGS = [
    dict(BASE),                                                       # defaults: valid, tanh/sigmoid
    dict(BASE, padding="same"),
    dict(BASE, padding="SAME", kernel_size=(2, 3)),                   # even kernel: pad bottom/right
    dict(BASE, padding="same", kernel_size=2, strides=2),             # odd total pad with stride
    dict(BASE, padding="valid", strides=(2, 1)),
    dict(BASE, padding="same", strides=(1, 2), kernel_size=(3, 1)),
    dict(BASE, dilation_rate=2, kernel_size=2),
    dict(BASE, padding="same", dilation_rate=(1, 2)),
    dict(BASE, kernel_size=1),
    dict(BASE, data_format="channels_first", padding="same", kernel_size=(2, 3)),
    dict(BASE, use_bias=False),
    dict(BASE, go_backwards=True, return_sequences=True),
    dict(BASE, return_sequences=True, return_state=True, padding="same"),
    dict(BASE, return_state=True, go_backwards=True, data_format="channels_first"),
    dict(BASE, activation="relu", recurrent_activation="hard_sigmoid"),
    dict(BASE, activation=None, recurrent_activation="sparse_sigmoid"),
    dict(BASE, filters=1, kernel_size=(1, 2), padding="same"),
]

ACTIVATION_NAMES = [
    "tanh", "sigmoid", "hard_sigmoid", "relu", "relu6", "leaky_relu", "elu", "selu", "celu",
    "softplus", "softsign", "squareplus", "soft_shrink", "hard_shrink", "tanh_shrink",
    "hard_tanh", "sparse_plus", "sparse_sigmoid", "silu", "swish", "gelu", "exponential",
    "hard_silu", "hard_swish", "mish", "log_sigmoid", "linear"]


def _cid(cfg: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in cfg.items() if k not in ("filters",))


# --------------------------------------------------------------------------
# torch: differential against the oracle


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("config", CONFIGS, ids=_cid)
def test_torch_matches_oracle(torch_ref, config, dtype):
    case = make_case(config, dtype=dtype)
    assert_conforms(case, torch_ref.run(case), "ref-torch-cpu")


@pytest.mark.parametrize("config", CONFIGS[::3], ids=_cid)
def test_torch_mask_and_initial_state(torch_ref, config):
    # Sample 0 is masked throughout (output stays zero, state stays initial),
    # sample 1 has gaps: masked steps carry the state and repeat the output.
    mask = [[False, False, False], [True, False, True]]
    for dtype in ("float64", "float32"):
        case = make_case(dict(config, return_state=True), dtype=dtype, mask=mask,
                         initial_state=True)
        assert_conforms(case, torch_ref.run(case), "ref-torch-cpu with mask")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_torch_low_precision(torch_ref, dtype):
    for config in (CONFIGS[1], CONFIGS[9], CONFIGS[12]):
        case = make_case(config, dtype=dtype, scale=0.3)
        out = torch_ref.run(case)
        assert out.dtypes == [dtype] * len(out.outputs), out.dtypes
        assert_conforms(case, out, f"ref-torch-cpu {dtype}")


@pytest.mark.parametrize("act", ACTIVATION_NAMES)
def test_torch_activations(torch_ref, act):
    for dtype in ("float64", "float32"):
        # exp(exp(.)) overflows float32 quickly: keep its arguments small.
        small = act == "exponential"
        case = make_case(dict(BASE, padding="same", activation=act,
                              recurrent_activation=act if not small else "sigmoid",
                              return_state=True), T=2, dtype=dtype, scale=0.1 if small else 0.3)
        assert_conforms(case, torch_ref.run(case), f"ref-torch-cpu activation={act}")


def test_torch_big_path_and_chunking(torch_ref, monkeypatch):
    """Problems past SMALL_ROWS take the library convolution, in time chunks.

    With CHUNK_ROWS at 1 every step is its own chunk; by default this case
    projects all its steps at once.
    """
    config = dict(filters=2, kernel_size=(2, 3), padding="same", return_sequences=True,
                  return_state=True)
    for go_back in (False, True):
        case = make_case(dict(config, go_backwards=go_back), B=2, T=5, H=34, W=33, C=2,
                         mask=[[True, False, True, True, False], [False, True, True, False, True]])
        assert 2 * 34 * 33 > tp.SMALL_ROWS
        monkeypatch.setattr(tp, "CHUNK_ROWS", 1)     # one time step per chunk
        assert_conforms(case, torch_ref.run(case), "ref-torch-cpu (chunked conv path)")
        monkeypatch.undo()
        assert_conforms(case, torch_ref.run(case), "ref-torch-cpu (conv path)")


def test_torch_batch_slices_write_in_place(torch_ref):
    """Big problems on several cores run one batch slice per core, each
    writing its rows of the outputs, states and per-sample gradients in
    place; uneven slices, a mask holding back the last output, an initial
    state and its gradients must come out as with one slice."""
    import torch
    config = dict(filters=2, kernel_size=3, padding="same", return_state=True,
                  go_backwards=True)
    mask = [[True, True, False], [True, False, True], [False, True, True]]
    infer = make_case(config, B=3, T=3, H=34, W=33, C=2, dtype="float64", mask=mask,
                      initial_state=True)
    train = make_case(config, B=3, T=3, H=34, W=33, C=2, dtype="float64", mask=mask,
                      initial_state=True)
    train.cotangent = np.random.default_rng(8).standard_normal((3, 34, 33, 2))
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for case in (infer, train):
            spec = rc.parse_config(case.config)
            plan = tp.make_plan(spec, rc.geometry(spec, case.inputs.shape), torch.float64,
                                torch.device("cpu"))
            assert tp.part_count(plan) == 2, "the case should be split in two batch slices"
            out = torch_ref.run(case)
            assert_conforms(case, out, "ref-torch-cpu, two batch slices")
        assert sorted(out.grads) == ["bias", "initial_c", "initial_h", "inputs", "kernel",
                                     "recurrent_kernel"], sorted(out.grads)
    finally:
        torch.set_num_threads(old)


def test_torch_structure(torch_ref):
    case = make_case(dict(BASE, padding="same", return_state=True), dtype="float64")
    out = torch_ref.run(case)
    assert out.structure == "list" and len(out.outputs) == 3
    np.testing.assert_array_equal(out.outputs[0], out.outputs[1],
                                  err_msg="without return_sequences the output is the final h")
    seq = torch_ref.run(make_case(dict(BASE, return_sequences=True), dtype="float64"))
    assert seq.structure == "tensor" and len(seq.outputs) == 1
    assert seq.output.shape == (2, 3, 5, 4, 3), seq.output.shape
    assert seq.duration_s > 0


# --------------------------------------------------------------------------
# argument validation (shared by both references)

BAD_CONSTRUCT = [
    (dict(filters=0, kernel_size=3), "filters"),
    (dict(filters=-2, kernel_size=3), "filters"),
    (dict(filters=2, kernel_size=0), "kernel_size"),
    (dict(filters=2, kernel_size=(3, -1)), "kernel_size"),
    (dict(filters=2, kernel_size=(1, 2, 3)), "kernel_size"),
    (dict(filters=2, kernel_size=3, strides=0), "strides"),
    (dict(filters=2, kernel_size=3, dilation_rate=(1, 0)), "dilation"),
    (dict(filters=2, kernel_size=3, strides=2, dilation_rate=2), "strides.*dilation"),
    (dict(filters=2, kernel_size=3, padding="causal"), "padding"),
    (dict(filters=2, kernel_size=3, padding="valid "), "padding"),
    (dict(filters=2, kernel_size=3, data_format="NHWC"), "data_format"),
    (dict(filters=2, kernel_size=3, activation="RELU"), "activation|identifier"),
    (dict(filters=2, kernel_size=3, recurrent_activation="hard-sigmoid"), "activation"),
    (dict(filters=2, kernel_size=3, dropout=1.5), "dropout"),
    (dict(filters=2, kernel_size=3, unknown_argument=1), "(?i)unrecognized"),
]


@pytest.mark.parametrize("config,pattern", BAD_CONSTRUCT, ids=lambda v: str(v))
def test_torch_rejects_bad_arguments(torch_ref, config, pattern):
    rng = np.random.default_rng(0)
    case = Case(config=config, inputs=rng.standard_normal((1, 2, 5, 5, 1)),
                kernel=np.zeros((3, 3, 1, 8)), recurrent_kernel=np.zeros((3, 3, 2, 8)),
                bias=np.zeros(8))
    out = torch_ref.run(case)
    assert out.status == RAISED, f"{config}: expected a ValueError, got {out.summary()}"
    assert out.error.is_a("ValueError") and out.error.phase == CONSTRUCT, out.summary()
    assert re.search(pattern, out.error.message, re.I), out.error.message


def test_torch_rejects_bad_inputs(torch_ref):
    good = make_case(dict(BASE), dtype="float64")
    cases = {
        "rank": Case(config=good.config, inputs=good.inputs[0], kernel=good.kernel,
                     recurrent_kernel=good.recurrent_kernel, bias=good.bias),
        "too small": make_case(dict(BASE, dilation_rate=3), H=6, W=9, dtype="float64"),
        "initial_state": Case(config=good.config, inputs=good.inputs, kernel=good.kernel,
                              recurrent_kernel=good.recurrent_kernel, bias=good.bias,
                              initial_state=(np.zeros((2, 4, 4, 3)), np.zeros((2, 4, 4, 3)))),
    }
    patterns = {"rank": "ndim|rank", "too small": "small|size", "initial_state": "shape"}
    for name, case in cases.items():
        out = torch_ref.run(case)
        assert out.status == RAISED and out.error.phase == CALL, f"{name}: {out.summary()}"
        assert out.error.is_a("ValueError"), out.summary()
        assert re.search(patterns[name], out.error.message), out.error.message


def test_torch_refusals(torch_ref):
    case = make_case(dict(BASE, activation="softmax"))
    assert torch_ref.run(case).status == REFUSED, "softmax is not elementwise: refuse"
    case = make_case(dict(BASE, device="cuda"))
    assert torch_ref.run(case).status == REFUSED, "a cpu adapter refuses cuda cases"
    case = make_case(dict(BASE))
    case.kernel = None
    assert torch_ref.run(case).status == REFUSED, "no weights, no initializers: refuse"
    caps = torch_ref.capabilities()
    assert caps.gradients and caps.mask and caps.stateful and "bfloat16" in caps.dtype


# --------------------------------------------------------------------------
# gradients


def _loss_grads_fd(adapter, case: Case, names, eps=1e-6, n_probe=3, seed=1):
    """Central finite differences of sum(output * cotangent) along random directions."""
    rng = np.random.default_rng(seed)
    base = dict(inputs=case.inputs, kernel=case.kernel, recurrent_kernel=case.recurrent_kernel,
                bias=case.bias)
    if case.initial_state is not None:
        base["initial_h"], base["initial_c"] = case.initial_state
    results = {}
    for name in names:
        dirs = []
        for _ in range(n_probe):
            d = rng.standard_normal(base[name].shape)
            vals = []
            for sign in (1, -1):
                arrays = dict(base)
                arrays[name] = base[name] + sign * eps * d
                c = Case(config=case.config, inputs=arrays["inputs"], kernel=arrays["kernel"],
                         recurrent_kernel=arrays["recurrent_kernel"], bias=arrays["bias"],
                         mask=case.mask, dtype="float64",
                         initial_state=((arrays["initial_h"], arrays["initial_c"])
                                        if case.initial_state is not None else None))
                out = adapter.run(c)
                assert out.status == OK, out.summary()
                vals.append(float(np.sum(out.output * case.cotangent)))
            dirs.append((d, (vals[0] - vals[1]) / (2 * eps)))
        results[name] = dirs
    return results


GRAD_CONFIGS = [
    (dict(BASE, padding="same"), {}),
    (dict(BASE, kernel_size=(2, 3), padding="same", return_sequences=True,
          data_format="channels_first", go_backwards=True), {}),
    (dict(BASE, strides=2, activation="softsign", recurrent_activation="hard_sigmoid"), {}),
    (dict(BASE, padding="same", return_sequences=True, use_bias=False),
     {"mask": [[True, False, True], [False, True, True]], "initial_state": True}),
]


@pytest.mark.parametrize("config,extra", GRAD_CONFIGS, ids=lambda v: _cid(v) if isinstance(v, dict) and "filters" in v else "")
def test_torch_gradients_match_finite_differences(torch_ref, config, extra):
    case = make_case(config, dtype="float64", B=2, T=3, H=5, W=6, C=2, scale=0.5, **extra)
    probe = torch_ref.run(case)
    case.cotangent = np.random.default_rng(3).standard_normal(probe.output.shape)
    out = torch_ref.run(case)
    assert out.status == OK, out.summary()
    names = ["inputs", "kernel", "recurrent_kernel"]
    names += ["bias"] if config.get("use_bias", True) else []
    names += ["initial_h", "initial_c"] if case.initial_state is not None else []
    assert sorted(out.grads) == sorted(names), sorted(out.grads)
    np.testing.assert_allclose(out.output, probe.output, rtol=1e-12, atol=1e-12,
                               err_msg="the training path computes the inference path's output")
    for name, dirs in _loss_grads_fd(torch_ref, case, names).items():
        for d, fd in dirs:
            analytic = float(np.sum(out.grads[name] * d))
            assert abs(analytic - fd) <= 1e-6 * max(1.0, abs(fd)), (
                f"d loss/d {name} along a random direction: autograd {analytic!r}, "
                f"finite differences {fd!r} for {config}")


@pytest.mark.parametrize("ract", ["hard_sigmoid", "tanh", "sigmoid"])
@pytest.mark.parametrize("size", ["small", "big"])
def test_torch_float32_training_path(torch_ref, ract, size):
    """Float32 with a cotangent or injected masks runs the training path.

    On the CPU that path computes tanh as 2*sigmoid(2x) - 1 with doubled c-gate
    weights, in the fused cell (sigmoid gates) and in the generic one (any
    other recurrent activation): both must match the oracle.
    """
    dims = dict(B=2, T=3, H=7, W=6) if size == "small" else dict(B=2, T=2, H=34, W=33)
    config = dict(filters=2, kernel_size=3, padding="same", return_sequences=True,
                  recurrent_activation=ract)
    case = make_case(config, dtype="float32", C=2, **dims)
    case.cotangent = np.ones((2, dims["T"], dims["H"], dims["W"], 2))
    assert_conforms(case, torch_ref.run(case), f"ref-torch-cpu float32 with a cotangent")
    masks = make_case(dict(config, dropout=0.5), dtype="float32", C=2, training=True, **dims)
    masks.dropout_mask = np.ones((4, 2, dims["H"], dims["W"], 2))
    assert_conforms(masks, torch_ref.run(masks), "ref-torch-cpu float32 with all-ones masks")


def test_torch_float32_gradients_near_float64(torch_ref):
    """The float32 path (2*sigmoid(2z)-1 candidate gate, fused cell backward)."""
    config = dict(BASE, padding="same", return_sequences=True)
    grads = {}
    for dtype in ("float64", "float32"):
        case = make_case(config, dtype="float32")   # same float32-exact values for both
        case.dtype = dtype
        case.cotangent = np.random.default_rng(5).standard_normal((2, 3, 7, 6, 3))
        out = torch_ref.run(case)
        assert out.status == OK, out.summary()
        grads[dtype] = out.grads
    for name, g64 in grads["float64"].items():
        err = np.max(np.abs(grads["float32"][name] - g64)) / max(np.max(np.abs(g64)), 1e-30)
        assert err < 1e-5, f"float32 gradient of {name} off by {err:.2e} relative to float64"


# --------------------------------------------------------------------------
# stateful layers and dropout


def test_torch_stateful_carry_and_reset(torch_ref):
    config = dict(BASE, padding="same", stateful=True, return_state=True)
    first = make_case(config, dtype="float64", seed=1)
    second = make_case(config, dtype="float64", seed=2)
    first.followups = [Call(second.inputs)]
    out = torch_ref.run(first)
    # The same layer (first's weights) on the second input, from first's final state.
    explicit = _same_layer(first, second.inputs, dict(config, stateful=False))
    explicit.initial_state = (out.outputs[1], out.outputs[2])
    want = torch_ref.run(explicit)
    for got, exp in zip(out.followup_outputs[0], want.outputs):
        np.testing.assert_array_equal(got, exp, err_msg="stateful: the second call starts "
                                      "from the first call's final state")
    first.followups = [Call(second.inputs, reset=True)]
    fresh = torch_ref.run(first)
    plain = torch_ref.run(_same_layer(first, second.inputs, dict(config, stateful=False)))
    np.testing.assert_array_equal(fresh.followup_outputs[0][0], plain.output,
                                  err_msg="after reset_states the state is zero again")
    again = torch_ref.run(_same_layer(first, second.inputs, config))
    np.testing.assert_array_equal(again.output, plain.output,
                                  err_msg="a new case is a new layer: no state from the last one")


def _same_layer(case, inputs, config):
    import dataclasses
    return dataclasses.replace(case, config=config, inputs=inputs, followups=[])


def _dropout_case(config, dtype, training=True, seed=0):
    case = make_case(dict(config, dropout=0.5, recurrent_dropout=0.3), dtype=dtype,
                     training=training, seed=seed)
    rng = np.random.default_rng(seed + 7)
    B, T, H, W, C = case.inputs.shape if not case.channels_first else np.array(
        case.inputs.shape)[[0, 1, 3, 4, 2]]
    sb = state_shape(case)
    Ho, Wo, F = (sb[2], sb[3], sb[1]) if case.channels_first else sb[1:]
    case.dropout_mask = (rng.random((4, B, H, W, C)) > 0.5) / 0.5
    case.recurrent_dropout_mask = (rng.random((4, B, Ho, Wo, F)) > 0.3) / 0.7
    return case


@pytest.mark.parametrize("config", [dict(BASE, padding="same", return_sequences=True),
                                    dict(BASE, strides=2, data_format="channels_first",
                                         return_state=True)], ids=_cid)
def test_torch_dropout_injection(torch_ref, config):
    for dtype in ("float64", "float32"):
        case = _dropout_case(config, dtype)
        assert_conforms(case, torch_ref.run(case), "ref-torch-cpu with injected dropout masks")
    # Outside training, masks and rates are ignored.
    case = _dropout_case(config, "float64", training=False)
    plain = make_case(config, dtype="float64", seed=0)
    np.testing.assert_array_equal(torch_ref.run(case).output, torch_ref.run(plain).output)


def test_torch_dropout_injection_big(torch_ref):
    """Past SMALL_ROWS the batch is split over cores: masks are split with it."""
    case = _dropout_case(dict(filters=2, kernel_size=3, padding="same", return_sequences=True),
                         "float32")
    big = make_case(case.config, B=2, T=2, H=34, W=33, C=2, dtype="float32", training=True)
    rng = np.random.default_rng(9)
    big.dropout_mask = (rng.random((4, 2, 34, 33, 2)) > 0.5) / 0.5
    big.recurrent_dropout_mask = (rng.random((4, 2, 34, 33, 2)) > 0.3) / 0.7
    assert_conforms(big, torch_ref.run(big), "ref-torch-cpu, big, injected dropout masks")


def test_torch_drawn_dropout(torch_ref):
    config = dict(BASE, padding="same", dropout=0.5, recurrent_dropout=0.5, seed=11)
    drawn = torch_ref.run(make_case(config, dtype="float64", training=True))
    plain = torch_ref.run(make_case(config, dtype="float64", training=False))
    assert drawn.status == OK and not np.allclose(drawn.output, plain.output), \
        "training with dropout 0.5 and no injected masks draws masks"
    # Keras applies dropout only for 0 < rate < 1: a rate of 1 drops nothing.
    one = dict(BASE, padding="same", dropout=1.0)
    np.testing.assert_array_equal(
        torch_ref.run(make_case(one, dtype="float64", training=True)).output,
        torch_ref.run(make_case(one, dtype="float64", training=False)).output)


# --------------------------------------------------------------------------
# JAX


JAX_CONFIGS = [
    (dict(BASE, padding="same", kernel_size=(2, 3), return_sequences=True, return_state=True),
     "float64"),
    (dict(BASE, strides=(2, 1), data_format="channels_first", go_backwards=True,
          return_state=True), "float32"),
    (dict(BASE, dilation_rate=2, kernel_size=2, use_bias=False, activation="relu",
          recurrent_activation="hard_sigmoid", return_sequences=True, go_backwards=True),
     "float32"),
    (dict(BASE, padding="same", strides=2, kernel_size=2, activation="gelu",
          recurrent_activation="sparse_sigmoid"), "float64"),
    (dict(BASE, padding="same"), "bfloat16"),
    (dict(BASE, padding="same"), "float16"),
]


@pytest.mark.parametrize("config,dtype", JAX_CONFIGS, ids=lambda v: _cid(v) if isinstance(v, dict) else v)
def test_jax_matches_oracle(jax_ref, config, dtype):
    case = make_case(config, dtype=dtype, scale=0.3)
    out = jax_ref.run(case)
    assert out.dtypes == [dtype] * len(out.outputs)
    assert_conforms(case, out, "ref-jax-cpu")


def test_single_step(jax_ref, torch_ref):
    """T = 1: the first step (no recurrent term) is the whole sequence."""
    for ref in (jax_ref, torch_ref):
        case = make_case(dict(BASE, padding="same", return_sequences=True, return_state=True),
                         T=1, dtype="float64")
        assert_conforms(case, ref.run(case), ref.name)


def test_jax_mask_initial_state_and_big_path(jax_ref):
    mask = [[False, False, False], [True, False, True]]
    case = make_case(dict(BASE, padding="same", return_sequences=True, return_state=True),
                     dtype="float64", mask=mask, initial_state=True)
    assert_conforms(case, jax_ref.run(case), "ref-jax-cpu with mask and initial state")
    big = make_case(dict(filters=2, kernel_size=3, padding="same", return_state=True),
                    B=2, T=2, H=34, W=33, C=2, dtype="float32",
                    mask=[[True, False], [False, True]])
    assert_conforms(big, jax_ref.run(big), "ref-jax-cpu (conv path)")


def test_jax_dropout_injection_and_stateful(jax_ref):
    case = _dropout_case(dict(BASE, padding="same", return_sequences=True), "float64")
    assert_conforms(case, jax_ref.run(case), "ref-jax-cpu with injected dropout masks")
    config = dict(BASE, padding="same", stateful=True, return_state=True)
    first = make_case(config, dtype="float64", seed=1)
    second_inputs = make_case(config, dtype="float64", seed=2).inputs
    first.followups = [Call(second_inputs)]
    out = jax_ref.run(first)
    explicit = _same_layer(first, second_inputs, dict(config, stateful=False))
    explicit.initial_state = (out.outputs[1], out.outputs[2])
    np.testing.assert_allclose(out.followup_outputs[0][0], jax_ref.run(explicit).output,
                               rtol=0, atol=1e-14)


def test_jax_gradients_match_torch(jax_ref, torch_ref, monkeypatch):
    """Both references' float64 gradients agree (torch's are checked by finite differences)."""
    monkeypatch.setattr(tt, "COLS_BYTES", 1)    # weight gradients one image at a time
    config = dict(BASE, kernel_size=(2, 3), padding="same", return_sequences=True,
                  data_format="channels_first", go_backwards=True)
    case = make_case(config, dtype="float64", mask=[[True, False, True], [True, True, False]],
                     initial_state=True)
    case.cotangent = np.random.default_rng(4).standard_normal(
        torch_ref.run(case).output.shape)
    # A problem past SMALL_ROWS takes the convolution paths (JAX: the
    # recurrent convolution's hand-written VJP).
    big = make_case(dict(filters=2, kernel_size=(3, 2), padding="same", return_state=True),
                    B=2, T=2, H=34, W=33, C=2, dtype="float64", initial_state=True)
    big.cotangent = np.random.default_rng(6).standard_normal((2, 34, 33, 2))
    strided = make_case(dict(filters=2, kernel_size=3, strides=2, return_sequences=True),
                        B=2, T=2, H=70, W=66, C=1, dtype="float64")
    strided.cotangent = np.random.default_rng(7).standard_normal((2, 2, 34, 32, 2))
    for c in (case, big, strided):
        got, want = jax_ref.run(c), torch_ref.run(c)
        assert got.status == OK and want.status == OK, (got.summary(), want.summary())
        assert sorted(got.grads) == sorted(want.grads)
        for name in want.grads:
            np.testing.assert_allclose(got.grads[name], want.grads[name], rtol=1e-9,
                                       atol=1e-11, err_msg=f"gradient of {name}")


def test_jax_rejects_like_torch(jax_ref):
    for config, pattern in BAD_CONSTRUCT[:3] + BAD_CONSTRUCT[7:9]:
        case = Case(config=config, inputs=np.zeros((1, 2, 5, 5, 1)),
                    kernel=np.zeros((3, 3, 1, 8)), recurrent_kernel=np.zeros((3, 3, 2, 8)),
                    bias=np.zeros(8))
        out = jax_ref.run(case)
        assert out.status == RAISED and out.error.phase == CONSTRUCT, out.summary()
        assert re.search(pattern, out.error.message, re.I), out.error.message


# --------------------------------------------------------------------------
# CUDA


def _cuda_torch():
    if not HAVE_TORCH:
        pytest.skip("torch is not installed")
    import torch
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU visible to torch on this machine")
    from convlstm_conformance.adapters.ref_torch import TorchReferenceAdapter as TorchReference
    return TorchReference("cuda")


def _cuda_jax():
    if not HAVE_JAX:
        pytest.skip("jax is not installed")
    import jax
    try:
        if not jax.devices("gpu"):
            raise RuntimeError
    except RuntimeError:
        pytest.skip("no CUDA GPU visible to jax on this machine")
    from convlstm_conformance.adapters.ref_jax import JaxReferenceAdapter as JaxReference
    return JaxReference("cuda")


@pytest.mark.parametrize("make", [_cuda_torch, _cuda_jax], ids=["torch", "jax"])
def test_cuda_matches_oracle(make):
    ref = make()
    assert ref.capabilities().device == frozenset({"cuda"})
    for config in (CONFIGS[2], CONFIGS[9], CONFIGS[12]):
        for dtype in ("float64", "float32"):
            case = make_case(dict(config, device="cuda"), dtype=dtype)
            assert_conforms(case, ref.run(case), ref.name)
    case = make_case(dict(BASE, padding="same", device="cuda"), dtype="float64")
    case.cotangent = np.ones((2, 7, 6, 3))
    out = ref.run(case)
    assert out.status == OK and set(out.grads) >= {"inputs", "kernel"}, out.summary()


def test_cuda_capabilities_without_gpu():
    """capabilities() is declared data; constructing without a GPU fails cleanly."""
    if not HAVE_TORCH:
        pytest.skip("torch is not installed")
    import torch
    from convlstm_conformance.adapters.ref_torch import TorchReferenceAdapter as TorchReference
    if torch.cuda.is_available():
        pytest.skip("a GPU is present; covered by test_cuda_matches_oracle")
    with pytest.raises(RuntimeError, match="CUDA"):
        TorchReference("cuda")


@pytest.mark.parametrize("config", [
    dict(filters=3, kernel_size=1, padding="valid", data_format="channels_first",
         activation="relu", return_sequences=True, return_state=True),
    dict(filters=4, kernel_size=3, padding="same", activation="tanh",
         return_sequences=True, return_state=True),
], ids=["relu-k1-channels_first", "tanh-k3-same"])
def test_jax_last_output_is_bit_identical_to_h(jax_ref, config):
    """STRUCT-SEQUENCE-STATE: XLA may compute output[-1] and h in two fusions
    that round apart; the reference must return them identical."""
    for seed in range(12):
        case = make_case(config, B=1, T=2, H=1 if config["kernel_size"] == 1 else 5,
                         W=1 if config["kernel_size"] == 1 else 4, C=1, seed=seed, scale=1.0)
        out = jax_ref.run(case)
        seq, h = out.outputs[0], out.outputs[1]
        assert np.array_equal(seq[:, -1], h), (
            f"ref-jax output[:, -1] differs from h by {np.abs(seq[:, -1] - h).max():.3g} "
            f"for {config}, seed {seed}")


def test_jax_tiered_compilation(jax_ref, monkeypatch):
    """The first calls of a small configuration run the quickly compiled program,
    later ones the optimized one; every call conforms either way.  Big problems
    and callers asking for ``optimized`` get the optimized one at once."""
    from convlstm_conformance.reference import jax_ref as rj
    monkeypatch.setattr(rj, "OPTIMIZE_AFTER", 2)
    case = make_case(dict(BASE, padding="same", return_state=True), dtype="float32", seed=9)
    for call in range(1, rj.OPTIMIZE_AFTER + 3):
        assert_conforms(case, jax_ref.run(case), f"ref-jax-cpu call {call}")
        program = next(reversed(jax_ref._cache.values()))
        if call <= rj.OPTIMIZE_AFTER:
            assert program.quick is not None and program.full is None, f"call {call}"
        else:
            assert program.full is not None and program.quick is None, f"call {call}"
    monkeypatch.setattr(rj, "JAX_SMALL_ROWS", 0)
    big = make_case(dict(BASE, padding="same"), dtype="float32", seed=10, B=1)
    assert_conforms(big, jax_ref.run(big), "ref-jax-cpu, untiered")
    program = next(reversed(jax_ref._cache.values()))
    assert program.full is not None and program.quick is None
