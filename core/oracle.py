"""The float64 NumPy oracle: ConvLSTM2D written straight from the spec's equations.

Clauses implemented here, in ``specs/convlstm2d.yaml``: SEM-STEP (gate order i, f,
c, o), SEM-RECURRENT-CONV (stride 1, same, no dilation, no bias), SHAPE-VALID and
SHAPE-SAME with TF/XLA placement of odd padding (extra row/column bottom/right),
SEM-GO-BACKWARDS, SEM-MASK, SEM-INITIAL-STATE, SEM-DROPOUT (injected masks only).

It shares no code with any other implementation: the convolution is a plain sum
over kernel offsets, the time loop is literal.  Clarity beats speed here.

Besides the outputs it records a per-step *trace* (pre-activations, the
magnitude sum |W||x| + |U||h| + |b| of every pre-activation, gate values and
states), from which ``tolerance.py`` derives the error budget of a
lower-precision implementation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from convlstm_conformance.model import DTYPES, Case

# --------------------------------------------------------------------------
# Activations, as Keras 3 defines them (keras/src/activations/activations.py).


def _sigmoid(x):
    # Split by sign so exp never overflows.
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def _softplus(x):
    return np.logaddexp(0.0, x)


def _erf(x):
    from scipy.special import erf  # a dependency of jax; keeps erf exact in float64
    return erf(x)


_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946

ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "hard_sigmoid": lambda x: np.clip(x + 3.0, 0.0, 6.0) / 6.0,
    "relu": lambda x: np.maximum(x, 0.0),
    "relu6": lambda x: np.clip(x, 0.0, 6.0),
    "leaky_relu": lambda x: np.where(x >= 0, x, 0.2 * x),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
    "selu": lambda x: _SELU_SCALE * np.where(x > 0, x, _SELU_ALPHA * np.expm1(np.minimum(x, 0.0))),
    "celu": lambda x: np.where(x >= 0, x, np.expm1(np.minimum(x, 0.0))),
    "softplus": _softplus,
    "softsign": lambda x: x / (1.0 + np.abs(x)),
    "squareplus": lambda x: (x + np.sqrt(x * x + 4.0)) / 2.0,
    "soft_shrink": lambda x: np.where(x > 0.5, x - 0.5, np.where(x < -0.5, x + 0.5, 0.0)),
    "hard_shrink": lambda x: np.where(np.abs(x) > 0.5, x, 0.0),
    "tanh_shrink": lambda x: x - np.tanh(x),
    "hard_tanh": lambda x: np.clip(x, -1.0, 1.0),
    "sparse_plus": lambda x: np.where(x <= -1, 0.0, np.where(x >= 1, x, 0.25 * (x + 1.0) ** 2)),
    "sparse_sigmoid": lambda x: np.where(x <= -1, 0.0, np.where(x >= 1, 1.0, 0.5 * (x + 1.0))),
    "silu": lambda x: x * _sigmoid(x),
    "swish": lambda x: x * _sigmoid(x),
    "gelu": lambda x: 0.5 * x * (1.0 + _erf(x / np.sqrt(2.0))),
    "exponential": np.exp,
    "hard_silu": lambda x: x * np.clip(x + 3.0, 0.0, 6.0) / 6.0,
    "hard_swish": lambda x: x * np.clip(x + 3.0, 0.0, 6.0) / 6.0,
    "mish": lambda x: x * np.tanh(_softplus(x)),
    "log_sigmoid": lambda x: -_softplus(-x),
    "linear": lambda x: x,
}


def activation(name: str | None) -> Callable[[np.ndarray], np.ndarray]:
    if name is None:
        return ACTIVATIONS["linear"]
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}") from None


# --------------------------------------------------------------------------
# Convolution: channels_last, a literal sum over kernel offsets.


def pair(v, name: str = "value") -> tuple[int, int]:
    """An integer or a pair of integers as a pair; ValueError naming
    ``name`` for anything else (a float or a string is not silently cut)."""
    items = tuple(v) if isinstance(v, (list, tuple)) else (v, v)
    if len(items) != 2:
        raise ValueError(f"{name}: expected 2 values, got {list(items)!r:.60}")
    for x in items:
        if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
            raise ValueError(f"{name} must be an integer or a pair of integers, got {v!r:.60}")
    return int(items[0]), int(items[1])


def same_padding(n: int, k: int, s: int, d: int) -> tuple[int, int]:
    """(before, after) padding for 'same': TF/XLA put the odd row/column after."""
    out = -(-n // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
    return total // 2, total - total // 2


def conv2d(x: np.ndarray, w: np.ndarray, strides=(1, 1), dilation=(1, 1),
           padding: str = "valid") -> np.ndarray:
    """x (B, H, W, C), w (kh, kw, C, O) -> (B, H', W', O), float64."""
    _, H, W, _ = x.shape
    kh, kw = w.shape[:2]
    sh, sw = strides
    dh, dw = dilation
    if padding == "same":
        (pt, pb), (pl, pr) = same_padding(H, kh, sh, dh), same_padding(W, kw, sw, dw)
        x = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    elif padding != "valid":
        raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
    Hp, Wp = x.shape[1:3]
    oh = (Hp - dh * (kh - 1) - 1) // sh + 1
    ow = (Wp - dw * (kw - 1) - 1) // sw + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"input spatial size {H}x{W} too small for kernel {kh}x{kw} "
                         f"with dilation {dilation}: output would be {oh}x{ow}")
    out = np.zeros((x.shape[0], oh, ow, w.shape[3]), dtype=np.float64)
    for a in range(kh):
        for b in range(kw):
            patch = x[:, a * dh: a * dh + (oh - 1) * sh + 1: sh,
                      b * dw: b * dw + (ow - 1) * sw + 1: sw, :]
            out += patch @ w[a, b]
    return out


# --------------------------------------------------------------------------
# The layer


@dataclass
class Step:
    """What happened at one processed time step (processing order)."""

    t: int                  # index of the input step consumed
    active: np.ndarray      # (B,) bool: False where the mask skipped the step
    z: np.ndarray           # (B, H', W', 4F) pre-activations, gate order i, f, c, o
    mag: np.ndarray         # (B, H', W', 4F) sum of |terms| of each pre-activation
    gates: np.ndarray       # (B, H', W', 4F) i, f, act(z_c), o
    h_prev: np.ndarray      # (B, H', W', F) state fed into the recurrent conv
    c_prev: np.ndarray
    c: np.ndarray           # candidate new state before masking
    h: np.ndarray


@dataclass
class Trace:
    steps: list[Step] = field(default_factory=list)
    accumulation: int = 0   # terms per pre-activation: kh*kw*(C_in+F) (+1 with bias)


@dataclass
class Result:
    output: np.ndarray      # in the case's data_format
    h: np.ndarray
    c: np.ndarray
    trace: Trace


def to_last(a: np.ndarray, channels_first: bool, time_axis: bool) -> np.ndarray:
    if not channels_first:
        return a
    return np.moveaxis(a, 2 if time_axis else 1, -1)


def from_last(a: np.ndarray, channels_first: bool, time_axis: bool) -> np.ndarray:
    if not channels_first:
        return a
    return np.moveaxis(a, -1, 2 if time_axis else 1)


# --------------------------------------------------------------------------
# Checks of a case, before anything is computed


def _check_config(case: Case) -> dict:
    """The configuration the oracle computes with, every argument it reads
    checked for type and range; ValueError naming the argument otherwise."""
    cfg = case.config
    if not isinstance(cfg, dict):
        raise ValueError(f"config must be a mapping, got {type(cfg).__name__}")
    if case.dtype not in DTYPES:
        raise ValueError(f"dtype {case.dtype!r:.60} is not one of {', '.join(DTYPES)}")
    if "filters" not in cfg:
        raise ValueError("config has no 'filters' (a required argument)")
    if "kernel_size" not in cfg:
        raise ValueError("config has no 'kernel_size' (a required argument)")
    F = cfg["filters"]
    if isinstance(F, bool) or not isinstance(F, (int, np.integer)) or F < 1:
        raise ValueError(f"filters must be a positive integer, got {F!r:.60}")
    out = {"filters": int(F)}
    for name, default in (("kernel_size", None), ("strides", 1), ("dilation_rate", 1)):
        v = pair(cfg[name] if default is None else cfg.get(name, default), name)
        if min(v) < 1:
            raise ValueError(f"{name} must be positive, got {v}")
        out[name] = v
    if max(out["strides"]) > 1 and max(out["dilation_rate"]) > 1:
        raise ValueError(f"strides > 1 is incompatible with dilation_rate > 1: "
                         f"{out['strides']}, {out['dilation_rate']}")
    padding = cfg.get("padding", "valid")
    if not isinstance(padding, str):
        raise ValueError(f"padding must be 'valid' or 'same', got {padding!r:.60}")
    out["padding"] = padding.lower()
    fmt = cfg.get("data_format") or "channels_last"
    if fmt not in ("channels_last", "channels_first"):
        raise ValueError(f"data_format must be 'channels_last' or 'channels_first', "
                         f"got {fmt!r:.60}")
    out["channels_first"] = fmt == "channels_first"
    for name, default in (("activation", "tanh"), ("recurrent_activation", "sigmoid")):
        v = cfg.get(name, default)
        if v is not None and not isinstance(v, str):
            raise ValueError(f"{name} must be an activation name, got {v!r:.60}")
        out[name] = v
    for name, default in (("use_bias", True), ("return_sequences", False),
                          ("return_state", False), ("go_backwards", False)):
        out[name] = _flag(cfg.get(name, default), name)
    return out


def _flag(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be true or false, got {value!r:.60}")
    return bool(value)


def _real_array(value, name: str) -> np.ndarray:
    """``value`` as float64, refused when it is not an array of finite real
    numbers (a complex part would be dropped, text would not convert)."""
    a = np.asarray(value)
    if a.dtype.kind not in "fiub":
        what = "complex" if a.dtype.kind == "c" else str(a.dtype)
        raise ValueError(f"{name} must hold real numbers, got dtype {what}")
    a = a.astype(np.float64, copy=False)
    if not np.isfinite(a).all():
        bad = ~np.isfinite(a)
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name} holds {int(bad.sum())} NaN or infinite value(s), the first "
                         f"at {first}: the oracle judges finite inputs only")
    return a


def forward(case: Case) -> Result:
    """Run the layer on ``case`` in float64.  Raises ValueError on invalid input.

    Overflow to inf and the NaN of inf * 0 are results, as IEEE arithmetic
    defines them (the comparison matches NaN and inf as such), not warnings.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        return _forward(case)


