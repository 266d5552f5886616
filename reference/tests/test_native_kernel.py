"""The reference's C kernel for small problems (reference/native).

The kernel replaces PyTorch operators for small maskless inference on the CPU,
so it is held to the same standard as the rest of the reference: every result
is judged against the float64 oracle through the tolerance model, on
configurations that reach each of its specialised copies (F = 1..16 and the
generic one, 4- and 8-lane vectors, odd and even channel counts); its
activations are checked against float64 over their whole range, NaN and
infinities included; and it must agree with the PyTorch-operator path on
where results are NaN.
"""
from __future__ import annotations

import importlib.util
import os
import shutil

import numpy as np
import pytest

from reference.tests.test_reference import BASE, CONFIGS, _cid, assert_conforms, make_case
from convlstm_conformance.reference import (
    config as rc, torch_infer as ti, torch_plan as tp, torch_train as tt)

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                reason="torch is not installed")


@pytest.fixture(scope="module")
def lib():
    from convlstm_conformance.reference import native
    found = native.library()
    if found is None:
        disabled = os.environ.get("CONVLSTM_NATIVE") == "0"
        if not disabled and (shutil.which("cc") or shutil.which("gcc")):
            pytest.fail(f"a C compiler is present but the kernel is unavailable: "
                        f"{native.status()}")
        pytest.skip(f"no native kernel: {native.status()}")
    return found


@pytest.fixture(scope="module")
def torch_ref(lib):
    from convlstm_conformance.adapters.ref_torch import TorchReferenceAdapter as TorchReference
    return TorchReference("cpu")


def _tensors(case):
    import torch
    spec = rc.parse_config(case.config)
    geo = rc.geometry(spec, case.inputs.shape)
    dt = {"float32": torch.float32, "float64": torch.float64}[case.dtype]
    plan = tp.make_plan(spec, geo, dt, torch.device("cpu"))

    def t(a):
        return None if a is None else torch.as_tensor(np.asarray(a)).to(dt)

    h0, c0 = case.initial_state if case.initial_state is not None else (None, None)
    return plan, (t(case.inputs), t(case.kernel), t(case.recurrent_kernel), t(case.bias),
                  t(h0), t(c0))


# --------------------------------------------------------------------------
# Activations


def _ulp(a: np.ndarray, dtype) -> np.ndarray:
    """ulp of each value in ``dtype``; 0 at infinities, which must come out exact."""
    with np.errstate(invalid="ignore", over="ignore"):
        u = np.spacing(np.abs(a).astype(dtype)).astype(np.float64)
    return np.where(np.isfinite(u), u, 0.0)


SPECIAL = np.array([0.0, -0.0, 1e-30, -1e-30, 1e-8, -1e-8, 0.5, -0.5, 3.0, -3.0, 87.0, -87.0,
                    88.0, -88.0, 88.7, -88.7, 89.0, -104.0, 1e4, -1e4, np.inf, -np.inf])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_activations_against_float64(lib, dtype):
    from convlstm_conformance.reference import native
    x = np.concatenate([np.linspace(-120, 120, 240_001), SPECIAL]).astype(dtype)
    x64 = x.astype(np.float64)
    with np.errstate(over="ignore"):
        sig = 1.0 / (1.0 + np.exp(-x64))
    want = {"sigmoid": sig, "tanh": np.tanh(x64),
            "hard_sigmoid": np.clip(x64 + 3.0, 0.0, 6.0) / 6.0,
            "relu": np.maximum(x64, 0.0), "linear": x64}
    fn = lib.activation_f32 if dtype == "float32" else lib.activation_f64
    eps_abs = float(np.finfo(dtype).tiny)   # below it the exp clamp may leave a denormal
    for name, code in native.ACTIVATIONS.items():
        v = x.copy()
        fn(v.ctypes.data, v.size, code)
        got = v.astype(np.float64)
        with np.errstate(invalid="ignore"):
            # Equal infinities are exact; a NaN error (NaN out of a number) fails below.
            err = np.where(got == want[name], 0.0, np.abs(got - want[name]))
        if name == "tanh" and dtype == "float32":
            # 2 sigmoid(2x) - 1: twice a sigmoid error of 4 ulp of a value below 1
            # (ulp 2^-24) plus the subtraction's rounding: an absolute bound.
            bound = np.full_like(err, 2.0 ** -21 + 2.0 ** -24)
        else:
            # exp within 2 ulp, then an add and a divide: 4 ulp of the result.
            bound = 4 * _ulp(want[name], dtype) + eps_abs
        bad = ~(err <= bound)
        assert not bad.any(), (f"{dtype} {name}: {bad.sum()} values beyond the bound, "
                               f"e.g. x={x64[bad][:3]} got={got[bad][:3]} want={want[name][bad][:3]}")
        nan = np.array([np.nan], dtype=dtype)
        fn(nan.ctypes.data, 1, code)
        assert np.isnan(nan[0]), f"{dtype} {name}(NaN) must be NaN, got {nan[0]}"


