"""The float64 NumPy oracle against values computed by hand in this file.

Every expected number here comes from math.exp/math.tanh arithmetic written out in the
test (or from literal tables), never from the oracle's own helpers, so a shared mistake
cannot make both sides agree.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from convlstm_conformance.model import CALL, Case, OK, RAISED
from convlstm_conformance.adapters.oracle import NumpyOracle
from convlstm_conformance.oracle import ACTIVATIONS, forward
from convlstm_conformance.spec import load

RNG_SEED = 20240611


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def hand_lstm(xs, w, u, b, h=0.0, c=0.0):
    """The scalar LSTM (1 channel, 1 filter, 1x1 kernels): [(h_t, c_t), ...].

    w, u, b: input weight, recurrent weight and bias per gate, order i, f, c, o."""
    out = []
    for x in xs:
        i = sigmoid(w[0] * x + u[0] * h + b[0])
        f = sigmoid(w[1] * x + u[1] * h + b[1])
        g = math.tanh(w[2] * x + u[2] * h + b[2])
        o = sigmoid(w[3] * x + u[3] * h + b[3])
        c = f * c + i * g
        h = o * math.tanh(c)
        out.append((h, c))
    return out


def scalar_case(xs, w, u, b, h0=None, c0=None, mask=None, **config) -> Case:
    """xs: (B, T) or (T,) scalars; 1x1 spatial, 1 channel, 1 filter, 1x1 kernels."""
    x = np.asarray(xs, dtype=np.float64)
    if x.ndim == 1:
        x = x[None]
    B, T = x.shape
    state = None
    if h0 is not None:
        state = (np.asarray(h0, float).reshape(B, 1, 1, 1), np.asarray(c0, float).reshape(B, 1, 1, 1))
    return Case(config={"filters": 1, "kernel_size": 1, **config},
                inputs=x.reshape(B, T, 1, 1, 1),
                kernel=np.asarray(w, float).reshape(1, 1, 1, 4),
                recurrent_kernel=np.asarray(u, float).reshape(1, 1, 1, 4),
                bias=np.asarray(b, float), initial_state=state,
                mask=None if mask is None else np.asarray(mask, bool), dtype="float64")


def random_case(seed=RNG_SEED, B=2, T=3, H=4, W=5, C=2, F=3, kernel=(3, 2), state=True,
                **config) -> Case:
    rng = np.random.default_rng(seed)
    kh, kw = kernel
    cfg = {"filters": F, "kernel_size": list(kernel), "padding": "same", **config}
    x = rng.normal(size=(B, T, H, W, C))
    initial = None
    if state:
        initial = (rng.normal(size=(B, H, W, F)), rng.normal(size=(B, H, W, F)))
    return Case(config=cfg, inputs=x,
                kernel=rng.normal(scale=0.4, size=(kh, kw, C, 4 * F)),
                recurrent_kernel=rng.normal(scale=0.4, size=(kh, kw, F, 4 * F)),
                bias=rng.normal(scale=0.3, size=(4 * F,)), initial_state=initial, dtype="float64")


W_ = [0.3, -0.2, 0.8, 0.5]       # input weights i, f, c, o
U_ = [0.1, 0.4, -0.6, 0.2]       # recurrent weights
B_ = [0.05, 1.0, -0.1, 0.0]      # biases
XS = [0.5, -1.0, 2.0, 0.25]


# --------------------------------------------------------------------------
# The scalar recurrence


def test_scalar_first_step_written_out():
    # h0 = c0 = 0, x = 0.5: the recurrent terms vanish.
    i = 1 / (1 + math.exp(-(0.3 * 0.5 + 0.05)))
    g = math.tanh(0.8 * 0.5 - 0.1)
    o = 1 / (1 + math.exp(-(0.5 * 0.5)))
    c = i * g
    h = o * math.tanh(c)
    res = forward(scalar_case([0.5], W_, U_, B_))
    assert res.c.item() == pytest.approx(c, rel=1e-14, abs=0), f"c: expected {c}, got {res.c.item()}"
    assert res.h.item() == pytest.approx(h, rel=1e-14, abs=0), f"h: expected {h}, got {res.h.item()}"
    assert res.output.shape == (1, 1, 1, 1)


def test_scalar_recurrence_matches_hand_computation():
    res = forward(scalar_case(XS, W_, U_, B_, return_sequences=True))
    expected = hand_lstm(XS, W_, U_, B_)
    got = res.output[0, :, 0, 0, 0]
    np.testing.assert_allclose(got, [h for h, _ in expected], rtol=1e-13, atol=0,
                               err_msg="h sequence of the scalar LSTM")
    assert res.output.shape == (1, 4, 1, 1, 1)
    assert res.c.item() == pytest.approx(expected[-1][1], rel=1e-13, abs=0)
    assert res.h.item() == pytest.approx(expected[-1][0], rel=1e-13, abs=0)


def test_scalar_recurrence_from_an_initial_state():
    res = forward(scalar_case(XS, W_, U_, B_, h0=0.7, c0=-1.3, return_sequences=True))
    expected = hand_lstm(XS, W_, U_, B_, h=0.7, c=-1.3)
    np.testing.assert_allclose(res.output[0, :, 0, 0, 0], [h for h, _ in expected], rtol=1e-13, atol=0)
    assert res.c.item() == pytest.approx(expected[-1][1], rel=1e-13, abs=0)


def test_gate_order_is_i_f_c_o():
    # Swapping two gates' weights must change the result: the oracle reads blocks by position.
    swapped = [W_[1], W_[0], W_[2], W_[3]]
    a = forward(scalar_case(XS, W_, U_, B_)).h.item()
    b = forward(scalar_case(XS, swapped, U_, B_)).h.item()
    assert a != pytest.approx(b, rel=1e-6)
    assert b == pytest.approx(hand_lstm(XS, swapped, U_, B_)[-1][0], rel=1e-13, abs=0)


def test_pixels_and_samples_are_independent_with_1x1_kernels():
    rng = np.random.default_rng(RNG_SEED)
    x = rng.normal(size=(2, 3, 2, 3, 1))
    case = Case(config={"filters": 1, "kernel_size": 1, "padding": "same", "return_sequences": True},
                inputs=x, kernel=np.reshape(W_, (1, 1, 1, 4)),
                recurrent_kernel=np.reshape(U_, (1, 1, 1, 4)), bias=np.array(B_), dtype="float64")
    out = forward(case).output
    for bi in range(2):
        for r in range(2):
            for c in range(3):
                expected = [h for h, _ in hand_lstm(x[bi, :, r, c, 0], W_, U_, B_)]
                np.testing.assert_allclose(out[bi, :, r, c, 0], expected, rtol=1e-13, atol=0,
                                           err_msg=f"sample {bi}, pixel ({r}, {c})")


def test_zero_weights_halve_the_cell_state_each_step():
    # All gates sigmoid(0) = 0.5 and candidate tanh(0) = 0: c_t = c0 / 2**t, h_t = 0.5 * tanh(c_t).
    rng = np.random.default_rng(1)
    B, T, H, W, C, F = 1, 5, 4, 4, 2, 2
    c0 = rng.uniform(-3, 3, size=(B, H, W, F))
    h0 = rng.uniform(-1, 1, size=(B, H, W, F))   # irrelevant: the recurrent kernel is zero
    case = Case(config={"filters": F, "kernel_size": 3, "padding": "same", "return_sequences": True},
                inputs=rng.normal(size=(B, T, H, W, C)),
                kernel=np.zeros((3, 3, C, 4 * F)), recurrent_kernel=np.zeros((3, 3, F, 4 * F)),
                bias=np.zeros(4 * F), initial_state=(h0, c0), dtype="float64")
    res = forward(case)
    for t in range(T):
        c_t = c0 / 2.0 ** (t + 1)
        np.testing.assert_allclose(res.output[:, t], 0.5 * np.tanh(c_t), rtol=1e-15, atol=0,
                                   err_msg=f"step {t}: h should be 0.5 * tanh(c0 / 2**{t + 1})")
    np.testing.assert_allclose(res.c, c0 / 32.0, rtol=1e-15, atol=0)
    for s in res.trace.steps:
        gates = s.gates.reshape(-1, 4, F)          # gate blocks i, f, act(z_c), o
        assert np.all(gates[:, [0, 1, 3]] == 0.5), f"step {s.t}: i, f, o should be exactly 0.5"
        assert np.all(gates[:, 2] == 0.0), f"step {s.t}: the candidate should be exactly 0"


# --------------------------------------------------------------------------
# A 2x2 kernel over a 3x3 input, by hand


def test_one_step_3x3_input_2x2_kernel_written_out():
    x = [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9]]
    # Per gate g (i, f, c, o) a 2x2 kernel K[g][a][b] and recurrent kernel R[g][a][b].
    K = [[[0.5, -0.25], [0.75, 1.0]], [[-1.0, 0.5], [0.25, 0.0]],
         [[0.2, 0.4], [-0.6, 0.8]], [[1.5, -0.5], [0.0, 0.25]]]
    R = [[[0.3, 0.0], [0.0, -0.2]], [[0.1, 0.2], [0.3, 0.4]],
         [[-0.5, 0.25], [0.125, 1.0]], [[0.0, 0.0], [0.6, 0.0]]]
    bias = [0.1, -0.2, 0.05, 0.3]
    h0 = [[0.5, -1.0], [2.0, 0.25]]        # valid padding: the state is 2x2
    c0 = [[1.0, -0.5], [0.25, 2.0]]

    def hpad(r, c):
        # The recurrent convolution is 'same' with an even kernel: one zero row at the
        # bottom and one zero column at the right.
        return h0[r][c] if r < 2 and c < 2 else 0.0

    def z(g, r, c):
        # Cross-correlation (no kernel flip), as Keras convolutions are.
        return (sum(x[r + a][c + b] * K[g][a][b] for a in range(2) for b in range(2))
                + bias[g]
                + sum(hpad(r + a, c + b) * R[g][a][b] for a in range(2) for b in range(2)))

    # One pre-activation written out in full, pinning the tap order and pad side.
    z_i_00 = (0.1 * 0.5 + 0.2 * -0.25 + 0.4 * 0.75 + 0.5 * 1.0 + 0.1
              + 0.5 * 0.3 + -1.0 * 0.0 + 2.0 * 0.0 + 0.25 * -0.2)
    assert z(0, 0, 0) == pytest.approx(z_i_00, abs=1e-15)
    # At (1, 1) only R[g][0][0] touches the state: the others fall on the bottom/right pad.
    assert z(2, 1, 1) == pytest.approx(0.5 * 0.2 + 0.6 * 0.4 + 0.8 * -0.6 + 0.9 * 0.8 + 0.05
                                       + 0.25 * -0.5, abs=1e-15)

    h_exp = [[0.0, 0.0], [0.0, 0.0]]
    c_exp = [[0.0, 0.0], [0.0, 0.0]]
    for r in range(2):
        for c in range(2):
            i, f, o = sigmoid(z(0, r, c)), sigmoid(z(1, r, c)), sigmoid(z(3, r, c))
            c_exp[r][c] = f * c0[r][c] + i * math.tanh(z(2, r, c))
            h_exp[r][c] = o * math.tanh(c_exp[r][c])

    kernel = np.zeros((2, 2, 1, 4))
    rec = np.zeros((2, 2, 1, 4))
    for g in range(4):
        kernel[:, :, 0, g] = K[g]
        rec[:, :, 0, g] = R[g]
    case = Case(config={"filters": 1, "kernel_size": 2, "padding": "valid"},
                inputs=np.array(x).reshape(1, 1, 3, 3, 1), kernel=kernel, recurrent_kernel=rec,
                bias=np.array(bias), dtype="float64",
                initial_state=(np.array(h0).reshape(1, 2, 2, 1), np.array(c0).reshape(1, 2, 2, 1)))
    res = forward(case)
    assert res.output.shape == (1, 2, 2, 1), res.output.shape
    np.testing.assert_allclose(res.trace.steps[0].z[0, :, :, 0], [[z(0, r, c) for c in range(2)]
                                                                  for r in range(2)], rtol=1e-14)
    np.testing.assert_allclose(res.c[0, :, :, 0], c_exp, rtol=1e-13, atol=1e-15, err_msg="c after one step")
    np.testing.assert_allclose(res.h[0, :, :, 0], h_exp, rtol=1e-13, atol=1e-15, err_msg="h after one step")
    np.testing.assert_array_equal(res.output, res.h)


# --------------------------------------------------------------------------
# Saturated gates


def test_saturated_forget_gate_carries_the_cell_state_unchanged():
    # f = sigmoid(60) == 1.0 and i = sigmoid(-60) ~ 1e-26 in float64: c stays c0 exactly.
    w, u, b = [0.3, 0.2, 0.8, 0.5], [0.1, 0.4, -0.6, 0.2], [-60.0, 60.0, 0.0, 0.1]
    c0, h0 = 1.75, -0.4
    res = forward(scalar_case(XS, w, u, b, h0=h0, c0=c0, return_sequences=True))
    assert [s.c.item() for s in res.trace.steps] == [c0] * len(XS), "c must not move"
    assert res.c.item() == c0
    # h_t = o_t * tanh(c0), with o_t reading h_{t-1}.
    h, hs = h0, []
    for x in XS:
        h = sigmoid(w[3] * x + u[3] * h + b[3]) * math.tanh(c0)
        hs.append(h)
    np.testing.assert_allclose(res.output[0, :, 0, 0, 0], hs, rtol=1e-14, atol=0)


def test_overflow_is_a_result_not_a_warning():
    """exp(1000) overflows to inf in float64; with a hard_sigmoid input gate
    of exactly 0, i * g is inf * 0 = NaN.  Both are the IEEE results the
    comparison matches as such, so neither the oracle nor the budgets warn."""
    import warnings
    from convlstm_conformance import tolerance
    w, u = [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]
    overflow = scalar_case([1.0], w, u, [10.0, 0.0, 1000.0, 0.0], activation="exponential",
                           recurrent_activation="hard_sigmoid")
    nan = scalar_case([1.0], w, u, [-10.0, 0.0, 1000.0, 0.0], activation="exponential",
                      recurrent_activation="hard_sigmoid")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = forward(overflow)
        assert math.isinf(res.c.item()) and res.c.item() > 0, res.c   # 1 * inf
        res = forward(nan)
        assert math.isnan(res.c.item()), res.c                          # 0 * inf
        tolerance.budgets(nan, res)


def test_saturated_forget_gate_with_a_3x3_kernel():
    case = random_case(T=4, kernel=(3, 3), return_sequences=True)
    F = case.filters
    case.bias[:F] = -60.0       # input gate shut
    case.bias[F:2 * F] = 60.0   # forget gate open
    c0 = case.initial_state[1]
    res = forward(case)
    for s in res.trace.steps:
        np.testing.assert_array_equal(s.c, c0, err_msg=f"step {s.t}: c changed")
    np.testing.assert_allclose(res.h, res.trace.steps[-1].gates[..., 3 * F:] * np.tanh(c0), rtol=1e-15)


# --------------------------------------------------------------------------
# Padding placement, strides and dilation.  The candidate gate alone shows the input
# convolution: i and o are saturated open (bias +60), f shut (bias -60), activation linear,
# so h = c = z_c after one step from a zero state.

OPEN, SHUT = 60.0, -60.0
X5 = [[5 * r + c for c in range(5)] for r in range(5)]     # x[r][c] = 5r + c
TAPS = [[1.0, 10.0], [100.0, 1000.0]]


def conv_probe(x, taps, rec_taps=None, steps=None, **config) -> np.ndarray:
    """Output sequence (T, H', W') of a 1-channel, 1-filter layer wired as above."""
    x = np.asarray(x, float)
    kh, kw = np.shape(taps)
    kernel = np.zeros((kh, kw, 1, 4))
    kernel[:, :, 0, 2] = taps
    rec = np.zeros((kh, kw, 1, 4))
    if rec_taps is not None:
        rec[:, :, 0, 2] = rec_taps
    seq = np.stack(steps if steps is not None else [x])
    case = Case(config={"filters": 1, "kernel_size": [kh, kw], "activation": "linear",
                        "return_sequences": True, **config},
                inputs=seq[None, ..., None], kernel=kernel, recurrent_kernel=rec,
                bias=np.array([OPEN, SHUT, 0.0, OPEN]), dtype="float64")
    return forward(case).output[0, ..., 0]


def test_same_padding_even_kernel_pads_bottom_right():
    x = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    # Only the bottom-right tap: out(r, c) = x(r+1, c+1) with a zero row/column after the input.
    got = conv_probe(x, [[0, 0], [0, 1]], padding="same")[0]
    expected = [[5, 6, 0], [8, 9, 0], [0, 0, 0]]
    # Extra row/column at the top/left would give x itself: [[1, 2, 3], [4, 5, 6], [7, 8, 9]].
    np.testing.assert_array_equal(got, expected, err_msg="'same' with a 2x2 kernel: extra pad must "
                                                         "go bottom/right")
    # Only the top-left tap: the output is the input, unshifted.
    np.testing.assert_array_equal(conv_probe(x, [[1, 0], [0, 0]], padding="same")[0], x)


def test_same_padding_non_square_even_kernel():
    x = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    # (2, 1) kernel, bottom tap: rows shift up, a zero row at the bottom, columns untouched.
    got = conv_probe(x, [[0], [1]], padding="same")[0]
    np.testing.assert_array_equal(got, [[4, 5, 6], [7, 8, 9], [0, 0, 0]])


def test_recurrent_same_padding_even_kernel_pads_bottom_right():
    x = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    br = [[0, 0], [0, 1]]
    # Step 1 shifts x up-left; step 2 has zero input, so h2 = the recurrent conv of h1,
    # shifted once more (the shut forget gate leaves ~1e-26 of c1).
    seq = conv_probe(x, br, rec_taps=br, steps=[np.array(x, float), np.zeros((3, 3))],
                     padding="same")
    np.testing.assert_array_equal(seq[0], [[5, 6, 0], [8, 9, 0], [0, 0, 0]])
    np.testing.assert_allclose(seq[1], [[9, 0, 0], [0, 0, 0], [0, 0, 0]], rtol=0, atol=1e-12,
                               err_msg="recurrent conv: extra pad must go bottom/right")


def test_recurrent_conv_is_same_even_with_valid_input_padding():
    x = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    br = [[0, 0], [0, 1]]
    # Valid input conv: h1 is 2x2 [[5, 6], [8, 9]]; the recurrent conv keeps 2x2, shifting once.
    seq = conv_probe(x, br, rec_taps=br, steps=[np.array(x, float), np.zeros((3, 3))],
                     padding="valid")
    np.testing.assert_array_equal(seq[0], [[5, 6], [8, 9]])
    np.testing.assert_allclose(seq[1], [[9, 0], [0, 0]], rtol=0, atol=1e-12)


def test_strides_2_valid():
    got = conv_probe(X5, TAPS, padding="valid", strides=2)[0]
    # out(r, c) = x(2r, 2c) + 10 x(2r, 2c+1) + 100 x(2r+1, 2c) + 1000 x(2r+1, 2c+1)
    # (0, 0): 0 + 10*1 + 100*5 + 1000*6 = 6510;   (0, 1): 2 + 10*3 + 100*7 + 1000*8 = 8732
    # (1, 0): 10 + 10*11 + 100*15 + 1000*16 = 17620; (1, 1): 12 + 130 + 1700 + 18000 = 19842
    np.testing.assert_array_equal(got, [[6510, 8732], [17620, 19842]])


def test_strides_2_same_pads_bottom_right():
    got = conv_probe(X5, TAPS, padding="same", strides=2)[0]
    # ceil(5/2) = 3 outputs; total pad (3-1)*2 + 2 - 5 = 1 goes after: the last row and
    # column of outputs see x(4, .) and x(., 4) with zeros beyond.
    # (0, 2): x(0,4) + 100 x(1,4) = 4 + 900;   (1, 2): 14 + 100*19 = 1914
    # (2, 0): x(4,0) + 10 x(4,1) = 20 + 210;   (2, 1): 22 + 230 = 252;   (2, 2): 24
    np.testing.assert_array_equal(got, [[6510, 8732, 904], [17620, 19842, 1914], [230, 252, 24]])


def test_non_square_strides():
    got = conv_probe(X5, TAPS, padding="valid", strides=[2, 1])[0]
    # Stride 2 down the rows only: floor((5-2)/2)+1 = 2 rows, 5-2+1 = 4 columns;
    # out(r, c) = x(2r,c) + 10 x(2r,c+1) + 100 x(2r+1,c) + 1000 x(2r+1,c+1).
    def X(r, c):
        return X5[r][c]
    expected = [[X(2 * r, c) + 10 * X(2 * r, c + 1) + 100 * X(2 * r + 1, c) + 1000 * X(2 * r + 1, c + 1)
                 for c in range(4)] for r in range(2)]
    assert expected[0][0] == 6510 and expected[1][3] == 1111 * 13 + 6510
    np.testing.assert_array_equal(got, expected)


def test_dilation_2_valid():
    got = conv_probe(X5, TAPS, padding="valid", dilation_rate=2)[0]
    # Effective kernel 3: out(r, c) = x(r,c) + 10 x(r,c+2) + 100 x(r+2,c) + 1000 x(r+2,c+2)
    #                               = 1111 (5r + c) + 20 + 1000 + 12000
    np.testing.assert_array_equal(got, [[13020, 14131, 15242],
                                        [18575, 19686, 20797],
                                        [24130, 25241, 26352]])


def test_dilation_2_same():
    got = conv_probe(X5, TAPS, padding="same", dilation_rate=2)[0]
    # Total pad (k-1)*d + 1 - 1 = 2: one row/column each side, so the taps sit at
    # (r-1, c-1), (r-1, c+1), (r+1, c-1), (r+1, c+1), zero outside the input.
    def X(r, c):
        return X5[r][c] if 0 <= r < 5 and 0 <= c < 5 else 0
    expected = [[X(r - 1, c - 1) + 10 * X(r - 1, c + 1) + 100 * X(r + 1, c - 1) + 1000 * X(r + 1, c + 1)
                 for c in range(5)] for r in range(5)]
    assert expected[0][0] == 1000 * 6 and expected[2][2] == 6 + 80 + 1600 + 18000
    np.testing.assert_array_equal(got, expected)


def test_strides_and_dilation_together_are_refused():
    with pytest.raises(ValueError, match=r"strides > 1 is incompatible with dilation_rate > 1"):
        conv_probe(X5, TAPS, strides=2, dilation_rate=2)


@pytest.mark.parametrize("config, shape", [
    ({"padding": "valid"}, (4, 4)),
    ({"padding": "same"}, (5, 5)),
    ({"padding": "valid", "strides": 2}, (2, 2)),
    ({"padding": "same", "strides": 2}, (3, 3)),
    ({"padding": "same", "strides": 3}, (2, 2)),
    ({"padding": "valid", "strides": 3}, (2, 2)),
    ({"padding": "valid", "dilation_rate": 2}, (3, 3)),
    ({"padding": "valid", "dilation_rate": [1, 4]}, (4, 1)),
    ({"padding": "SAME", "dilation_rate": 3}, (5, 5)),
])
def test_output_sizes(config, shape):
    # valid: floor((5 - d(2-1) - 1) / s) + 1; same: ceil(5 / s).
    got = conv_probe(X5, TAPS, **config).shape[1:]
    assert got == shape, f"{config}: expected {shape}, got {got}"


# --------------------------------------------------------------------------
# go_backwards, mask, data_format, use_bias


def test_go_backwards_equals_forward_on_reversed_time():
    base = random_case(T=5, return_sequences=True)
    back = random_case(T=5, return_sequences=True, go_backwards=True)
    rev = random_case(T=5, return_sequences=True)
    rev.inputs = base.inputs[:, ::-1].copy()
    r_back, r_rev, r_fwd = forward(back), forward(rev), forward(base)
    # Outputs come in processing order: the reversed sequence.
    np.testing.assert_array_equal(r_back.output, r_rev.output)
    np.testing.assert_array_equal(r_back.h, r_rev.h)
    np.testing.assert_array_equal(r_back.c, r_rev.c)
    assert [s.t for s in r_back.trace.steps] == [4, 3, 2, 1, 0]
    assert not np.allclose(r_back.output, r_fwd.output), "go_backwards had no effect"


def test_go_backwards_last_output_is_the_first_input_step_processed_last():
    res = forward(scalar_case(XS, W_, U_, B_, go_backwards=True))
    expected = hand_lstm(XS[::-1], W_, U_, B_)
    assert res.output.item() == pytest.approx(expected[-1][0], rel=1e-13, abs=0)


def test_mask_carries_state_and_repeats_output():
    xs = [[0.5, -1.0, 2.0, 0.25], [1.5, 0.3, -0.7, 0.9]]
    mask = [[True, False, True, False], [False, False, True, True]]
    res = forward(scalar_case(xs, W_, U_, B_, mask=mask, return_sequences=True))
    out = res.output[:, :, 0, 0, 0]
    # Sample 0 runs on steps 0 and 2 only; the masked steps repeat the previous output.
    (h_a, _), (h_b, c_b) = hand_lstm([0.5, 2.0], W_, U_, B_)
    np.testing.assert_allclose(out[0], [h_a, h_a, h_b, h_b], rtol=1e-13, atol=0, err_msg="sample 0")
    assert res.h[0].item() == pytest.approx(h_b, rel=1e-13, abs=0)
    assert res.c[0].item() == pytest.approx(c_b, rel=1e-13, abs=0)
    # Sample 1 is masked first: zeros until its first unmasked step, then steps 2 and 3.
    (h_a, _), (h_b, c_b) = hand_lstm([-0.7, 0.9], W_, U_, B_)
    np.testing.assert_allclose(out[1], [0.0, 0.0, h_a, h_b], rtol=1e-13, atol=0, err_msg="sample 1")
    assert res.c[1].item() == pytest.approx(c_b, rel=1e-13, abs=0)


def test_fully_masked_sample_keeps_its_initial_state_and_outputs_zeros():
    xs = [[0.5, -1.0, 2.0], [1.5, 0.3, -0.7]]
    mask = [[False, False, False], [True, True, True]]
    res = forward(scalar_case(xs, W_, U_, B_, h0=[0.6, 0.6], c0=[-0.8, -0.8], mask=mask,
                              return_sequences=True))
    np.testing.assert_array_equal(res.output[0, :, 0, 0, 0], [0.0, 0.0, 0.0])
    assert (res.h[0].item(), res.c[0].item()) == (0.6, -0.8), "masked steps must carry h0, c0"
    expected = hand_lstm([1.5, 0.3, -0.7], W_, U_, B_, h=0.6, c=-0.8)
    np.testing.assert_allclose(res.output[1, :, 0, 0, 0], [h for h, _ in expected], rtol=1e-13)


def test_mask_with_go_backwards_and_last_output():
    # Processing order 3, 2, 1, 0 with step 0 masked: the last output repeats step 1's.
    mask = [[False, True, True, True]]
    res = forward(scalar_case(XS, W_, U_, B_, mask=mask, go_backwards=True))
    expected = hand_lstm([XS[3], XS[2], XS[1]], W_, U_, B_)
    assert res.output.item() == pytest.approx(expected[-1][0], rel=1e-13, abs=0)
    assert res.c.item() == pytest.approx(expected[-1][1], rel=1e-13, abs=0)


def test_all_true_mask_equals_no_mask():
    case = random_case(return_sequences=True)
    with_mask = random_case(return_sequences=True)
    with_mask.mask = np.ones((2, 3), bool)
    np.testing.assert_array_equal(forward(case).output, forward(with_mask).output)


@pytest.mark.parametrize("config", [
    {"return_sequences": True},
    {"return_sequences": False},
    {"return_sequences": True, "padding": "valid", "strides": [1, 2]},
    {"return_sequences": True, "padding": "same", "dilation_rate": 2},
])
def test_channels_first_equals_channels_last_up_to_transposes(config):
    last = random_case(state=False, **config)
    first = random_case(state=False, data_format="channels_first", **config)
    first.inputs = np.transpose(last.inputs, (0, 1, 4, 2, 3)).copy()   # (B, T, C, H, W)
    r_last = forward(last)
    state_shape = r_last.h.shape
    rng = np.random.default_rng(7)
    h0, c0 = rng.normal(size=state_shape), rng.normal(size=state_shape)
    last.initial_state = (h0, c0)
    first.initial_state = (np.transpose(h0, (0, 3, 1, 2)), np.transpose(c0, (0, 3, 1, 2)))
    r_last, r_first = forward(last), forward(first)
    to_first = (0, 1, 4, 2, 3) if r_last.output.ndim == 5 else (0, 3, 1, 2)
    np.testing.assert_allclose(r_first.output, np.transpose(r_last.output, to_first), rtol=1e-14, atol=0)
    np.testing.assert_allclose(r_first.h, np.transpose(r_last.h, (0, 3, 1, 2)), rtol=1e-14, atol=0)
    np.testing.assert_allclose(r_first.c, np.transpose(r_last.c, (0, 3, 1, 2)), rtol=1e-14, atol=0)
    assert r_first.h.shape[1] == last.filters, f"channels_first state is (B, F, H, W): {r_first.h.shape}"


def test_use_bias_false_equals_zero_bias():
    zero = random_case(return_sequences=True)
    zero.bias = np.zeros_like(zero.bias)
    nobias = random_case(return_sequences=True, use_bias=False)
    nobias.bias = None
    r_zero, r_nobias = forward(zero), forward(nobias)
    np.testing.assert_array_equal(r_nobias.output, r_zero.output)
    np.testing.assert_array_equal(r_nobias.c, r_zero.c)
    assert not np.allclose(forward(random_case(return_sequences=True)).output, r_zero.output), \
        "the random bias should matter, or this test proves nothing"


def test_use_bias_false_ignores_a_given_bias():
    nobias = random_case(return_sequences=True, use_bias=False)
    zero = random_case(return_sequences=True)
    zero.bias = np.zeros_like(zero.bias)
    np.testing.assert_array_equal(forward(nobias).output, forward(zero).output)


# --------------------------------------------------------------------------
# Activations, as Keras 3 defines them

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _softplus(x):
    return math.log1p(math.exp(-abs(x))) + max(x, 0.0)


def _hard_sigmoid(x):
    return min(max(x / 6.0 + 0.5, 0.0), 1.0)


KERAS3 = {
    "tanh": math.tanh,
    "sigmoid": sigmoid,
    "hard_sigmoid": _hard_sigmoid,
    "relu": lambda x: max(x, 0.0),
    "relu6": lambda x: min(max(x, 0.0), 6.0),
    "leaky_relu": lambda x: x if x >= 0 else 0.2 * x,
    "elu": lambda x: x if x > 0 else math.exp(x) - 1.0,
    "selu": lambda x: SELU_SCALE * (x if x > 0 else SELU_ALPHA * (math.exp(x) - 1.0)),
    "celu": lambda x: x if x >= 0 else math.exp(x) - 1.0,
    "softplus": _softplus,
    "softsign": lambda x: x / (1.0 + abs(x)),
    "squareplus": lambda x: (x + math.sqrt(x * x + 4.0)) / 2.0,
    "soft_shrink": lambda x: x - 0.5 if x > 0.5 else (x + 0.5 if x < -0.5 else 0.0),
    "hard_shrink": lambda x: x if abs(x) > 0.5 else 0.0,
    "tanh_shrink": lambda x: x - math.tanh(x),
    "hard_tanh": lambda x: min(max(x, -1.0), 1.0),
    "sparse_plus": lambda x: 0.0 if x <= -1 else (x if x >= 1 else 0.25 * (x + 1.0) ** 2),
    "sparse_sigmoid": lambda x: 0.0 if x <= -1 else (1.0 if x >= 1 else 0.5 * (x + 1.0)),
    "silu": lambda x: x * sigmoid(x),
    "swish": lambda x: x * sigmoid(x),
    "gelu": lambda x: 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0))),
    "exponential": math.exp,
    "hard_silu": lambda x: x * _hard_sigmoid(x),
    "hard_swish": lambda x: x * _hard_sigmoid(x),
    "mish": lambda x: x * math.tanh(_softplus(x)),
    "log_sigmoid": lambda x: -_softplus(-x),
    "linear": lambda x: x,
}
POINTS = [-7.0, -3.5, -3.0, -1.5, -1.0, -0.5, -0.2, 0.0, 0.3, 0.5, 1.0, 2.5, 3.0, 6.5]


def test_every_oracle_activation_has_a_hand_definition():
    assert set(ACTIVATIONS) == set(KERAS3), (
        f"no hand definition for {sorted(set(ACTIVATIONS) - set(KERAS3))}; "
        f"defined here but not in the oracle: {sorted(set(KERAS3) - set(ACTIVATIONS))}")


def test_oracle_activations_are_the_spec_domain():
    domain = set(load().arguments["activation"].domain["values"])
    assert set(ACTIVATIONS) == domain, f"oracle vs spec: {sorted(set(ACTIVATIONS) ^ domain)}"


@pytest.mark.parametrize("name", sorted(KERAS3))
def test_activation_matches_keras3_definition(name):
    got = ACTIVATIONS[name](np.array(POINTS, dtype=np.float64))
    expected = [KERAS3[name](x) for x in POINTS]
    np.testing.assert_allclose(got, expected, rtol=1e-14, atol=1e-15, err_msg=f"activation {name}")


@pytest.mark.parametrize("name, x, expected", [
    ("hard_sigmoid", 1.5, 0.75), ("hard_sigmoid", -3.0, 0.0), ("hard_sigmoid", 3.0, 1.0),
    ("hard_sigmoid", -1.2, 0.3), ("hard_sigmoid", 4.0, 1.0),
    ("leaky_relu", -2.0, -0.4), ("leaky_relu", 2.0, 2.0),
    ("relu6", 7.0, 6.0), ("relu6", -1.0, 0.0),
    ("elu", -1.0, -0.6321205588285577), ("celu", -1.0, -0.6321205588285577),
    ("selu", 1.0, 1.0507009873554805), ("selu", -1.0, -1.1113307378125628),
    ("gelu", 1.0, 0.8413447460685429), ("gelu", -1.0, -0.15865525393145707),
    ("sparse_plus", 0.0, 0.25), ("sparse_plus", 2.0, 2.0), ("sparse_plus", -2.0, 0.0),
    ("sparse_sigmoid", 0.0, 0.5), ("sparse_sigmoid", 0.5, 0.75),
    ("squareplus", 0.0, 1.0), ("softsign", 1.0, 0.5), ("softsign", -3.0, -0.75),
    ("soft_shrink", 1.0, 0.5), ("soft_shrink", -0.75, -0.25), ("soft_shrink", 0.4, 0.0),
    ("hard_shrink", 0.5, 0.0), ("hard_shrink", 0.6, 0.6), ("hard_shrink", -0.6, -0.6),
    ("hard_tanh", 2.0, 1.0), ("hard_tanh", -0.3, -0.3),
    ("hard_silu", 3.0, 3.0), ("hard_silu", 0.0, 0.0), ("hard_silu", 1.5, 1.125),
    ("softplus", 0.0, math.log(2.0)), ("log_sigmoid", 0.0, -math.log(2.0)),
    ("silu", 0.0, 0.0), ("exponential", 1.0, math.e), ("linear", -2.5, -2.5),
])
def test_activation_literal_values(name, x, expected):
    got = float(ACTIVATIONS[name](np.array([x]))[0])
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-15), f"{name}({x}): expected {expected}, got {got}"


@pytest.mark.parametrize("name", ["sigmoid", "softplus", "log_sigmoid", "silu", "mish", "tanh"])
def test_activations_stay_finite_at_large_inputs(name):
    got = ACTIVATIONS[name](np.array([-800.0, 800.0]))
    assert np.all(np.isfinite(got)), f"{name}(+-800) = {got}"


def test_activation_none_means_linear():
    case = scalar_case(XS, W_, U_, B_, activation=None, recurrent_activation=None)
    lin = scalar_case(XS, W_, U_, B_, activation="linear", recurrent_activation="linear")
    assert forward(case).h.item() == forward(lin).h.item()


def test_activations_reach_the_cell():
    # activation on the candidate and on c; recurrent_activation on i, f, o.
    w, u, b = W_, U_, B_
    res = forward(scalar_case([0.5], w, u, b, activation="relu", recurrent_activation="hard_sigmoid"))
    i, o = _hard_sigmoid(0.3 * 0.5 + 0.05), _hard_sigmoid(0.5 * 0.5)
    c = i * max(0.8 * 0.5 - 0.1, 0.0)
    assert res.c.item() == pytest.approx(c, rel=1e-14, abs=0)
    assert res.h.item() == pytest.approx(o * max(c, 0.0), rel=1e-14, abs=0)


# --------------------------------------------------------------------------
# Errors


def _state_case(h_shape, c_shape, **config) -> Case:
    rng = np.random.default_rng(3)
    case = random_case(state=False, B=1, H=5, W=5, C=1, F=2, kernel=(3, 3), **config)
    case.initial_state = (rng.normal(size=h_shape), rng.normal(size=c_shape))
    return case


@pytest.mark.parametrize("h_shape, c_shape, config", [
    ((1, 5, 5, 3), (1, 5, 5, 2), {}),                                 # wrong filters in h
    ((1, 5, 5, 2), (1, 4, 5, 2), {}),                                 # wrong rows in c
    ((1, 5, 5, 2), (1, 5, 5, 2), {"padding": "valid"}),              # valid output is 3x3
    ((2, 5, 5, 2), (2, 5, 5, 2), {}),                                 # wrong batch
    ((1, 5, 5), (1, 5, 5), {}),                                       # wrong rank
    ((1, 5, 5, 2), (1, 5, 5, 2), {"data_format": "channels_first"}),  # not transposed
])
def test_initial_state_shape_errors(h_shape, c_shape, config):
    case = _state_case(h_shape, c_shape, **config)
    if config.get("data_format") == "channels_first":
        case.inputs = np.transpose(case.inputs, (0, 1, 4, 2, 3)).copy()
    with pytest.raises(ValueError, match=r"initial_state shapes .* must both be"):
        forward(case)
    outcome = NumpyOracle().run(case)
    assert outcome.status == RAISED, outcome.summary()
    assert outcome.error.is_a("ValueError") and outcome.error.phase == CALL
    assert "initial_state" in outcome.error.message


def test_initial_state_right_shape_runs():
    case = _state_case((1, 5, 5, 2), (1, 5, 5, 2))
    assert NumpyOracle().run(case).status == OK


def test_mask_shape_error():
    case = random_case(state=False)
    case.mask = np.ones((2, 4), bool)
    with pytest.raises(ValueError, match=r"mask must have shape \(batch, timesteps\) = \(2, 3\)"):
        forward(case)


def test_oracle_refuses_a_case_without_weights():
    case = random_case()
    case.kernel = None
    outcome = NumpyOracle().run(case)
    assert outcome.status == "refused" and "weights" in outcome.detail


# --------------------------------------------------------------------------
# The judge is the strictest reader: a malformed case is refused, naming the
# array or argument, before anything is computed (nothing is broadcast).


def _with(**changes):
    """random_case (B=2, T=3, H=4, W=5, C=2, F=3, 3x2 kernel) with fields replaced."""
    def make():
        case = random_case()
        for name, value in changes.items():
            if name.startswith("config_"):
                key = name[len("config_"):]
                if value is _DROP:
                    case.config.pop(key)
                else:
                    case.config[key] = value
            else:
                setattr(case, name, value(case) if callable(value) else value)
        return case
    return make


_DROP = object()


@pytest.mark.parametrize("make, needle", [
    (_with(bias=np.zeros(1)), r"bias has shape \(1,\), expected \(4 \* filters,\) = \(12,\)"),
    (_with(bias=np.zeros((12, 1))), r"bias has shape \(12, 1\)"),
    (_with(bias=None), r"bias is missing while use_bias is true"),
    (_with(kernel=np.zeros((3, 2, 2, 11))), r"weights \(3, 2, 2, 11\), .* do not match"),
    (_with(recurrent_kernel=np.zeros((3, 2, 2, 12))), r"do not match kernel"),
    (_with(initial_state=lambda c: (c.initial_state[0][:, :3], c.initial_state[1])),
     r"initial_state shapes"),
    (_with(initial_state=lambda c: (c.initial_state[0],)), r"initial_state must be a pair"),
    (_with(mask=np.ones((2, 3))), r"mask must be boolean, got dtype float64"),
    (_with(mask=np.ones((2, 1), bool)), r"mask must have shape \(batch, timesteps\)"),
    (_with(training=True, dropout_mask=np.ones((4, 2, 4, 5, 1))),
     r"dropout_mask has shape \(4, 2, 4, 5, 1\), expected"),
    (_with(training=True, recurrent_dropout_mask=np.ones((4, 2, 4, 5, 1))),
     r"recurrent_dropout_mask has shape"),
    (_with(training=1), r"training must be true or false"),
    (_with(cotangent=np.ones((2, 4, 5, 2))), r"cotangent has shape \(2, 4, 5, 2\), expected"),
    (_with(inputs=lambda c: np.where(np.arange(c.inputs.size).reshape(c.inputs.shape) == 7,
                                     np.nan, c.inputs)),
     r"inputs holds 1 NaN or infinite value\(s\), the first at \(0, 0, 0, 3, 1\)"),
    (_with(kernel=lambda c: c.kernel * np.inf), r"kernel holds \d+ NaN or infinite"),
    (_with(inputs=lambda c: c.inputs + 1j), r"inputs must hold real numbers, got dtype complex"),
    (_with(bias=np.array(["a"] * 12)), r"bias must hold real numbers, got dtype <U1"),
    (_with(inputs=lambda c: c.inputs[:, :0]), r"empty dimension \(0 time steps"),
    (_with(inputs=lambda c: c.inputs[0]), r"inputs must be 5-D"),
    (_with(dtype="float8"), r"dtype 'float8' is not one of float64, float32"),
    (_with(masking_value=float("nan")), r"masking_value must be a finite number"),
    (_with(config_filters=_DROP), r"config has no 'filters'"),
    (_with(config_kernel_size=_DROP), r"config has no 'kernel_size'"),
    (_with(config_filters=True), r"filters must be a positive integer, got True"),
    (_with(config_filters=3.0), r"filters must be a positive integer, got 3.0"),
    (_with(config_filters="3"), r"filters must be a positive integer, got '3'"),
    (_with(config_kernel_size=[3.5, 2]), r"kernel_size must be an integer or a pair"),
    (_with(config_kernel_size=[3, 2, 1]), r"kernel_size: expected 2 values"),
    (_with(config_strides="1"), r"strides must be an integer or a pair"),
    (_with(config_padding=1), r"padding must be 'valid' or 'same'"),
    (_with(config_data_format="NHWC"), r"data_format must be 'channels_last' or"),
    (_with(config_activation=7), r"activation must be an activation name"),
    (_with(config_use_bias="yes"), r"use_bias must be true or false"),
    (_with(config_return_sequences=1), r"return_sequences must be true or false"),
])
def test_malformed_cases_are_refused_naming_what_is_wrong(make, needle):
    with pytest.raises(ValueError, match=needle):
        forward(make())


def test_a_well_formed_case_of_the_malformed_family_runs():
    # The family above differs from this one case in one field each.
    assert forward(_with()()).output.shape == (2, 4, 5, 3)


def test_the_oracle_adapter_reports_a_malformed_case_as_raised():
    outcome = NumpyOracle().run(_with(bias=np.zeros(1))())
    assert outcome.status == RAISED and "bias has shape (1,)" in outcome.error.message