def _forward(case: Case) -> Result:
    # The judge is the strictest reader of a case: everything is checked
    # before anything is computed, so a malformed case is an error naming the
    # array or argument, never a broadcast that happens to run.
    cfg = _check_config(case)
    F = cfg["filters"]
    kh, kw = cfg["kernel_size"]
    strides, dilation = cfg["strides"], cfg["dilation_rate"]
    padding, cf = cfg["padding"], cfg["channels_first"]
    act = activation(cfg["activation"])
    ract = activation(cfg["recurrent_activation"])

    x = _real_array(case.inputs, "inputs")
    if x.ndim != 5:
        raise ValueError(f"inputs must be 5-D (batch, time, ...), got shape {x.shape}")
    if 0 in x.shape:
        raise ValueError(f"inputs of shape {x.shape} have an empty dimension (0 time steps, "
                         f"rows, columns, channels or batch)")
    x = to_last(x, cf, time_axis=True)          # (B, T, H, W, C)
    B, T, _, _, C = x.shape
    if case.kernel is None or case.recurrent_kernel is None:
        raise ValueError("kernel and recurrent_kernel are required: the oracle has no "
                         "initializers")
    K = _real_array(case.kernel, "kernel")
    U = _real_array(case.recurrent_kernel, "recurrent_kernel")
    if K.shape != (kh, kw, C, 4 * F) or U.shape != (kh, kw, F, 4 * F):
        raise ValueError(f"weights {K.shape}, {U.shape} do not match kernel "
                         f"({kh},{kw},{C},{4*F}) and recurrent ({kh},{kw},{F},{4*F})")
    use_bias = cfg["use_bias"]
    if use_bias:
        if case.bias is None:
            raise ValueError("bias is missing while use_bias is true")
        b = _real_array(case.bias, "bias")
        if b.shape != (4 * F,):
            raise ValueError(f"bias has shape {b.shape}, expected (4 * filters,) = ({4 * F},)")
    else:
        b = np.zeros(4 * F)      # a bias given anyway is not used, as in Keras

    # Per-gate input and recurrent multipliers (dropout), identity when absent.
    train = _flag(case.training, "training")
    dmask = case.dropout_mask if (train and case.dropout_mask is not None) else None
    rmask = case.recurrent_dropout_mask if (train and case.recurrent_dropout_mask is not None) else None

    # Output geometry from the first frame's convolution.
    probe = conv2d(x[:, 0], K[..., :1], strides, dilation, padding)
    Ho, Wo = probe.shape[1:3]
    state_shape = (B, Ho, Wo, F)
    if dmask is not None:
        dmask = _real_array(dmask, "dropout_mask")
        if dmask.shape != (4, B) + x.shape[2:]:
            raise ValueError(f"dropout_mask has shape {dmask.shape}, expected (4, batch, rows, "
                             f"cols, channels) = {(4, B) + x.shape[2:]} (channels_last order)")
    if rmask is not None:
        rmask = _real_array(rmask, "recurrent_dropout_mask")
        if rmask.shape != (4,) + state_shape:
            raise ValueError(f"recurrent_dropout_mask has shape {rmask.shape}, expected (4,) + "
                             f"state shape = {(4,) + state_shape} (channels_last order)")
    if case.initial_state is not None:
        if not isinstance(case.initial_state, (tuple, list)) or len(case.initial_state) != 2:
            raise ValueError("initial_state must be a pair (h, c)")
        h0, c0 = (to_last(_real_array(s, f"initial_state {n}"), cf, time_axis=False)
                  for s, n in zip(case.initial_state, "hc"))
        if h0.shape != state_shape or c0.shape != state_shape:
            raise ValueError(f"initial_state shapes {h0.shape}, {c0.shape} must both be "
                             f"{state_shape} (channels_last order)")
    else:
        h0 = np.zeros(state_shape)
        c0 = np.zeros(state_shape)
    mask = None
    if case.mask is not None:
        mask = np.asarray(case.mask)
        if mask.dtype != np.bool_:
            raise ValueError(f"mask must be boolean, got dtype {mask.dtype}")
    if case.masking_value is not None:
        mv = case.masking_value
        if isinstance(mv, bool) or not isinstance(mv, (int, float)) or not math.isfinite(mv):
            raise ValueError(f"masking_value must be a finite number, got {mv!r:.60}")
        # An upstream Masking layer skips a step whose every value equals
        # mask_value (SEM-MASKING-LAYER).
        mask = (x != mv).reshape(B, T, -1).any(axis=-1)
    if mask is not None and mask.shape != (B, T):
        raise ValueError(f"mask must have shape (batch, timesteps) = {(B, T)}, got {mask.shape}")
    if case.cotangent is not None:
        cot = _real_array(case.cotangent, "cotangent")
        step = state_shape if not cf else (B, F, Ho, Wo)
        want = (step[0], T) + step[1:] if cfg["return_sequences"] else step
        if cot.shape != want:
            raise ValueError(f"cotangent has shape {cot.shape}, expected the output's {want}")

    order = range(T - 1, -1, -1) if cfg["go_backwards"] else range(T)
    h, c = h0, c0
    prev_out = np.zeros(state_shape)
    outs = []
    trace = Trace(accumulation=kh * kw * (C + F) + (1 if use_bias else 0))
    absK, absU, absb = np.abs(K), np.abs(U), np.abs(b)
    for t in order:
        xt = x[:, t]
        z = np.empty(state_shape[:3] + (4 * F,))
        mag = np.empty_like(z)
        for g in range(4):
            sl = slice(g * F, (g + 1) * F)
            xg = xt * dmask[g] if dmask is not None else xt
            hg = h * rmask[g] if rmask is not None else h
            zx = conv2d(xg, K[..., sl], strides, dilation, padding) + b[sl]
            zh = conv2d(np.pad(hg, same_pad_spec(Ho, Wo, kh, kw)), U[..., sl])
            z[..., sl] = zx + zh
            mag[..., sl] = (conv2d(np.abs(xg), absK[..., sl], strides, dilation, padding)
                            + absb[sl]
                            + conv2d(np.pad(np.abs(hg), same_pad_spec(Ho, Wo, kh, kw)), absU[..., sl]))
        i = ract(z[..., 0:F])
        f = ract(z[..., F:2 * F])
        gc = act(z[..., 2 * F:3 * F])
        o = ract(z[..., 3 * F:4 * F])
        c_new = f * c + i * gc
        h_new = o * act(c_new)
        active = np.ones(B, dtype=bool) if mask is None else mask[:, t]
        sel = active[:, None, None, None]
        trace.steps.append(Step(t=t, active=active, z=z, mag=mag,
                                gates=np.concatenate([i, f, gc, o], axis=-1),
                                h_prev=h, c_prev=c, c=c_new, h=h_new))
        # Masked steps carry the state unchanged and repeat the previous output.
        h = np.where(sel, h_new, h)
        c = np.where(sel, c_new, c)
        out_t = np.where(sel, h_new, prev_out)
        prev_out = out_t
        outs.append(out_t)

    if cfg["return_sequences"]:
        output = from_last(np.stack(outs, axis=1), cf, time_axis=True)
    else:
        output = from_last(outs[-1], cf, time_axis=False)
    return Result(output=output, h=from_last(h, cf, False), c=from_last(c, cf, False),
                  trace=trace)