# --------------------------------------------------------------------------
# The kernel against the oracle


def _native_taken(case) -> bool:
    plan, _ = _tensors(case)
    return plan.small and tp.native_applies(plan)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("config", [c for c in CONFIGS
                                    if c.get("recurrent_activation") != "sparse_sigmoid"],
                         ids=_cid)
def test_kernel_matches_oracle(torch_ref, config, dtype):
    for initial_state in (False, True):
        case = make_case(dict(config, return_state=True), dtype=dtype,
                         initial_state=initial_state, seed=3)
        assert _native_taken(case), f"{config} should run on the C kernel"
        assert_conforms(case, torch_ref.run(case), "ref-torch-cpu (C kernel)")


# Every specialised copy: F = 1..16 with 8 float lanes for even F and 4 for odd,
# F = 17 the generic copy; input channel counts around the unroll by four.
# The adapter sends F past NATIVE_MAX_FILTERS to the operator path, so the
# kernel is called directly here and judged through the same oracle.
@pytest.mark.parametrize("filters", [1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 15, 16, 17])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_kernel_every_filter_count(torch_ref, filters, dtype, monkeypatch):
    monkeypatch.setattr(tp, "NATIVE_MAX_FILTERS", {"float32": 64, "float64": 64})
    for C in (1, 3, 4, 6):
        config = dict(filters=filters, kernel_size=(2, 3), padding="same",
                      return_sequences=True, return_state=True)
        case = make_case(config, B=2, T=3, H=5, W=4, C=C, dtype=dtype,
                         initial_state=C % 2 == 0, seed=filters * 10 + C, scale=0.3)
        assert _native_taken(case)
        assert_conforms(case, torch_ref.run(case), f"C kernel F={filters} C={C}")


def test_filter_limit_selects_the_operator_path(lib):
    for dtype, limit in tp.NATIVE_MAX_FILTERS.items():
        for F, want in ((limit, True), (limit + 1, False)):
            case = make_case(dict(BASE, filters=F), dtype=dtype)
            assert _native_taken(case) is want, f"{dtype} F={F}"


def test_kernel_reads_strided_and_channels_first_states(torch_ref):
    """x and the initial state are read through their strides, not copied."""
    for cf in (False, True):
        config = dict(BASE, padding="same", go_backwards=True, return_sequences=True,
                      data_format="channels_first" if cf else "channels_last")
        case = make_case(config, dtype="float64", initial_state=True, seed=5)
        plan, (x, K, U, b, h0, c0) = _tensors(case)
        # A non-contiguous x with the same values: every other element of a wider buffer.
        wide = x.new_zeros(x.shape[:-1] + (2 * x.shape[-1],))
        wide[..., ::2] = x
        got = ti._infer_native(plan, wide[..., ::2], K, U, b, h0, c0)
        want = ti._infer_small(plan, x, K, U, b, h0, c0)
        for name, g, w in zip(("output", "h", "c"), got, want):
            np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=0, atol=1e-12,
                                       err_msg=f"{name}, channels_first={cf}")


