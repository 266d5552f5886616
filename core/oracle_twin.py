"""A second float64 ConvLSTM2D, written differently from the oracle: the judge's own judge.

The oracle (``oracle.py``) judges every implementation; nothing judges the
oracle but its unit tests.  When the suite runs the oracle as an
implementation (adapter ``oracle``), its outputs are compared with this
formulation instead of with themselves, so a wrong oracle turns the suite red
on the clause it gets wrong.  It shares no code with ``oracle.py`` and
computes differently on purpose:

* time-major: the input projection of every step is one im2col contraction
  (``sliding_window_view`` + ``einsum``), hoisted out of the time loop;
* eight convolutions per step, one per gate and input (the oracle: four);
* padding, output sizes and activations derived again from the spec
  (``specs/convlstm2d.yaml``), activations written with SciPy's special
  functions where one exists;
* masks, go_backwards and stateful follow-up calls handled on the time-major
  sequence.

Only the values are computed (no trace, no gradients): budgets still come from
the oracle's trace.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import special

from convlstm_conformance.model import Case


def _hard_sigmoid(x):
    return np.minimum(np.maximum(x / 6.0 + 0.5, 0.0), 1.0)


def _selu(x):
    alpha, scale = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
    return scale * np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))


def _softplus(x):
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


#: Keras 3's activations (keras/src/activations/activations.py), by name.
ACTIVATIONS = {
    "linear": lambda x: x,
    "tanh": np.tanh,
    "sigmoid": special.expit,
    "hard_sigmoid": _hard_sigmoid,
    "relu": lambda x: np.where(x > 0, x, 0.0),
    "relu6": lambda x: np.minimum(np.where(x > 0, x, 0.0), 6.0),
    "leaky_relu": lambda x: np.maximum(x, 0.0) + 0.2 * np.minimum(x, 0.0),
    "elu": lambda x: np.where(x > 0, x, special.expm1(np.minimum(x, 0.0))),
    "selu": _selu,
    "celu": lambda x: np.maximum(x, 0.0) + np.minimum(special.expm1(np.minimum(x, 0.0)), 0.0),
    "softplus": _softplus,
    "softsign": lambda x: x / (np.abs(x) + 1.0),
    "squareplus": lambda x: 0.5 * (x + np.hypot(x, 2.0)),
    "soft_shrink": lambda x: np.sign(x) * np.maximum(np.abs(x) - 0.5, 0.0),
    "hard_shrink": lambda x: x * (np.abs(x) > 0.5),
    "tanh_shrink": lambda x: x - np.tanh(x),
    "hard_tanh": lambda x: np.minimum(np.maximum(x, -1.0), 1.0),
    "sparse_plus": lambda x: np.select([x <= -1.0, x >= 1.0], [0.0, x], (x + 1.0) ** 2 / 4.0),
    "sparse_sigmoid": lambda x: np.minimum(np.maximum((x + 1.0) / 2.0, 0.0), 1.0),
    "silu": lambda x: x * special.expit(x),
    "swish": lambda x: x * special.expit(x),
    "gelu": lambda x: x * special.ndtr(x),
    "exponential": np.exp,
    "hard_silu": lambda x: x * _hard_sigmoid(x),
    "hard_swish": lambda x: x * _hard_sigmoid(x),
    "mish": lambda x: x * np.tanh(_softplus(x)),
    "log_sigmoid": special.log_expit,
}


def _two(v) -> tuple[int, int]:
    return tuple(int(a) for a in v) if isinstance(v, (list, tuple)) else (int(v), int(v))


def _pads(n: int, k: int, s: int, d: int, same: bool) -> tuple[int, int, int]:
    """(before, after, output extent) of one spatial axis."""
    span = d * (k - 1) + 1
    if not same:
        return 0, 0, (n - span) // s + 1
    out = (n + s - 1) // s
    total = max(0, (out - 1) * s + span - n)
    return total // 2, total - total // 2, out        # the odd one after, as TF and XLA


def _correlate(x, w, strides, dilation, pads):
    """x (N, H, W, C) with pads ((top, bottom), (left, right)), w (kh, kw, C, O)."""
    xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    kh, kw = w.shape[:2]
    (sh, sw), (dh, dw) = strides, dilation
    win = sliding_window_view(xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(1, 2))
    win = win[:, ::sh, ::sw, :, ::dh, ::dw]               # (N, Ho, Wo, C, kh, kw)
    return np.einsum("nyxcab,abco->nyxo", win, w, optimize=True)


def forward(case: Case, initial=None):
    """(output, h, c) of one call, in the case's layout; ``initial``: (h, c)
    channels_last, overriding ``case.initial_state`` (a stateful carry)."""
    cfg = case.config
    F = int(cfg["filters"])
    (kh, kw), strides, dilation = (_two(cfg["kernel_size"]), _two(cfg.get("strides", 1)),
                                   _two(cfg.get("dilation_rate", 1)))
    same = str(cfg.get("padding", "valid")).lower() == "same"
    first = (cfg.get("data_format") or "channels_last") == "channels_first"
    act = ACTIVATIONS[cfg.get("activation", "tanh") or "linear"]
    ract = ACTIVATIONS[cfg.get("recurrent_activation", "sigmoid") or "linear"]

    x = np.asarray(case.inputs, np.float64)
    if first:
        x = x.transpose(0, 1, 3, 4, 2)
    B, T, H, W, C = x.shape
    top, bottom, Ho = _pads(H, kh, strides[0], dilation[0], same)
    left, right, Wo = _pads(W, kw, strides[1], dilation[1], same)
    in_pads = ((top, bottom), (left, right))
    rec_pads = (_pads(Ho, kh, 1, 1, True)[:2], _pads(Wo, kw, 1, 1, True)[:2])
    kernel = np.asarray(case.kernel, np.float64)
    recurrent = np.asarray(case.recurrent_kernel, np.float64)
    bias = (np.asarray(case.bias, np.float64) if cfg.get("use_bias", True)
            else np.zeros(4 * F))
    blocks = [slice(g * F, (g + 1) * F) for g in range(4)]     # i, f, c, o

    training = bool(case.training)
    in_mask = case.dropout_mask if training and case.dropout_mask is not None else None
    rec_mask = (case.recurrent_dropout_mask
                if training and case.recurrent_dropout_mask is not None else None)

    # Every step's input projection at once, gate by gate: (T, B, Ho, Wo, F) each.
    frames = x.transpose(1, 0, 2, 3, 4).reshape(T * B, H, W, C)
    projected = []
    for g, sl in enumerate(blocks):
        xg = frames if in_mask is None else (
            frames.reshape(T, B, H, W, C) * np.asarray(in_mask[g])).reshape(T * B, H, W, C)
        z = _correlate(xg, kernel[..., sl], strides, dilation, in_pads) + bias[sl]
        projected.append(z.reshape(T, B, Ho, Wo, F))

    if case.masking_value is not None:
        keep = ~np.all(x == case.masking_value, axis=(2, 3, 4))
    elif case.mask is not None:
        keep = np.asarray(case.mask, bool)
    else:
        keep = np.ones((B, T), bool)

    if initial is not None:
        h, c = initial
    elif case.initial_state is not None:
        h, c = (np.asarray(s, np.float64) for s in case.initial_state)
        if first:
            h, c = h.transpose(0, 2, 3, 1), c.transpose(0, 2, 3, 1)
    else:
        h = c = np.zeros((B, Ho, Wo, F))
    steps = list(range(T))[::-1] if cfg.get("go_backwards", False) else list(range(T))
    last = np.zeros((B, Ho, Wo, F))
    sequence = []
    for t in steps:
        gates = []
        for g, sl in enumerate(blocks):
            hg = h if rec_mask is None else h * np.asarray(rec_mask[g])
            gates.append(projected[g][t] + _correlate(hg, recurrent[..., sl], (1, 1), (1, 1),
                                                      rec_pads))
        i, f, o = ract(gates[0]), ract(gates[1]), ract(gates[3])
        c_next = f * c + i * act(gates[2])
        h_next = o * act(c_next)
        on = keep[:, t].reshape(B, 1, 1, 1)
        h, c = np.where(on, h_next, h), np.where(on, c_next, c)
        last = np.where(on, h_next, last)      # a masked step repeats the last output
        sequence.append(last)

    out = np.stack(sequence, axis=1) if cfg.get("return_sequences", False) else sequence[-1]
    final = (h, c)
    if first:
        out = out.transpose(0, 1, 4, 2, 3) if out.ndim == 5 else out.transpose(0, 3, 1, 2)
        h, c = h.transpose(0, 3, 1, 2), c.transpose(0, 3, 1, 2)
    return (out, h, c), final


def forward_calls(case: Case) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(output, h, c) of the first call and of every follow-up call."""
    with np.errstate(over="ignore", invalid="ignore"):
        values, carry = forward(case)
        calls = [values]
        for call in case.followups:
            sub = dataclasses.replace(case, inputs=call.inputs, followups=[], mask=None,
                                      masking_value=None, initial_state=call.initial_state)
            if call.initial_state is not None or call.reset:
                values, carry = forward(sub)
            else:
                values, carry = forward(sub, initial=carry)
            calls.append(values)
    return calls
