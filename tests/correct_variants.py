"""ConvLSTM2D written correctly in several different ways (NumPy, SciPy).

Each variant computes the same function by a different evaluation: one
convolution over the concatenation of input and state, eight per-gate
convolutions, float64 throughout, a time-major loop with the input
projections hoisted out of it, im2col with one matrix product, convolution
by FFT, and other formulas for the activations.  None may ever be flagged:
they exercise the tolerance model with rounding orders the oracle never
uses, so a false alarm here is a budget that is too tight.

The call semantics (masks, states, go_backwards, stateful follow-up calls,
dropout) are shared by :class:`NumpyConvLSTM`; the variants differ in the
arithmetic (``preactivation``, activations, precision) and, for the
time-major one, in the loop.  Arrays are channels_last inside.

    pytest conformance --adapters "" --adapter-object tests.correct_variants:make.fft
"""
from __future__ import annotations

import functools
import time
import types

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from convlstm_conformance.features import Capabilities, activations, required_features
from convlstm_conformance.model import CALL, OK, RAISED, REFUSED, Adapter, Case, ErrorInfo, Outcome


def _pair(v) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (list, tuple)) else (int(v), int(v))


def _same_pads(n: int, k: int, s: int, d: int) -> tuple[int, int]:
    out = -(-n // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
    return total // 2, total - total // 2


# --------------------------------------------------------------------------
# Activations, dtype-preserving (NumPy 2 keeps float32 with Python scalars).

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _sigmoid(x):
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


def _softplus(x):
    return np.logaddexp(x, 0 * x)


def _erf(x):
    from scipy.special import erf
    return erf(x)


ACTIVATIONS = {
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "hard_sigmoid": lambda x: np.clip(x + 3, 0, 6) / 6,
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.clip(x, 0, 6),
    "leaky_relu": lambda x: np.where(x >= 0, x, 0.2 * x),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
    "selu": lambda x: _SELU_SCALE * np.where(x > 0, x, _SELU_ALPHA * np.expm1(np.minimum(x, 0))),
    "celu": lambda x: np.where(x >= 0, x, np.expm1(np.minimum(x, 0))),
    "softplus": _softplus,
    "softsign": lambda x: x / (1 + np.abs(x)),
    "squareplus": lambda x: (x + np.sqrt(x * x + 4)) / 2,
    "soft_shrink": lambda x: np.where(x > 0.5, x - 0.5, np.where(x < -0.5, x + 0.5, 0 * x)),
    "hard_shrink": lambda x: np.where(np.abs(x) > 0.5, x, 0 * x),
    "tanh_shrink": lambda x: x - np.tanh(x),
    "hard_tanh": lambda x: np.clip(x, -1, 1),
    "sparse_plus": lambda x: np.where(x <= -1, 0 * x, np.where(x >= 1, x, 0.25 * (x + 1) ** 2)),
    "sparse_sigmoid": lambda x: np.clip(0.5 * (x + 1), 0, 1),
    "silu": lambda x: x * _sigmoid(x),
    "swish": lambda x: x * _sigmoid(x),
    "gelu": lambda x: 0.5 * x * (1 + _erf(x / np.sqrt(2.0))),
    "exponential": np.exp,
    "hard_silu": lambda x: x * np.clip(x + 3, 0, 6) / 6,
    "hard_swish": lambda x: x * np.clip(x + 3, 0, 6) / 6,
    "mish": lambda x: x * np.tanh(_softplus(x)),
    "log_sigmoid": lambda x: -_softplus(-x),
    "linear": lambda x: x,
}


def _erfc(x):
    from scipy.special import erfc
    return erfc(x)


def _sigmoid_by_tanh(x):
    return 0.5 * np.tanh(0.5 * x) + 0.5


#: The same functions by other formulas: each rounds differently.
ALTERNATIVE_ACTIVATIONS = {
    **ACTIVATIONS,
    "sigmoid": _sigmoid_by_tanh,
    "tanh": lambda x: 2 * _sigmoid(2 * x) - 1,
    "hard_sigmoid": lambda x: np.minimum(np.maximum(x / 6 + 0.5, 0), 1),
    "relu": lambda x: x * (x > 0),
    "elu": lambda x: np.where(x > 0, x, np.exp(np.minimum(x, 0)) - 1),
    "softplus": lambda x: np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x))),
    "softsign": lambda x: np.sign(x) * (1 - 1 / (1 + np.abs(x))),
    "silu": lambda x: x * _sigmoid_by_tanh(x),
    "swish": lambda x: x / (1 + np.exp(-np.clip(x, -80, 80))),
    "gelu": lambda x: 0.5 * x * _erfc(-x / np.sqrt(2.0)),
    "log_sigmoid": lambda x: np.minimum(x, 0) - np.log1p(np.exp(-np.abs(x))),
    "sparse_sigmoid": lambda x: np.minimum(np.maximum(0.5 * x + 0.5, 0), 1),
    "hard_tanh": lambda x: np.minimum(np.maximum(x, -1), 1),
}