def test_kernel_nonfinite_like_torch_ops(lib):
    """NaN and infinities in the input end where the PyTorch-operator path puts them."""
    for dtype in ("float32", "float64"):
        case = make_case(dict(BASE, padding="same", return_sequences=True), dtype=dtype,
                         seed=11)
        case.inputs = case.inputs.copy()
        case.inputs[0, 1, 2, 3, 0] = np.nan
        case.inputs[1, 0, 0, 0, 1] = np.inf
        case.inputs[1, 2, 4, 4, 0] = -np.inf
        plan, args = _tensors(case)
        got = ti._infer_native(plan, *args)
        want = ti._infer_small(plan, *args)
        for name, g, w in zip(("output", "h", "c"), got, want):
            g, w = g.numpy(), w.numpy()
            assert np.isnan(w).any(), "the case should produce NaN"
            np.testing.assert_array_equal(np.isnan(g), np.isnan(w),
                                          err_msg=f"{dtype} {name}: NaN positions differ")
            np.testing.assert_array_equal(np.isinf(g), np.isinf(w),
                                          err_msg=f"{dtype} {name}: inf positions differ")


def test_unsupported_activation_falls_back(torch_ref):
    case = make_case(dict(BASE, activation="elu", return_state=True), dtype="float64")
    plan, args = _tensors(case)
    assert not tp.native_applies(plan)
    assert ti._infer_native(plan, *args) is None
    assert_conforms(case, torch_ref.run(case), "ref-torch-cpu (operators)")


def test_disabled_by_environment(monkeypatch, tmp_path):
    from convlstm_conformance.reference import native
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv("CONVLSTM_NATIVE", "0")
    assert native.library() is None
    assert "CONVLSTM_NATIVE=0" in native.status()


def test_failed_build_is_reported_not_raised(monkeypatch, tmp_path):
    from convlstm_conformance.reference import native
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv("CONVLSTM_NATIVE", "1")
    monkeypatch.setenv("CONVLSTM_NATIVE_DIR", str(tmp_path))
    bad = tmp_path / "broken.c"
    bad.write_text("this is not C\n")
    monkeypatch.setattr(native, "SOURCES", (bad,) + native.SOURCES[1:])
    assert native.library() is None
    assert "failed" in native.status()
    assert not list(tmp_path.glob("*.so")), "no library is left behind by a failed build"


# --------------------------------------------------------------------------
# The gate kernel of the convolution-library path


GATE_CONFIGS = [
    dict(BASE, padding="same", return_sequences=True),                 # x_t rides along
    dict(BASE, padding="same", go_backwards=True, data_format="channels_first"),
    dict(BASE, strides=(2, 1), return_sequences=True),                 # hoisted projection
    dict(BASE, padding="same", activation="relu", recurrent_activation="hard_sigmoid",
         return_sequences=True),                                       # its generic path
    dict(BASE, activation=None, recurrent_activation="tanh", use_bias=False),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("config", GATE_CONFIGS, ids=_cid)
def test_gate_kernel_matches_oracle(torch_ref, config, dtype, monkeypatch):
    """Every problem takes the convolution path (SMALL_ROWS = 0), so each step's
    gate arithmetic is one lstm_gates_* call; with and without an initial state."""
    monkeypatch.setattr(tp, "SMALL_ROWS", 0)
    for initial_state in (False, True):
        case = make_case(dict(config, return_state=True), B=3, T=4, H=6, W=5, C=3,
                         dtype=dtype, initial_state=initial_state, seed=21)
        plan, _ = _tensors(case)
        assert not plan.small and plan.native_gates is not None
        assert_conforms(case, torch_ref.run(case), "ref-torch-cpu (C gates)")


def test_gate_kernel_not_used_with_a_mask(torch_ref, monkeypatch):
    monkeypatch.setattr(tp, "SMALL_ROWS", 0)
    calls = []
    real = ti.gates_in_c      # inference calls it by the name it imported
    monkeypatch.setattr(ti, "gates_in_c", lambda *a: calls.append(1) or real(*a))
    case = make_case(dict(BASE, padding="same", return_state=True), dtype="float64",
                     mask=[[True, False, True], [False, True, True]])
    assert_conforms(case, torch_ref.run(case), "ref-torch-cpu (operator gates, mask)")
    assert not calls, "masked steps keep their state: the operator path handles them"
    case.mask = None
    assert_conforms(case, torch_ref.run(case), "ref-torch-cpu (C gates)")
    import torch
    parts = min(torch.get_num_threads(), 2)        # batch slices, one per core
    assert len(calls) == 3 * parts, f"one gate call per step and slice, got {len(calls)}"


def test_stale_builds_are_removed(monkeypatch, tmp_path):
    from convlstm_conformance.reference import native
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv("CONVLSTM_NATIVE", "1")
    monkeypatch.setenv("CONVLSTM_NATIVE_DIR", str(tmp_path))
    stale = tmp_path / "convlstm_small-0000000000000000.so"
    stale.write_bytes(b"an earlier build")
    if native.library() is None:
        pytest.skip(native.status())
    left = sorted(p.name for p in tmp_path.glob("*.so"))
    assert len(left) == 1 and left[0] != stale.name, left


# --------------------------------------------------------------------------
# The training cell


@pytest.mark.parametrize("config", [dict(BASE, padding="same", return_sequences=True),
                                    dict(BASE, strides=2, go_backwards=True),
                                    dict(BASE, activation="relu")], ids=_cid)
def test_training_cell_matches_the_operator_cell(lib, config):
    """Outputs and every gradient of the C cell's forward_backward agree with
    the operator cell's (float64: to roundoff), on the small and the
    convolution paths; activations other than tanh/sigmoid keep the operators."""
    import dataclasses
    import torch
    case = make_case(dict(config, return_state=True), dtype="float64", initial_state=True,
                     seed=17)
    plan, (x, K, U, b, h0, c0) = _tensors(case)
    fused = config.get("activation", "tanh") == "tanh"
    assert (plan.native_cell is not None) is fused
    for small in (True, False):
        p = dataclasses.replace(plan, small=small)
        out = ti.forward_infer(p, x, K, U, b, h0, c0, None)[0]
        cot = torch.as_tensor(np.random.default_rng(3).standard_normal(out.shape))
        got = tt.forward_backward(p, x, K, U, b, h0, c0, None, cot)
        want = tt.forward_backward(dataclasses.replace(p, native_cell=None), x, K, U, b, h0,
                                   c0, None, cot)
        for name, g, w in zip(("output", "h", "c", "dx", "dK", "dU", "db", "dh0", "dc0"),
                              (*got[0], *got[1]), (*want[0], *want[1])):
            np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-10, atol=1e-12,
                                       err_msg=f"{name}, small={small}")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("have_dh,have_dc", [(True, True), (True, False), (False, True),
                                             (False, False)],
                         ids=["dh+dc", "dh", "dc", "none"])
