"""A third party's ConvLSTM2D in float32 NumPy, and its adapter to the suite.

Everything an adapter author writes, in one file that imports only NumPy and
the public interface of ``convlstm_conformance``:

* ``ConvLSTM`` is "their" implementation: it keeps its weights in its own
  layout (PyTorch-style OIHW convolution weights) and its own gate order
  (input, forget, *output*, cell candidate), with one bias per gate block;
* ``NumpyConvLSTM`` is the adapter: it declares what the implementation
  claims (:class:`Capabilities`), maps the canonical Keras-layout weights
  into that layout (:func:`from_keras`), runs the case and returns an
  :class:`Outcome`;
* ``BuggyNumpyConvLSTM`` carries one deliberate bug (the forget-gate bias
  off by 0.01), to see what a failure looks like.

Certify it from the directory holding this file::

    convlstm-conformance run --adapters "" --adapter-object numpy_convlstm:NumpyConvLSTM
"""
from __future__ import annotations

import time

import numpy as np

from convlstm_conformance import (CALL, OK, RAISED, REFUSED, Adapter, Capabilities, Case,
                                  ErrorInfo, Outcome, Refused, refuse_unless_mappable)

ACTIVATIONS = {
    "tanh": np.tanh,
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "hard_sigmoid": lambda x: np.clip(x / 6.0 + 0.5, 0.0, 1.0),
    "relu": lambda x: np.maximum(x, 0.0),
    "linear": lambda x: x,
}


def _pair(v):
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