# --------------------------------------------------------------------------
# Convolutions: x (N, H, W, C), w (kh, kw, C, O), pads ((top, bottom), (left, right)).


def _out_size(n: int, k: int, s: int, d: int) -> int:
    return (n - d * (k - 1) - 1) // s + 1


def conv_taps(x, w, strides=(1, 1), dilation=(1, 1), pads=((0, 0), (0, 0))):
    """A sum over kernel taps of shifted slices times the tap's matrix."""
    xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    kh, kw = w.shape[:2]
    (sh, sw), (dh, dw) = strides, dilation
    oh, ow = _out_size(xp.shape[1], kh, sh, dh), _out_size(xp.shape[2], kw, sw, dw)
    out = np.zeros((x.shape[0], oh, ow, w.shape[3]), dtype=x.dtype)
    for a in range(kh):
        for b in range(kw):
            out += xp[:, a * dh: a * dh + (oh - 1) * sh + 1: sh,
                      b * dw: b * dw + (ow - 1) * sw + 1: sw, :] @ w[a, b]
    return out


def conv_windows(x, w, strides=(1, 1), dilation=(1, 1), pads=((0, 0), (0, 0))):
    """Sliding windows contracted with the kernel in one tensordot."""
    xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    kh, kw = w.shape[:2]
    (sh, sw), (dh, dw) = strides, dilation
    win = sliding_window_view(xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(1, 2))
    win = win[:, ::sh, ::sw, :, ::dh, ::dw]              # (N, oh, ow, C, kh, kw)
    return np.tensordot(win, w.transpose(2, 0, 1, 3), axes=([3, 4, 5], [0, 1, 2]))


def conv_im2col(x, w, strides=(1, 1), dilation=(1, 1), pads=((0, 0), (0, 0))):
    """im2col, then one matrix product for every output channel."""
    xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    N, _, _, C = xp.shape
    kh, kw, _, O = w.shape
    (sh, sw), (dh, dw) = strides, dilation
    oh, ow = _out_size(xp.shape[1], kh, sh, dh), _out_size(xp.shape[2], kw, sw, dw)
    cols = np.empty((N, oh, ow, kh, kw, C), dtype=x.dtype)
    for a in range(kh):
        for b in range(kw):
            cols[:, :, :, a, b, :] = xp[:, a * dh: a * dh + (oh - 1) * sh + 1: sh,
                                        b * dw: b * dw + (ow - 1) * sw + 1: sw, :]
    return (cols.reshape(N * oh * ow, -1) @ w.reshape(-1, O)).reshape(N, oh, ow, O)