def forward_calls(case: Case) -> list[Result]:
    """The first call and every follow-up call on the same (stateful) layer.

    A follow-up starts from the state the previous call ended in, from zeros
    after a reset, or from its own initial_state when it gives one
    (SEM-STATEFUL-CARRY, SEM-STATEFUL-RESET, SEM-STATEFUL-INITIAL-STATE).
    """
    import dataclasses
    results = [forward(case)]
    for call in case.followups:
        if call.initial_state is not None:
            init = call.initial_state
        elif call.reset:
            init = None
        else:
            init = (results[-1].h, results[-1].c)
        sub = dataclasses.replace(case, inputs=call.inputs, initial_state=init, followups=[],
                                  mask=None, masking_value=None, cotangent=None)
        results.append(forward(sub))
    return results


def same_pad_spec(Ho: int, Wo: int, kh: int, kw: int):
    """np.pad widths giving a stride-1 'same' convolution of an (Ho, Wo) state."""
    return ((0, 0), same_padding(Ho, kh, 1, 1), same_padding(Wo, kw, 1, 1), (0, 0))


# --------------------------------------------------------------------------
# Gradients: backpropagation through time, written out by hand.


def conv2d_backward(x: np.ndarray, w: np.ndarray, dz: np.ndarray, strides=(1, 1),
                    dilation=(1, 1), padding: str = "valid") -> tuple[np.ndarray, np.ndarray]:
    """Adjoint of :func:`conv2d`: (d input, d kernel) for output cotangent ``dz``."""
    _, H, W, _ = x.shape
    kh, kw = w.shape[:2]
    sh, sw = strides
    dh, dw = dilation
    (pt, pb), (pl, pr) = ((same_padding(H, kh, sh, dh), same_padding(W, kw, sw, dw))
                          if padding == "same" else ((0, 0), (0, 0)))
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    oh, ow = dz.shape[1:3]
    dxp = np.zeros_like(xp)
    dwt = np.zeros_like(w)
    for a in range(kh):
        for b in range(kw):
            rows = slice(a * dh, a * dh + (oh - 1) * sh + 1, sh)
            cols = slice(b * dw, b * dw + (ow - 1) * sw + 1, sw)
            dwt[a, b] = np.einsum("nhwc,nhwo->co", xp[:, rows, cols, :], dz)
            dxp[:, rows, cols, :] += dz @ w[a, b].T
    return dxp[:, pt:pt + H, pl:pl + W, :], dwt


