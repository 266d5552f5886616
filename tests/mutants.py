"""A float32 ConvLSTM2D and deliberately wrong variants of it (mutants).

The correct variant must pass the suite; every mutant must be caught.  They
are written independently of the oracle (im2col + GEMM in float32) so that the
tolerance model is exercised by a genuinely different evaluation order.

Usable from the command line too:
    pytest conformance --adapter-object tests.mutants:forget_bias_mutant
"""
from __future__ import annotations

import time

import numpy as np

from convlstm_conformance.features import Capabilities, required_features
from convlstm_conformance.model import Adapter, CALL, Case, ErrorInfo, OK, Outcome, RAISED, REFUSED

MUTATIONS = (
    None,
    "forget_bias_plus_0.01",   # forget-gate bias off by 0.01
    "swap_input_forget",       # gate order i, f swapped
    "same_pad_top_left",       # odd 'same' padding placed top/left (PyTorch-style)
    "recurrent_valid",         # recurrent conv without padding, re-padded with zeros
    "keras2_hard_sigmoid",     # hard_sigmoid as Keras 2 defines it
    "no_reverse_backwards",    # go_backwards ignored
    "output_is_c",             # return_state returns [c, h, c]
)


def _pair(v):
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _sigmoid(x):
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


def _act(name, mutation):
    if name in (None, "linear"):
        return lambda x: x
    table = {
        "tanh": np.tanh,
        "sigmoid": _sigmoid,
        "relu": lambda x: np.maximum(x, np.float32(0)),
        "hard_sigmoid": ((lambda x: np.clip(np.float32(0.2) * x + np.float32(0.5), 0, 1))
                         if mutation == "keras2_hard_sigmoid"
                         else (lambda x: np.clip(x / np.float32(6) + np.float32(0.5), 0, 1))),
        "softsign": lambda x: x / (np.float32(1) + np.abs(x)),
        "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
        "sparse_sigmoid": lambda x: np.clip(np.float32(0.5) * (x + np.float32(1)), 0, 1),
    }
    return table[name]


SUPPORTED_ACTIVATIONS = frozenset({"tanh", "sigmoid", "relu", "hard_sigmoid", "softsign",
                                   "elu", "sparse_sigmoid", "linear", None})