def conv_fft(x, w, strides=(1, 1), dilation=(1, 1), pads=((0, 0), (0, 0))):
    """Circular cross-correlation by FFT over the padded frame; the positions
    a valid correlation keeps never wrap.  float32 stays complex64."""
    import scipy.fft
    xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    N, Hp, Wp, C = xp.shape
    kh, kw, _, O = w.shape
    (sh, sw), (dh, dw) = strides, dilation
    kd = np.zeros((Hp, Wp, C, O), dtype=x.dtype)
    kd[: (kh - 1) * dh + 1: dh, : (kw - 1) * dw + 1: dw] = w
    X = scipy.fft.rfft2(xp, axes=(1, 2))
    Kf = np.conj(scipy.fft.rfft2(kd, axes=(0, 1)))
    Y = np.einsum("nhwc,hwco->nhwo", X, Kf)
    y = scipy.fft.irfft2(Y, s=(Hp, Wp), axes=(1, 2)).astype(x.dtype, copy=False)
    oh, ow = _out_size(Hp, kh, sh, dh), _out_size(Wp, kw, sw, dw)
    return np.ascontiguousarray(y[:, : (oh - 1) * sh + 1: sh, : (ow - 1) * sw + 1: sw])


# --------------------------------------------------------------------------
# The shared call semantics


@functools.lru_cache(maxsize=None)
def capabilities() -> Capabilities:
    names = activations() | {None}
    return Capabilities(activation=names, recurrent_activation=names,
                        dtype=frozenset({"float32", "float64"}), mask=True, masking_layer=True,
                        initial_state=True, stateful=True, go_backwards=True, dropout=True,
                        dropout_injection=True)


class Params:
    """A case's configuration and weights, in the compute dtype."""

    def __init__(self, case: Case, dtype):
        cfg = case.config
        self.F = int(cfg["filters"])
        self.kh, self.kw = _pair(cfg["kernel_size"])
        self.strides = _pair(cfg.get("strides", 1))
        self.dilation = _pair(cfg.get("dilation_rate", 1))
        self.padding = str(cfg.get("padding", "valid")).lower()
        self.backwards = bool(cfg.get("go_backwards", False))
        self.sequences = bool(cfg.get("return_sequences", False))
        self.act_name = cfg.get("activation", "tanh") or "linear"
        self.ract_name = cfg.get("recurrent_activation", "sigmoid") or "linear"
        self.rates = (float(cfg.get("dropout", 0.0) or 0.0),
                      float(cfg.get("recurrent_dropout", 0.0) or 0.0))
        self.dtype = dtype
        self.K = np.asarray(case.kernel, dtype=dtype)
        self.U = np.asarray(case.recurrent_kernel, dtype=dtype)
        self.b = (np.asarray(case.bias, dtype=dtype) if cfg.get("use_bias", True)
                  else np.zeros(4 * self.F, dtype=dtype))

    def input_pads(self, H: int, W: int):
        if self.padding == "valid":
            return (0, 0), (0, 0)
        return (_same_pads(H, self.kh, self.strides[0], self.dilation[0]),
                _same_pads(W, self.kw, self.strides[1], self.dilation[1]))

    def output_size(self, H: int, W: int) -> tuple[int, int]:
        (pt, pb), (pl, pr) = self.input_pads(H, W)
        return (_out_size(H + pt + pb, self.kh, self.strides[0], self.dilation[0]),
                _out_size(W + pl + pr, self.kw, self.strides[1], self.dilation[1]))

    def state_pads(self, Ho: int, Wo: int):
        return _same_pads(Ho, self.kh, 1, 1), _same_pads(Wo, self.kw, 1, 1)