def _gelu_slope(x):
    from scipy.special import erf
    return 0.5 * (1.0 + erf(x / np.sqrt(2.0))) + x * np.exp(-0.5 * x * x) / np.sqrt(2.0 * np.pi)


def _mish_slope(x):
    sp = _softplus(x)
    t = np.tanh(sp)
    return t + x * (1.0 - t * t) * _sigmoid(x)


def _step(x, lo, hi, inside, outside=0.0):
    return np.where((x > lo) & (x < hi), inside, outside)


# Slopes of the activations, written by hand from their definitions, and the
# points where the slope jumps (an implementation may take either side there).
SLOPES: dict[str, tuple] = {
    "tanh": (lambda x: 1.0 - np.tanh(x) ** 2, ()),
    "sigmoid": (lambda x: _sigmoid(x) * (1.0 - _sigmoid(x)), ()),
    "hard_sigmoid": (lambda x: _step(x, -3.0, 3.0, 1.0 / 6.0), (-3.0, 3.0)),
    "relu": (lambda x: np.where(x > 0, 1.0, 0.0), (0.0,)),
    "relu6": (lambda x: _step(x, 0.0, 6.0, 1.0), (0.0, 6.0)),
    "leaky_relu": (lambda x: np.where(x > 0, 1.0, 0.2), (0.0,)),
    "elu": (lambda x: np.where(x > 0, 1.0, np.exp(np.minimum(x, 0.0))), ()),
    "selu": (lambda x: _SELU_SCALE * np.where(x > 0, 1.0, _SELU_ALPHA * np.exp(np.minimum(x, 0.0))),
             (0.0,)),
    "celu": (lambda x: np.where(x > 0, 1.0, np.exp(np.minimum(x, 0.0))), ()),
    "softplus": (_sigmoid, ()),
    "softsign": (lambda x: 1.0 / (1.0 + np.abs(x)) ** 2, ()),
    "squareplus": (lambda x: 0.5 * (1.0 + x / np.sqrt(x * x + 4.0)), ()),
    "soft_shrink": (lambda x: np.where(np.abs(x) > 0.5, 1.0, 0.0), (-0.5, 0.5)),
    "hard_shrink": (lambda x: np.where(np.abs(x) > 0.5, 1.0, 0.0), (-0.5, 0.5)),
    "tanh_shrink": (lambda x: np.tanh(x) ** 2, ()),
    "hard_tanh": (lambda x: _step(x, -1.0, 1.0, 1.0), (-1.0, 1.0)),
    "sparse_plus": (lambda x: np.clip((x + 1.0) / 2.0, 0.0, 1.0), ()),
    "sparse_sigmoid": (lambda x: _step(x, -1.0, 1.0, 0.5), (-1.0, 1.0)),
    "silu": (lambda x: _sigmoid(x) * (1.0 + x * (1.0 - _sigmoid(x))), ()),
    "swish": (lambda x: _sigmoid(x) * (1.0 + x * (1.0 - _sigmoid(x))), ()),
    "gelu": (_gelu_slope, ()),
    "exponential": (np.exp, ()),
    "hard_silu": (lambda x: np.where(x >= 3.0, 1.0, _step(x, -3.0, 3.0, (2.0 * x + 3.0) / 6.0)),
                  (-3.0, 3.0)),
    "hard_swish": (lambda x: np.where(x >= 3.0, 1.0, _step(x, -3.0, 3.0, (2.0 * x + 3.0) / 6.0)),
                   (-3.0, 3.0)),
    "mish": (_mish_slope, ()),
    "log_sigmoid": (lambda x: _sigmoid(-x), ()),
    "linear": (lambda x: np.ones_like(x), ()),
}