def _pad_amounts(n, k, s, d, padding, mutation):
    if padding == "valid":
        return 0, 0, (n - d * (k - 1) - 1) // s + 1
    out = -(-n // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
    small = total // 2
    if mutation == "same_pad_top_left":
        return total - small, small, out
    return small, total - small, out


def _conv(x, w, strides, dilation, padding, mutation=None):
    """x (N, H, W, C) float32, w (kh, kw, C, O) -> (N, H', W', O) by im2col."""
    N, H, W, C = x.shape
    kh, kw, _, O = w.shape
    (sh, sw), (dh, dw) = strides, dilation
    pt, pb, oh = _pad_amounts(H, kh, sh, dh, padding, mutation)
    pl, pr, ow = _pad_amounts(W, kw, sw, dw, padding, mutation)
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    cols = np.empty((N, oh, ow, kh, kw, C), dtype=np.float32)
    for a in range(kh):
        for b in range(kw):
            cols[:, :, :, a, b, :] = xp[:, a * dh: a * dh + (oh - 1) * sh + 1: sh,
                                        b * dw: b * dw + (ow - 1) * sw + 1: sw, :]
    return (cols.reshape(N * oh * ow, -1) @ w.reshape(-1, O)).reshape(N, oh, ow, O)


class Float32ConvLSTM(Adapter):
    def __init__(self, mutation: str | None = None):
        if mutation not in MUTATIONS:
            raise ValueError(f"unknown mutation {mutation!r}")
        self.mutation = mutation
        self.name = "float32-numpy" if mutation is None else f"mutant-{mutation}"

    def capabilities(self) -> Capabilities:
        return Capabilities(activation=SUPPORTED_ACTIVATIONS, recurrent_activation=SUPPORTED_ACTIVATIONS,
                            dtype=frozenset({"float32"}), go_backwards=True, mask=False)

    def run(self, case: Case) -> Outcome:
        start = time.perf_counter()
        if case.kernel is None:
            return Outcome(status=REFUSED, detail="no initializers: give it weights")
        missing = self.capabilities().missing(required_features(case))
        if missing:
            return Outcome(status=REFUSED, detail=f"outside capabilities: {missing}")
        try:
            outputs = self._run(case)
        except ValueError as exc:
            return Outcome(status=RAISED, error=ErrorInfo.from_exception(exc, CALL))
        structure = "list" if len(outputs) > 1 else "tensor"
        return Outcome(status=OK, outputs=[o.astype(np.float64) for o in outputs],
                       structure=structure, dtypes=["float32"] * len(outputs),
                       duration_s=time.perf_counter() - start)

    def _run(self, case: Case):
        m = self.mutation
        cfg = case.config
        F = int(cfg["filters"])
        strides, dilation = _pair(cfg.get("strides", 1)), _pair(cfg.get("dilation_rate", 1))
        padding = str(cfg.get("padding", "valid")).lower()
        cf = cfg.get("data_format") == "channels_first"
        act = _act(cfg.get("activation", "tanh"), m)
        ract = _act(cfg.get("recurrent_activation", "sigmoid"), m)
        x = case.inputs.astype(np.float32)
        if cf:
            x = np.moveaxis(x, 2, -1)
        B, T = x.shape[:2]
        K = case.kernel.astype(np.float32)
        U = case.recurrent_kernel.astype(np.float32)
        b = (case.bias if cfg.get("use_bias", True) else np.zeros(4 * F)).astype(np.float32).copy()
        if m == "forget_bias_plus_0.01":
            b[F:2 * F] += np.float32(0.01)
        if m == "swap_input_forget":
            perm = np.r_[F:2 * F, 0:F, 2 * F:4 * F]
            K, U, b = K[..., perm], U[..., perm], b[perm]
        # The input convolution for all B*T frames at once.
        xs = x.reshape((B * T,) + x.shape[2:])
        zx = _conv(xs, K, strides, dilation, padding, m) + b
        zx = zx.reshape((B, T) + zx.shape[1:])
        h = np.zeros(zx.shape[:1] + zx.shape[2:4] + (F,), dtype=np.float32)
        c = np.zeros_like(h)
        order = list(range(T))
        if cfg.get("go_backwards") and m != "no_reverse_backwards":
            order.reverse()
        outs = []
        for t in order:
            if m == "recurrent_valid":
                zh = _conv(h, U, (1, 1), (1, 1), "valid")
                ph, pw = h.shape[1] - zh.shape[1], h.shape[2] - zh.shape[2]
                zh = np.pad(zh, ((0, 0), (0, ph), (0, pw), (0, 0)))
            else:
                zh = _conv(h, U, (1, 1), (1, 1), "same", m)
            z = zx[:, t] + zh
            i, f, o = ract(z[..., :F]), ract(z[..., F:2 * F]), ract(z[..., 3 * F:])
            c = f * c + i * act(z[..., 2 * F:3 * F])
            h = o * act(c)
            outs.append(h)
        out = np.stack(outs, 1) if cfg.get("return_sequences") else outs[-1]
        if cf:
            out = np.moveaxis(out, -1, 2 if cfg.get("return_sequences") else 1)
            h, c = np.moveaxis(h, -1, 1), np.moveaxis(c, -1, 1)
        if cfg.get("return_state"):
            return [c if m == "output_is_c" and not cfg.get("return_sequences") else out, h, c]
        return [out]


def correct():
    return Float32ConvLSTM()


def forget_bias_mutant():
    return Float32ConvLSTM("forget_bias_plus_0.01")