class NumpyConvLSTM(Adapter):
    """The call semantics; subclasses give the arithmetic."""

    name = "numpy-variant"
    activation_table = ACTIVATIONS

    def capabilities(self) -> Capabilities:
        return capabilities()

    def compute_dtype(self, case: Case):
        return np.dtype(case.dtype)

    # -- the arithmetic subclasses change ------------------------------
    def preactivation(self, p: Params, xt, h, dm, rm):
        """z (B, H', W', 4F) of one step, gate order i, f, c, o."""
        raise NotImplementedError

    def step(self, p: Params, z, c):
        act, ract = self.activation_table[p.act_name], self.activation_table[p.ract_name]
        F = p.F
        i, f, o = ract(z[..., :F]), ract(z[..., F:2 * F]), ract(z[..., 3 * F:])
        c_new = f * c + i * act(z[..., 2 * F:3 * F])
        return o * act(c_new), c_new

    # -- one call --------------------------------------------------------
    def call(self, p: Params, x, init, mask, dm, rm):
        """x (B, T, H, W, C) -> (output, h, c), channels_last."""
        B, T, H, W, _ = x.shape
        Ho, Wo = p.output_size(H, W)
        zeros = np.zeros((B, Ho, Wo, p.F), dtype=p.dtype)
        h, c = (zeros, zeros) if init is None else init
        prev, outs = zeros, []
        for t in (range(T - 1, -1, -1) if p.backwards else range(T)):
            h_new, c_new = self.step(p, self.preactivation(p, x[:, t], h, dm, rm), c)
            if mask is None:
                h, c, prev = h_new, c_new, h_new
            else:
                on = mask[:, t][:, None, None, None]
                h, c = np.where(on, h_new, h), np.where(on, c_new, c)
                prev = np.where(on, h_new, prev)
            outs.append(prev)
        return (np.stack(outs, 1) if p.sequences else outs[-1]), h, c

    # -- the adapter -----------------------------------------------------
    def run(self, case: Case) -> Outcome:
        start = time.perf_counter()
        missing = self.capabilities().missing(required_features(case))
        if missing:
            return Outcome(status=REFUSED, detail=f"outside capabilities: {missing}")
        if case.kernel is None or case.recurrent_kernel is None or (
                case.config.get("use_bias", True) and case.bias is None):
            return Outcome(status=REFUSED, detail="no initializers: the case must carry weights")
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                outputs, followups = self._run(case)
        except ValueError as exc:
            return Outcome(status=RAISED, error=ErrorInfo.from_exception(exc, CALL),
                           duration_s=time.perf_counter() - start)
        return Outcome(status=OK, outputs=[o.astype(np.float64) for o in outputs],
                       structure="list" if len(outputs) > 1 else "tensor",
                       dtypes=[str(o.dtype) for o in outputs],
                       followup_outputs=[[o.astype(np.float64) for o in f] for f in followups],
                       duration_s=time.perf_counter() - start)

    def _run(self, case: Case):
        dt = self.compute_dtype(case)
        p = Params(case, dt)
        cfg = case.config
        cf = cfg.get("data_format") == "channels_first"
        seq_in = (lambda a: np.moveaxis(a, 2, -1)) if cf else (lambda a: a)
        st_in = (lambda a: np.moveaxis(a, 1, -1)) if cf else (lambda a: a)
        seq_out = (lambda a: np.moveaxis(a, -1, 2)) if cf else (lambda a: a)
        st_out = (lambda a: np.moveaxis(a, -1, 1)) if cf else (lambda a: a)
        rng = np.random.default_rng(cfg.get("seed"))
        state_return = bool(cfg.get("return_state", False))

        def masks(x):
            B, _, H, W, C = x.shape
            if case.training and (case.dropout_mask is not None
                                  or case.recurrent_dropout_mask is not None):
                return tuple(None if m is None else np.asarray(m, dtype=dt)
                             for m in (case.dropout_mask, case.recurrent_dropout_mask))
            if case.training and max(p.rates) > 0:
                Ho, Wo = p.output_size(H, W)
                return tuple(None if r == 0 else
                             np.where(rng.random((4,) + s) >= r, 1 / (1 - r), 0).astype(dt)
                             for r, s in zip(p.rates, ((B, H, W, C), (B, Ho, Wo, p.F))))
            return None, None

        def one(inputs, init, mask):
            x = seq_in(np.asarray(inputs, dtype=dt))
            state = None if init is None else tuple(st_in(np.asarray(s, dtype=dt)) for s in init)
            out, h, c = self.call(p, x, state, mask, *masks(x))
            out = seq_out(out) if p.sequences else st_out(out)
            got = [out, st_out(h), st_out(c)] if state_return else [out]
            # Results in the case's dtype, whatever the compute dtype.
            return [a.astype(case.dtype) for a in got], (h, c)

        mask = case.mask
        if case.masking_value is not None:
            x = np.asarray(case.inputs)
            mask = (x != case.masking_value).reshape(x.shape[0], x.shape[1], -1).any(axis=-1)
        outputs, carried = one(case.inputs, case.initial_state, mask)
        followups = []
        for call in case.followups:
            if call.initial_state is not None:
                init = call.initial_state
            elif call.reset or not cfg.get("stateful", False):
                init = None
            else:
                init = tuple(st_out(s) for s in carried)
            got, carried = one(call.inputs, init, None)
            followups.append(got)
        return outputs, followups