def derivative(name: str | None, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(slope, half-width of the slope's ambiguity) of activation ``name`` at ``z``.

    Exact from SLOPES; at a kink (relu at 0, hard_sigmoid at +-3) the one-sided
    slopes differ and an implementation may take either: the slope is their
    mean and the half-width says by how much they differ.
    """
    fn, kinks = SLOPES["linear" if name is None else name]
    z = np.asarray(z, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        mid = np.asarray(fn(z), dtype=np.float64) * np.ones_like(z)
        half = np.zeros_like(z)
        for k in kinks:
            at = z == k
            if at.any():
                eps = 1e-9 * max(1.0, abs(k))
                left, right = float(fn(np.array(k - eps))), float(fn(np.array(k + eps)))
                mid = np.where(at, (left + right) / 2, mid)
                half = np.where(at, abs(right - left) / 2, half)
    return mid, half


def backward(case: Case, result: Result, absolute: bool = False,
             slack: list[dict] | None = None) -> dict[str, np.ndarray]:
    """Gradients of ``sum(output * case.cotangent)``.

    With ``absolute`` every factor is replaced by its magnitude, giving for
    each gradient element the sum of |terms| over all paths (the magnitude the
    tolerance model scales its budget by).  ``slack`` (with ``absolute``), one
    dict per step of error bounds for z, gates, c_prev, h_prev, c and act(c),
    widens each factor by its bound and each slope by its range over the
    argument's error interval.
    """
    cfg = case.config
    F = int(cfg["filters"])
    strides = pair(cfg.get("strides", 1))
    dilation = pair(cfg.get("dilation_rate", 1))
    padding = str(cfg.get("padding", "valid")).lower()
    cf = case.channels_first
    act_name = cfg.get("activation", "tanh")
    ract_name = cfg.get("recurrent_activation", "sigmoid")
    act = activation(act_name)
    A = np.abs if absolute else (lambda v: v)
    x = A(to_last(np.asarray(case.inputs, dtype=np.float64), cf, time_axis=True))
    K = A(np.asarray(case.kernel, dtype=np.float64))
    U = A(np.asarray(case.recurrent_kernel, dtype=np.float64))
    train = bool(case.training)
    dmask = case.dropout_mask if (train and case.dropout_mask is not None) else None
    rmask = case.recurrent_dropout_mask if (train and case.recurrent_dropout_mask is not None) else None
    seq = bool(cfg.get("return_sequences", False))
    cot = A(to_last(np.asarray(case.cotangent, dtype=np.float64), cf, time_axis=seq))

    def slope(fn, z, dz=None, extra=0.0):
        mid, half = derivative(fn, z)
        if not absolute:
            return mid
        if dz is None:
            return np.abs(mid)
        lo, hi = derivative(fn, z - dz), derivative(fn, z + dz)
        return extra + np.maximum.reduce([np.abs(mid) + half, np.abs(lo[0]) + lo[1],
                                          np.abs(hi[0]) + hi[1]])

    steps = result.trace.steps
    kh, kw = K.shape[:2]
    Ho, Wo = steps[0].h.shape[1:3]
    pad = same_pad_spec(Ho, Wo, kh, kw)
    (pt, _), (pl, _) = pad[1], pad[2]
    dx = np.zeros_like(x)
    dK, dU, db = np.zeros_like(K), np.zeros_like(U), np.zeros(4 * F)
    dh = np.zeros(steps[0].h.shape)
    dc = np.zeros_like(dh)
    d_prev_out = np.zeros_like(dh)
    for k in range(len(steps) - 1, -1, -1):
        st = steps[k]
        sk = slack[k] if slack is not None else None
        W = (lambda v, key: np.abs(v) + sk[key]) if sk is not None else (lambda v, key: A(v))
        sel = st.active[:, None, None, None]
        g_out = d_prev_out + (cot[:, k] if seq else (cot if k == len(steps) - 1 else 0.0))
        # out_k = h_new where active, else the previous output; likewise states.
        dh_new = np.where(sel, g_out + dh, 0.0)
        d_prev_out = np.where(sel, 0.0, g_out)
        dh_pass, dc_pass = np.where(sel, 0.0, dh), np.where(sel, 0.0, dc)
        gates = W(st.gates, "gates")
        i, f, gc, o = (gates[..., n * F:(n + 1) * F] for n in range(4))
        a = W(act(st.c), "a")
        part = (lambda key, lo, hi: sk[key][..., lo:hi]) if sk is not None else (lambda *_: None)
        dc_new = np.where(sel, dc, 0.0) + dh_new * o * slope(
            act_name, st.c, sk["c"] if sk else None, sk["slope_a"] if sk else 0.0)
        do = dh_new * a
        di, df, dg = dc_new * gc, dc_new * W(st.c_prev, "c_prev"), dc_new * i
        dc = dc_new * f + dc_pass
        dz = np.concatenate(
            [d_gate * slope(fn, st.z[..., n * F:(n + 1) * F], part("z", n * F, (n + 1) * F),
                            part("slope_gates", n * F, (n + 1) * F) if sk else 0.0)
             for n, (d_gate, fn) in enumerate(((di, ract_name), (df, ract_name), (dg, act_name),
                                               (do, ract_name)))],
            axis=-1)
        dh_prev = np.zeros_like(dh)
        h_prev = W(st.h_prev, "h_prev")
        for g in range(4):
            sl = slice(g * F, (g + 1) * F)
            xg = x[:, st.t] * A(dmask[g]) if dmask is not None else x[:, st.t]
            dxg, dKg = conv2d_backward(xg, K[..., sl], dz[..., sl], strides, dilation, padding)
            dK[..., sl] += dKg
            dx[:, st.t] += dxg * A(dmask[g]) if dmask is not None else dxg
            db[sl] += dz[..., sl].sum(axis=(0, 1, 2))
            hg = h_prev * A(rmask[g]) if rmask is not None else h_prev
            dhp, dUg = conv2d_backward(np.pad(hg, pad), U[..., sl], dz[..., sl])
            dU[..., sl] += dUg
            dhg = dhp[:, pt:pt + Ho, pl:pl + Wo, :]
            dh_prev += dhg * A(rmask[g]) if rmask is not None else dhg
        dh = dh_prev + dh_pass
    grads = {"inputs": from_last(dx, cf, time_axis=True), "kernel": dK, "recurrent_kernel": dU}
    if cfg.get("use_bias", True):
        grads["bias"] = db
    if case.initial_state is not None:
        grads["initial_h"] = from_last(dh, cf, time_axis=False)
        grads["initial_c"] = from_last(dc, cf, time_axis=False)
    return grads
