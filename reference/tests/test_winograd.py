"""The reference's Winograd convolution (reference/native/winograd.c).

The kernel is held to the tolerance model's pre-activation bound (item 1 of
core/tolerance.py: SAFETY * gamma_K * sum |w| |x|) against a float64
convolution, over geometries that reach every branch: odd and even output
sizes (a last tile half outside), channel counts that leave a scalar tail in
the input transform, output channels that leave the 8-wide GEMM tail, a
channel range of bigger weights, accumulation, strided outputs and blocks
that do not divide the tile count.  Then the reference must take it on big
float32 problems and still agree with the oracle through the whole layer.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from convlstm_conformance.tolerance import judge_gradients
# The kernels' fixture: skips without a compiler, fails if one is present but
# the kernels do not build.
from reference.tests.test_native_kernel import lib  # noqa: F401
from reference.tests.test_reference import assert_conforms, make_case

# The float64 convolution and the bound ratio of the figures in
# benchmarks/README.md, so that the tests and those figures measure alike.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from winograd_accuracy import bound_ratio, direct  # noqa: E402
from convlstm_conformance.reference import config as rc, torch_plan as tp

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                reason="torch is not installed")


# (B, H', W', K, N): every geometry has at least WINOGRAD_MIN_CHANNELS channels.
GEOMETRIES = [
    (2, 8, 8, 8, 16),      # even: whole tiles
    (1, 7, 9, 12, 24),     # odd both ways; scalar channel tail; 8-wide GEMM tail
    (3, 5, 4, 40, 128),    # the benchmark's channels
    (2, 1, 13, 9, 8),      # one output row
]


@pytest.mark.parametrize("B,Ho,Wo,K,N", GEOMETRIES)
def test_kernel_within_the_direct_summation_bound(lib, B, Ho, Wo, K, N):
    import torch
    rng = np.random.default_rng(K * N + Ho)
    x = torch.from_numpy(rng.uniform(-1, 1, (B, Ho, Wo, K)).astype(np.float32))
    w = torch.from_numpy(rng.uniform(-0.3, 0.3, (3, 3, K, N)).astype(np.float32))
    bias = torch.from_numpy(rng.uniform(-0.5, 0.5, N).astype(np.float32))
    xp = torch.nn.functional.pad(x, (0, 0, 1, 1, 1, 1)).contiguous()
    exact, magnitude = direct(xp, w)
    U = tp.winograd_weights(w)

    got = torch.full((B, Ho, Wo, N), np.nan)
    tp.conv3x3_in_c(lib, xp, U, got, bias=bias)
    ratio = bound_ratio(got, exact + bias.double(), magnitude + bias.double().abs(), K)
    assert ratio <= 1, f"Winograd convolution off by {ratio:.3g} of the bound, (B,H',W',K,N)={(B, Ho, Wo, K, N)}"

    # Accumulating into the first N channels of a wider array; a view with
    # strided channels is refused.
    wide = torch.from_numpy(rng.uniform(-1, 1, (B, Ho, Wo, 2 * N)).astype(np.float32))
    with pytest.raises(ValueError, match="contiguous channels"):
        tp.conv3x3_in_c(lib, xp, U, wide[..., ::2], accumulate=True)
    dest, rest = wide[..., :N], wide[..., N:].clone()
    before = dest.double().clone()
    tp.conv3x3_in_c(lib, xp, U, dest, accumulate=True)
    ratio = bound_ratio(dest, exact + before, magnitude + before.abs(), K)
    assert ratio <= 1, f"accumulated result off by {ratio:.3g} of the bound"
    assert torch.equal(wide[..., N:], rest), "channels beyond the output were written"


def test_kernel_channel_range_and_blocks(lib):
    """A channel range [k0, k1) of bigger weights (the first step of the ride
    path reads only x's channels), and blocks that split the tiles unevenly."""
    import torch
    from convlstm_conformance.reference import native
    rng = np.random.default_rng(3)
    B, Ho, Wo, K, N, k0 = 2, 11, 6, 20, 16, 9
    x = torch.from_numpy(rng.uniform(-1, 1, (B, Ho, Wo, K)).astype(np.float32))
    w = torch.from_numpy(rng.uniform(-0.3, 0.3, (3, 3, K, N)).astype(np.float32))
    xp = torch.nn.functional.pad(x, (0, 0, 1, 1, 1, 1)).contiguous()
    U = tp.winograd_weights(w)
    exact, magnitude = direct(xp[..., k0:], w[:, :, k0:])
    got = torch.empty((B, Ho, Wo, N))
    tp.conv3x3_in_c(lib, xp, U, got, k0=k0)
    assert bound_ratio(got, exact, magnitude, K - k0) <= 1
    # Blocks of 6, 7 (rounded up to 12) and more tiles than there are.
    for block in (6, 7, 1000):
        out = torch.empty((B, Ho, Wo, N))
        g = native.geometry_array((B, Ho, Wo, Ho + 2, Wo + 2, 0, 0, K, N, 0, block, 0,
                                   *xp.stride()[:3], *out.stride()[:3]))
        assert lib.winograd3x3_f32(g, xp.data_ptr(), U.data_ptr(), None, out.data_ptr()) == 0
        full, mag = direct(xp, w)
        assert bound_ratio(out, full, mag, K) <= 1, f"block={block}"


def test_kernel_reads_outside_the_input_as_zero(lib):
    """pad: the 'same' convolution of an input without a border (pad 1), and
    the full correlation a convolution's input gradient is (pad 2, output 2
    larger than the input)."""
    import torch
    rng = np.random.default_rng(5)
    B, H, W, K, N = 2, 9, 6, 16, 8
    x = torch.from_numpy(rng.uniform(-1, 1, (B, H, W, K)).astype(np.float32))
    w = torch.from_numpy(rng.uniform(-0.3, 0.3, (3, 3, K, N)).astype(np.float32))
    U = tp.winograd_weights(w)
    for pad in (1, 2):
        xp = torch.nn.functional.pad(x, (0, 0, pad, pad, pad, pad))
        exact, magnitude = direct(xp, w)
        got = torch.empty(exact.shape, dtype=torch.float32)
        tp.conv3x3_in_c(lib, x, U, got, pad=(pad, pad))
        assert bound_ratio(got, exact, magnitude, K) <= 1, f"pad={pad}"


@pytest.mark.parametrize("B,Ho,Wo,K,N", GEOMETRIES)
def test_weight_gradient_against_float64(lib, B, Ho, Wo, K, N):
    """dw of sum(dy * conv(x, w)) is the correlation of x with dy: a sum over
    every output position, bounded by gamma over that many products times
    their magnitude sum."""
    import torch
    from convlstm_conformance.tolerance import SAFETY, gamma
    rng = np.random.default_rng(K + N + Wo)
    x = torch.from_numpy(rng.uniform(-1, 1, (B, Ho, Wo, K)).astype(np.float32))
    dy = torch.from_numpy(rng.uniform(-1, 1, (B, Ho, Wo, N)).astype(np.float32))
    xp = torch.nn.functional.pad(x, (0, 0, 1, 1, 1, 1)).contiguous()
    got = tp.weight_grad3x3_in_c(lib, xp, dy)
    x64, dy64 = xp.double(), dy.double()
    exact = torch.empty((3, 3, K, N), dtype=torch.float64)
    magnitude = torch.empty_like(exact)
    for a in range(3):
        for b in range(3):
            patch = x64[:, a:a + Ho, b:b + Wo].reshape(-1, K)
            exact[a, b] = patch.t() @ dy64.reshape(-1, N)
            magnitude[a, b] = patch.abs().t() @ dy64.abs().reshape(-1, N)
    bound = SAFETY * gamma(B * Ho * Wo, 2.0 ** -24) * magnitude
    err = (got.double() - exact).abs()
    # Taps that only ever read the zero border (one output row) must come out 0.
    ratio = float(torch.where(bound > 0, err / bound, err * np.inf).nan_to_num(0.0).max())
    assert ratio <= 1, f"weight gradient off by {ratio:.3g} of the bound, {(B, Ho, Wo, K, N)}"


def test_kernel_refuses_output_channels_off_its_vector_width(lib):
    import torch
    from convlstm_conformance.reference import native
    xp, U, out = torch.zeros((1, 4, 4, 8)), torch.zeros((16, 8, 12)), torch.zeros((1, 2, 2, 12))
    g = native.geometry_array((1, 2, 2, 4, 4, 0, 0, 8, 12, 0, 0, 0, *xp.stride()[:3],
                               *out.stride()[:3]))
    assert lib.winograd3x3_f32(g, xp.data_ptr(), U.data_ptr(), None, out.data_ptr()) == 1


# Big float32 problems with 3x3 kernels: the layer through the Winograd path.
BIG = dict(B=2, T=3, H=36, W=35, C=8)    # past SMALL_ROWS even for valid padding
WINOGRAD_CONFIGS = [
    dict(filters=8, kernel_size=3, padding="same", return_sequences=True),    # x_t rides along
    dict(filters=8, kernel_size=3, padding="valid", return_state=True),       # hoisted projection
    dict(filters=10, kernel_size=3, padding="same", go_backwards=True,
         data_format="channels_first"),
]


@pytest.fixture(scope="module")
def torch_ref(lib):
    from convlstm_conformance.adapters.ref_torch import TorchReferenceAdapter as TorchReference
    return TorchReference("cpu")


def _plan(case):
    import torch
    spec = rc.parse_config(case.config)
    return tp.make_plan(spec, rc.geometry(spec, case.inputs.shape), torch.float32,
                        torch.device("cpu"))


@pytest.mark.parametrize("config", WINOGRAD_CONFIGS, ids=lambda c: ",".join(
    f"{k}={v}" for k, v in c.items() if k != "kernel_size"))
def test_reference_takes_winograd_and_conforms(torch_ref, config):
    for extra in (dict(), dict(initial_state=True),
                  dict(mask=[[True, False, True], [False, True, True]], initial_state=True)):
        case = make_case(config, **BIG, **extra)
        assert _plan(case).winograd is not None, f"{config} should take the Winograd path"
        assert_conforms(case, torch_ref.run(case), f"ref-torch-cpu (Winograd) {extra}")


@pytest.mark.parametrize("config", WINOGRAD_CONFIGS, ids=lambda c: ",".join(
    f"{k}={v}" for k, v in c.items() if k != "kernel_size"))
def test_training_path_gradients_through_winograd(torch_ref, config):
    """The training path's per-step convolution: forward, and the input
    gradient as the correlation with the flipped, transposed kernel."""
    for extra in (dict(), dict(initial_state=True)):
        case = make_case(dict(config, return_sequences=True), **BIG, **extra)
        assert _plan(case).winograd is not None
        shape = torch_ref.run(case).outputs[0].shape
        case.cotangent = np.random.default_rng(4).standard_normal(shape)
        out = torch_ref.run(case)
        assert {"inputs", "kernel", "recurrent_kernel"} <= set(out.grads), sorted(out.grads)
        assert_conforms(case, out, f"ref-torch-cpu training (Winograd) {extra}")
        verdict = judge_gradients(case, out)
        assert verdict.passed and not verdict.unjudged, (
            f"gradients through the Winograd path, {config} {extra}:\n{verdict.describe()}")


def test_reference_first_step_with_few_input_channels(torch_ref):
    """Without an initial state the first step convolves x alone: with fewer
    than WINOGRAD_MIN_CHANNELS channels that step goes to the library."""
    case = make_case(WINOGRAD_CONFIGS[0], **dict(BIG, C=2))
    assert _plan(case).winograd is not None
    assert_conforms(case, torch_ref.run(case), "ref-torch-cpu (Winograd, C=2)")


def test_winograd_is_skipped_where_it_does_not_apply(lib, monkeypatch):
    import torch
    base = make_case(WINOGRAD_CONFIGS[0], **BIG)
    for config, dtype in ((dict(WINOGRAD_CONFIGS[0], filters=4), "float32"),   # few channels
                          (dict(WINOGRAD_CONFIGS[0], filters=9), "float32"),   # 4F = 36
                          (dict(WINOGRAD_CONFIGS[0], kernel_size=(3, 2)), "float32"),
                          (WINOGRAD_CONFIGS[0], "float64")):
        spec = rc.parse_config(config)
        plan = tp.make_plan(spec, rc.geometry(spec, base.inputs.shape),
                            getattr(torch, dtype), torch.device("cpu"))
        assert plan.winograd is None, (config, dtype)
    small = make_case(WINOGRAD_CONFIGS[0])
    assert _plan(small).winograd is None, "small problems keep the im2col path"
    monkeypatch.setenv("CONVLSTM_WINOGRAD", "0")
    assert _plan(base).winograd is None, "CONVLSTM_WINOGRAD=0 turns it off"


def test_drawn_configurations_through_winograd(torch_ref):
    """The strategies' own draws, held to 3x3 kernels, stride 1 and at least
    WINOGRAD_MIN_CHANNELS filters at a size past SMALL_ROWS: every other
    argument (padding, data_format, activations, go_backwards, bias, ...)
    as the suite draws it, outputs and gradients against the oracle."""
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from convlstm_conformance.spec import load_cached
    from convlstm_conformance.strategies import configs, make_case as draw_case
    from convlstm_conformance.tolerance import judge
    spec = load_cached()
    focus = {"kernel_size": [3], "filters": [8, 12, 16], "strides": [1], "dilation_rate": [1]}
    sizes = {"batch": 2, "timesteps": 2, "rows": 36, "cols": 35}

    @settings(max_examples=8, deadline=None, database=None)
    @given(drawn=configs(spec, focus=focus, sizes=sizes), seed=st.integers(0, 2 ** 16),
           initial_state=st.booleans())
    def example(drawn, seed, initial_state):
        case = draw_case(spec, drawn, seed, dtype="float32", initial_state=initial_state,
                         cotangent=True)
        assert _plan(case).winograd is not None, f"{drawn.config} should take the Winograd path"
        out = torch_ref.run(case)
        for name, verdict in (("outputs", judge(case, out)), ("gradients", judge_gradients(case, out))):
            assert verdict.passed, f"{name} of {drawn.config}, seed {seed}:\n{verdict.describe()}"

    example()