# --------------------------------------------------------------------------
# The variants


class ConcatConv(NumpyConvLSTM):
    """One convolution over [x_t, h] with [kernel; recurrent_kernel] stacked
    along the input channels, wherever the input convolution has the
    recurrent one's geometry (stride 1, no dilation, 'same'); two otherwise."""

    name = "variant-concat"

    def preactivation(self, p, xt, h, dm, rm):
        fused = p.padding == "same" and p.strides == (1, 1) and p.dilation == (1, 1)
        F = p.F
        if fused:
            pads = p.state_pads(*h.shape[1:3])
            W = np.concatenate([p.K, p.U], axis=2)
            if dm is None and rm is None:
                return conv_taps(np.concatenate([xt, h], -1), W, pads=pads) + p.b
            # Per-gate masks: one fused convolution per gate.
            parts = []
            for g in range(4):
                xg = xt if dm is None else xt * dm[g]
                hg = h if rm is None else h * rm[g]
                parts.append(conv_taps(np.concatenate([xg, hg], -1), W[..., g * F:(g + 1) * F],
                                       pads=pads))
            return np.concatenate(parts, -1) + p.b
        pads = p.input_pads(*xt.shape[1:3])
        zs = []
        for g in range(4):
            sl = slice(g * F, (g + 1) * F)
            xg = xt if dm is None else xt * dm[g]
            hg = h if rm is None else h * rm[g]
            zs.append(conv_taps(xg, p.K[..., sl], p.strides, p.dilation, pads)
                      + conv_taps(hg, p.U[..., sl], pads=p.state_pads(*h.shape[1:3])))
        return np.concatenate(zs, -1) + p.b


class PerGateConvs(NumpyConvLSTM):
    """Eight convolutions: input and recurrent, one per gate, by sliding windows."""

    name = "variant-per-gate"

    def preactivation(self, p, xt, h, dm, rm):
        F = p.F
        zs = []
        for g in range(4):
            sl = slice(g * F, (g + 1) * F)
            xg = xt if dm is None else xt * dm[g]
            hg = h if rm is None else h * rm[g]
            zx = conv_windows(xg, p.K[..., sl], p.strides, p.dilation,
                              p.input_pads(*xt.shape[1:3])) + p.b[sl]
            zs.append(zx + conv_windows(hg, p.U[..., sl], pads=p.state_pads(*h.shape[1:3])))
        return np.concatenate(zs, -1)


def _two_convs(conv, p, xt, h, dm, rm):
    """Input and recurrent convolutions for all gates at once where no
    dropout mask tells the gates apart, per gate otherwise."""
    xpads, hpads = p.input_pads(*xt.shape[1:3]), p.state_pads(*h.shape[1:3])
    if dm is None and rm is None:
        return (conv(xt, p.K, p.strides, p.dilation, xpads) + p.b
                + conv(h, p.U, pads=hpads))
    F = p.F
    return np.concatenate([
        conv(xt if dm is None else xt * dm[g], p.K[..., g * F:(g + 1) * F], p.strides,
             p.dilation, xpads)
        + conv(h if rm is None else h * rm[g], p.U[..., g * F:(g + 1) * F], pads=hpads)
        for g in range(4)], -1) + p.b