def test_cell_backward_for_each_cotangent_present(lib, dtype, have_dh, have_dc):
    """lstm_cell_bwd_* runs one loop per combination of the cotangents it is
    given (either may be NULL); each must compute the cell's backward, with a
    missing cotangent counting as zero."""
    rng = np.random.default_rng(5)
    n, F = 37, 5          # positions, channels: not multiples of a vector width
    a = rng.uniform(0.02, 0.98, (n, 4 * F))
    a[:, 3 * F:] = rng.uniform(-0.98, 0.98, (n, F))        # the c gate is a tanh
    c, c_new, dh, dc_new = (rng.standard_normal((n, F)) for _ in range(4))
    a, c, c_new, dh, dc_new = (v.astype(dtype) for v in (a, c, c_new, dh, dc_new))
    dz, dc_prev = np.empty_like(a), np.empty_like(c)
    fn = lib.lstm_cell_bwd_f64 if dtype == "float64" else lib.lstm_cell_bwd_f32
    fn(n, F, a.ctypes.data, c.ctypes.data, c_new.ctypes.data,
       dh.ctypes.data if have_dh else None, dc_new.ctypes.data if have_dc else None,
       dz.ctypes.data, dc_prev.ctypes.data)

    w = np.float64
    i, f, o, g = (a[:, k * F:(k + 1) * F].astype(w) for k in range(4))
    tc = np.tanh(c_new.astype(w))
    dhe = dh.astype(w) if have_dh else np.zeros((n, F))
    dc = (dc_new.astype(w) if have_dc else 0.0) + dhe * o * (1 - tc * tc)
    want_dz = np.concatenate([dc * g * i * (1 - i), dc * c * f * (1 - f),
                              dhe * tc * o * (1 - o), dc * i * (1 - g * g)], axis=1)
    tol = dict(rtol=1e-12, atol=1e-14) if dtype == "float64" else dict(rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(dz, want_dz, **tol, err_msg=f"dz, dh={have_dh}, dc'={have_dc}")
    np.testing.assert_allclose(dc_prev, dc * f, **tol,
                               err_msg=f"dc_prev, dh={have_dh}, dc'={have_dc}")