class ConvLSTM:
    """The implementation: NHWC float32 data, OIHW weights, gates (i, f, o, g)."""

    def __init__(self, w_x, w_h, bias, strides=(1, 1), dilation=(1, 1), padding="valid",
                 activation="tanh", recurrent_activation="sigmoid"):
        self.w_x, self.w_h = w_x.astype(np.float32), w_h.astype(np.float32)   # (4F, C, kh, kw)
        self.bias = bias.astype(np.float32)                                   # (4F,)
        self.strides, self.dilation, self.padding = strides, dilation, padding
        self.act, self.ract = ACTIVATIONS[activation], ACTIVATIONS[recurrent_activation]

    @staticmethod
    def _conv(x, w, strides, dilation, padding):
        """x (B, H, W, C), w (O, C, kh, kw): a correlation by im2col."""
        B, H, W, C = x.shape
        O, _, kh, kw = w.shape
        pads = []
        for n, k, s, d in ((H, kh, strides[0], dilation[0]), (W, kw, strides[1], dilation[1])):
            if padding == "same":
                out = -(-n // s)
                total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
                pads.append((total // 2, total - total // 2))   # the odd one after
            else:
                pads.append((0, 0))
        xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
        oh = (xp.shape[1] - dilation[0] * (kh - 1) - 1) // strides[0] + 1
        ow = (xp.shape[2] - dilation[1] * (kw - 1) - 1) // strides[1] + 1
        if oh < 1 or ow < 1:
            raise ValueError(f"input {H}x{W} too small for kernel {kh}x{kw}")
        out = np.zeros((B, oh, ow, O), np.float32)
        for a in range(kh):
            for b in range(kw):
                patch = xp[:, a * dilation[0]: a * dilation[0] + (oh - 1) * strides[0] + 1: strides[0],
                           b * dilation[1]: b * dilation[1] + (ow - 1) * strides[1] + 1: strides[1]]
                out += patch @ w[:, :, a, b].T
        return out

    def __call__(self, x, h=None, c=None, reverse=False):
        """x (B, T, H, W, C) -> (outputs (B, T, H', W', F), h, c)."""
        F = self.w_h.shape[1]
        steps = range(x.shape[1] - 1, -1, -1) if reverse else range(x.shape[1])
        outs = []
        for t in steps:
            z = self._conv(x[:, t], self.w_x, self.strides, self.dilation, self.padding) + self.bias
            if h is None:
                h = c = np.zeros(z.shape[:3] + (F,), np.float32)
            z += self._conv(h, self.w_h, (1, 1), (1, 1), "same")
            i, f, o = (self.ract(z[..., k * F:(k + 1) * F]) for k in range(3))
            g = self.act(z[..., 3 * F:])
            c = f * c + i * g
            h = o * self.act(c)
            outs.append(h)
        return np.stack(outs, axis=1), h, c


def from_keras(kernel, recurrent_kernel, bias, filters):
    """Canonical weights -> ConvLSTM's: Keras (kh, kw, in, 4F) with gate blocks
    i, f, c, o becomes (4F, in, kh, kw) with blocks i, f, o, c."""
    order = [0, 1, 3, 2]     # Keras block k goes to position order.index(k)

    def blocks(w):
        return np.concatenate([w[..., k * filters:(k + 1) * filters] for k in order], axis=-1)

    return (blocks(kernel).transpose(3, 2, 0, 1), blocks(recurrent_kernel).transpose(3, 2, 0, 1),
            blocks(bias))


class NumpyConvLSTM(Adapter):
    """The adapter: claims, mapping, call."""

    name = "numpy-convlstm"
    forget_bias_error = 0.0

    def capabilities(self) -> Capabilities:
        names = frozenset(ACTIVATIONS) | {None}
        return Capabilities(
            activation=names, recurrent_activation=names, dtype=frozenset({"float32"}),
            data_format=frozenset({"channels_last", "channels_first"}),
            go_backwards=True, initial_state=True)

    def versions(self) -> dict[str, str]:
        return {"numpy": np.__version__}

    def run(self, case: Case) -> Outcome:
        start = time.perf_counter()
        try:
            refuse_unless_mappable(case, self.capabilities())
        except Refused as exc:
            return Outcome(status=REFUSED, detail=str(exc))
        cfg = case.config
        F = case.filters
        bias = case.bias if case.bias is not None else np.zeros(4 * F)
        w_x, w_h, b = from_keras(case.kernel, case.recurrent_kernel, bias, F)
        b = b.copy()
        b[F:2 * F] += self.forget_bias_error
        layer = ConvLSTM(w_x, w_h, b, _pair(cfg.get("strides", 1)),
                         _pair(cfg.get("dilation_rate", 1)), str(cfg.get("padding", "valid")).lower(),
                         cfg.get("activation", "tanh") or "linear",
                         cfg.get("recurrent_activation", "sigmoid") or "linear")
        cf = case.channels_first
        x = np.moveaxis(case.inputs, 2, -1) if cf else case.inputs        # to NHWC
        h0 = c0 = None
        if case.initial_state is not None:
            h0, c0 = (np.moveaxis(s, 1, -1) if cf else s for s in case.initial_state)
            h0, c0 = h0.astype(np.float32), c0.astype(np.float32)
        try:
            seq, h, c = layer(x.astype(np.float32), h0, c0,
                              reverse=bool(cfg.get("go_backwards", False)))
        except ValueError as exc:
            return Outcome(status=RAISED, error=ErrorInfo.from_exception(exc, CALL))
        out = seq if cfg.get("return_sequences", False) else seq[:, -1]
        if cf:   # back to the case's layout
            out = np.moveaxis(out, -1, 2 if out.ndim == 5 else 1)
            h, c = np.moveaxis(h, -1, 1), np.moveaxis(c, -1, 1)
        arrays = [out, h, c] if cfg.get("return_state", False) else [out]
        return Outcome(status=OK, outputs=[a.astype(np.float64) for a in arrays],
                       structure="list" if len(arrays) == 3 else "tensor",
                       dtypes=[str(a.dtype) for a in arrays],
                       duration_s=time.perf_counter() - start)


class BuggyNumpyConvLSTM(NumpyConvLSTM):
    """The same with its forget-gate bias off by 0.01."""

    name = "numpy-convlstm-buggy"
    forget_bias_error = 0.01