class Float64Compute(NumpyConvLSTM):
    """Everything in float64, the results rounded to the case's dtype once."""

    name = "variant-float64"

    def compute_dtype(self, case):
        return np.dtype(np.float64)

    def preactivation(self, p, xt, h, dm, rm):
        return _two_convs(conv_taps, p, xt, h, dm, rm)


class Im2colGemm(NumpyConvLSTM):
    """im2col and one GEMM per convolution, every gate in it."""

    name = "variant-im2col"

    def preactivation(self, p, xt, h, dm, rm):
        return _two_convs(conv_im2col, p, xt, h, dm, rm)


class FFTConv(NumpyConvLSTM):
    """Both convolutions by FFT (SciPy, single precision for float32)."""

    name = "variant-fft"

    def preactivation(self, p, xt, h, dm, rm):
        return _two_convs(conv_fft, p, xt, h, dm, rm)


class AlternativeActivations(NumpyConvLSTM):
    """Other formulas for the activations: sigmoid by tanh, tanh by sigmoid,
    softplus by log1p, gelu by erfc, ..."""

    name = "variant-alt-activations"
    activation_table = ALTERNATIVE_ACTIVATIONS

    def preactivation(self, p, xt, h, dm, rm):
        return _two_convs(conv_windows, p, xt, h, dm, rm)


class TimeMajor(NumpyConvLSTM):
    """A time-major loop: inputs as (T, B, ...), every step's input
    projection computed before the loop in one convolution over T*B frames
    (per gate where dropout masks differ), outputs written into a
    preallocated (T, B, ...) buffer at their processing position."""

    name = "variant-time-major"

    def call(self, p, x, init, mask, dm, rm):
        B, T, H, W, C = x.shape
        F = p.F
        xs = np.ascontiguousarray(np.swapaxes(x, 0, 1))          # (T, B, H, W, C)
        pads = p.input_pads(H, W)
        if dm is None:
            zx = conv_im2col(xs.reshape(T * B, H, W, C), p.K, p.strides, p.dilation, pads)
        else:
            zx = np.concatenate([conv_im2col((xs * dm[g]).reshape(T * B, H, W, C),
                                             p.K[..., g * F:(g + 1) * F], p.strides,
                                             p.dilation, pads) for g in range(4)], -1)
        Ho, Wo = zx.shape[1:3]
        zx = (zx + p.b).reshape(T, B, Ho, Wo, 4 * F)
        hpads = p.state_pads(Ho, Wo)
        h = np.zeros((B, Ho, Wo, F), p.dtype) if init is None else init[0]
        c = np.zeros((B, Ho, Wo, F), p.dtype) if init is None else init[1]
        out = np.zeros((T, B, Ho, Wo, F), p.dtype)
        last = np.zeros((B, Ho, Wo, F), p.dtype)
        steps = range(T - 1, -1, -1) if p.backwards else range(T)
        for k, t in enumerate(steps):
            if rm is None:
                zh = conv_taps(h, p.U, pads=hpads)
            else:
                zh = np.concatenate([conv_taps(h * rm[g], p.U[..., g * F:(g + 1) * F],
                                               pads=hpads) for g in range(4)], -1)
            h_new, c_new = self.step(p, zx[t] + zh, c)
            if mask is not None:
                on = mask[:, t][:, None, None, None]
                h_new, c_new = np.where(on, h_new, h), np.where(on, c_new, c)
                last = np.where(on, h_new, last)
            else:
                last = h_new
            h, c = h_new, c_new
            out[k] = last
        return (np.swapaxes(out, 0, 1) if p.sequences else out[T - 1]), h, c


VARIANTS = {"concat": ConcatConv, "per_gate": PerGateConvs, "float64": Float64Compute,
            "time_major": TimeMajor, "im2col": Im2colGemm, "fft": FFTConv,
            "alt_activations": AlternativeActivations}

#: Adapter objects for ``--adapter-object tests.correct_variants:make.NAME``.
make = types.SimpleNamespace(**VARIANTS)


def object_path(name: str) -> str:
    """What ``--adapter-object`` takes for a variant."""
    return f"tests.correct_variants:make.{name}"
