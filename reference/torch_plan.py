"""The PyTorch reference's building blocks: activations, the plan, helpers.

A :class:`Plan` is everything about one (config, shapes, dtype, device) that
is not data: which path computes it (im2col GEMMs for small problems, the
library convolution, the C kernels of :mod:`.native`, Winograd for big 3x3
float32 problems) and the activations.  Inference (:mod:`.torch_infer`) and
training (:mod:`.torch_train`) share the helpers here: the hoisted input
projection, gate reordering, padding, im2col, the C kernels' wrappers and the
batch parallelism.  Torch itself is imported lazily, inside the functions.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np

from convlstm_conformance.reference import native
from convlstm_conformance.reference.config import Geometry, LayerSpec

#: Output positions (GEMM rows) per hoisted input-projection chunk (see the
#: module docstring); a chunk holds at least one time step.
CHUNK_ROWS = 16384
#: Scratch for the im2col matrix of a weight gradient, in bytes.
COLS_BYTES = 16 << 20
#: Problems whose per-step GEMM has at most this many rows (B*H'*W') use the
#: im2col path instead of the library convolution.
SMALL_ROWS = 2048
#: Small maskless inference with at most this many filters runs on the C
#: kernel (reference/native), per dtype.  Its copies specialised for F <= 16
#: keep the 4F accumulators in registers; measured against the operator path
#: on one thread, it takes 0.26x (fuzzer size) to 0.9x the time in float32 up
#: to F = 16, and in float64 (half the lanes per vector) 0.4x to 0.9x up to
#: F = 8 but 1.1x-1.2x at F = 16.  Past F = 16 it is 1.3x-3.9x slower.
NATIVE_MAX_FILTERS = {"float32": 16, "float64": 8}
#: Fewest input channels a Winograd convolution sums over.  Its rounding
#: errors scale with products of weights and inputs that direct convolution
#: never forms (each transform mixes a 4x4 tile), so they are bounded by the
#: tolerance model's direct-summation magnitude only where many channel
#: products average out: on dense data the worst element uses 0.69 of that
#: bound at one channel and 0.015 at eight (reference/benchmarks/winograd_accuracy.py,
#: figures in benchmarks/README.md).
WINOGRAD_MIN_CHANNELS = 8


# --------------------------------------------------------------------------
# Activations (Keras 3 definitions, keras/src/activations/activations.py)


def torch_activation(name: str) -> Callable:
    """Out-of-place activation ``name`` as Keras 3 defines it."""
    import torch
    import torch.nn.functional as tf

    def softplus(x):
        # log(1 + e^x) without torch's threshold=20 shortcut, which is off by
        # up to e^-20 relative: visible against a float64 oracle.
        return torch.clamp_min(x, 0) + torch.log1p(torch.exp(-torch.abs(x)))

    def hard_sigmoid(x):
        return torch.clamp(x + 3.0, 0.0, 6.0) / 6.0

    table = {
        "tanh": torch.tanh,
        "sigmoid": torch.sigmoid,
        "hard_sigmoid": hard_sigmoid,
        "relu": torch.relu,
        "relu6": lambda x: torch.clamp(x, 0.0, 6.0),
        "leaky_relu": lambda x: tf.leaky_relu(x, 0.2),
        "elu": tf.elu,
        "selu": tf.selu,
        "celu": tf.celu,
        "softplus": softplus,
        "softsign": lambda x: x / (1.0 + torch.abs(x)),
        "squareplus": lambda x: (x + torch.sqrt(x * x + 4.0)) / 2.0,
        "soft_shrink": lambda x: tf.softshrink(x, 0.5),
        "hard_shrink": lambda x: torch.where(torch.abs(x) > 0.5, x, torch.zeros_like(x)),
        "tanh_shrink": lambda x: x - torch.tanh(x),
        "hard_tanh": lambda x: torch.clamp(x, -1.0, 1.0),
        "sparse_plus": lambda x: torch.where(
            x <= -1, torch.zeros_like(x),
            torch.where(x >= 1, x, 0.25 * (x + 1.0) * (x + 1.0))),
        "sparse_sigmoid": lambda x: torch.where(
            x <= -1, torch.zeros_like(x),
            torch.where(x >= 1, torch.ones_like(x), 0.5 * (x + 1.0))),
        "silu": tf.silu,
        "swish": tf.silu,
        "gelu": tf.gelu,                      # exact (erf) form: Keras's default
        "exponential": torch.exp,
        "hard_silu": lambda x: x * hard_sigmoid(x),
        "hard_swish": lambda x: x * hard_sigmoid(x),
        "mish": lambda x: x * torch.tanh(softplus(x)),
        "log_sigmoid": tf.logsigmoid,
        "linear": lambda x: x,
    }
    return table[name]


def _inplace(name: str, fn: Callable) -> Callable:
    """In-place form of an activation, for the inference loop's buffers."""
    fast = {"tanh": "tanh_", "sigmoid": "sigmoid_", "relu": "relu_", "exponential": "exp_"}
    if name == "linear":
        return lambda t: t
    if name in fast:
        method = fast[name]
        return lambda t: getattr(t, method)()
    return lambda t: t.copy_(fn(t))


def gate_activations(plan) -> tuple[Callable, Callable]:
    """(gates_, act_) for the inference loops: ``gates_(z)`` applies the
    activations in place to a pre-activation z whose last axis holds the gate
    blocks [i f o | c] (the order reorder_gates gives); ``act_`` is the
    in-place cell activation.  With fast tanh the c block was doubled, so
    sigmoid gives (tanh + 1) / 2 there, and sigmoid everywhere is one call."""
    spec = plan.spec
    F3 = 3 * spec.filters
    act_ = _inplace(spec.activation, plan.act)
    ract_ = _inplace(spec.recurrent_activation, plan.ract)
    if plan.fast_tanh and spec.recurrent_activation == "sigmoid":
        return (lambda z: z.sigmoid_()), act_
    c_block_ = (lambda t: t.sigmoid_()) if plan.fast_tanh else act_

    def gates_(z):
        ract_(z[..., :F3])
        c_block_(z[..., F3:])
    return gates_, act_


# --------------------------------------------------------------------------
# The PyTorch computation


@dataclass
class Plan:
    """Everything about one (config, shapes, dtype, device) that is not data."""

    spec: LayerSpec
    geo: Geometry
    dtype: Any            # torch dtype
    device: Any           # torch device
    small: bool           # im2col GEMM instead of the library convolution
    # tanh computed as 2*sigmoid(2x) - 1 (see make_plan)
    fast_tanh: bool
    act: Callable
    ract: Callable
    # How the C kernel computes this plan's inference (see _native_call), or None.
    native: Any = None
    # The C gate arithmetic for the convolution-library path (_native_gates), or None.
    native_gates: Any = None
    # The C training cell (forward, backward) for tanh/sigmoid layers, or None.
    native_cell: Any = None
    # The C library whose Winograd kernels compute the 3x3 recurrent
    # convolution (and its gradients), or None.
    winograd: Any = None


def make_plan(spec: LayerSpec, geo: Geometry, dtype, device) -> Plan:
    import torch
    rows = geo.B * geo.Ho * geo.Wo
    # Torch's CPU tanh is ~3x slower per element than its sigmoid (and
    # 2.5x slower again on a strided gate slice), so on the CPU in float32 the
    # candidate gate's tanh is computed as 2*sigmoid(2z) - 1: doubling the
    # c-gate weights and bias is exact in binary floating point, and the
    # identity's rounding (a few units of roundoff, absolute) is inside the
    # activation allowance of the error model.  Float64 keeps the library tanh.
    fast_tanh = (spec.activation == "tanh" and device.type == "cpu"
                 and dtype == torch.float32)
    plan = Plan(spec, geo, dtype, device, small=rows <= SMALL_ROWS, fast_tanh=fast_tanh,
                 act=torch_activation(spec.activation),
                 ract=torch_activation(spec.recurrent_activation))
    lib = _native_library(plan)          # checked once, for all three kernels
    if lib is not None:
        plan.native = _native_call(plan, lib)
        plan.native_gates = _native_gates(plan, lib)
        plan.native_cell = _native_cell(plan, lib)
    plan.winograd = _native_winograd(plan)    # any activation: it convolves only
    return plan


# Gate order inside this implementation: i, f, o, c (Keras: i, f, c, o), so the
# three recurrent-activation gates form one contiguous slice.
GATE_ORDER = (0, 1, 3, 2)


def reorder_gates(w, F: int, scale_c: bool):
    """Canonical last-axis gate blocks i,f,c,o -> i,f,o,c (c doubled for fast tanh)."""
    import torch
    blocks = [w[..., g * F:(g + 1) * F] for g in GATE_ORDER]
    if scale_c:
        blocks[3] = blocks[3] * 2
    return torch.cat(blocks, dim=-1)


def conv_weight(w):
    """(kh, kw, Cin, O) -> (O, Cin, kh, kw) in channels_last memory (a view of it)."""
    return w.permute(3, 2, 0, 1)


def im2col(x, kh, kw, sh, sw, dh, dw, Ho, Wo):
    """x (N, Hp, Wp, C) contiguous -> (N*Ho*Wo, kh*kw*C) patches, (kh, kw, C) order."""
    N, _, _, C = x.shape
    s0, s1, s2, s3 = x.stride()
    view = x.as_strided((N, Ho, Wo, kh, kw, C),
                        (s0, s1 * sh, s2 * sw, s1 * dh, s2 * dw, s3))
    return view.reshape(N * Ho * Wo, kh * kw * C)


def pad_nhwc(x, pads):
    import torch.nn.functional as tf
    pt, pb, pl, pr = pads
    if not any(pads):
        return x
    return tf.pad(x, (0, 0, pl, pr, pt, pb))


class Projector:
    """The hoisted input convolution: frames (N, H, W, C) -> (N, H', W', 4F)."""

    def __init__(self, plan: Plan, K, bias, dmask=None):
        # K: (kh, kw, C, 4F) in internal gate order; bias (4F,) or None.
        # dmask: per-gate input dropout (4, B, H, W, C) in internal order, or None.
        self.p = plan
        self.K = K
        self.bias = bias
        self.dmask = dmask

    def __call__(self, frames):
        import torch
        import torch.nn.functional as tf
        p, g = self.p, self.p.geo
        spec = p.spec
        kh, kw = spec.kernel
        (sh, sw), (dh, dw) = spec.strides, spec.dilation
        N = frames.shape[0]
        F4 = 4 * spec.filters
        if self.dmask is not None:
            # Each gate sees its own masked copy of the input: a grouped
            # convolution over 4*C channels computes all four in one call.
            reps = N // g.B
            m = self.dmask.permute(1, 2, 3, 0, 4)              # B, H, W, 4, C
            x = (frames.view(reps, g.B, g.H, g.W, 1, g.C) * m).reshape(N, g.H, g.W, 4 * g.C)
            x = pad_nhwc(x, g.pad_in)
            w = self.K.reshape(kh, kw, g.C, 4, F4 // 4).permute(3, 4, 2, 0, 1)
            w = w.reshape(F4, g.C, kh, kw)
            out = tf.conv2d(x.permute(0, 3, 1, 2), w, self.bias, (sh, sw), 0, (dh, dw), 4)
            return out.permute(0, 2, 3, 1)
        if p.small:
            x = pad_nhwc(frames, g.pad_in).contiguous()
            cols = im2col(x, kh, kw, sh, sw, dh, dw, g.Ho, g.Wo)
            K2 = self.K.reshape(kh * kw * g.C, F4)
            out = (torch.addmm(self.bias, cols, K2) if self.bias is not None
                   else torch.mm(cols, K2))
            return out.view(N, g.Ho, g.Wo, F4)
        pt, pb, pl, pr = g.pad_in
        if pt == pb and pl == pr:
            x, pad = frames, (pt, pl)
        else:
            x, pad = pad_nhwc(frames, g.pad_in), (0, 0)
        out = tf.conv2d(x.permute(0, 3, 1, 2), conv_weight(self.K), self.bias,
                        (sh, sw), pad, (dh, dw))
        return out.permute(0, 2, 3, 1)


def frames_time_major(x, spec: LayerSpec):
    """Canonical inputs -> (T, B, H, W, C) contiguous, in processing order."""
    if spec.channels_first:
        x = x.permute(1, 0, 3, 4, 2)
    else:
        x = x.transpose(0, 1)
    if spec.go_backwards:
        x = x.flip(0)
    return x.contiguous()


def state_to_nhwc(s, spec: LayerSpec):
    return s.permute(0, 2, 3, 1) if spec.channels_first else s


def chunk_steps(plan: Plan) -> int:
    g = plan.geo
    rows = g.B * g.Ho * g.Wo
    return max(1, min(g.T, -(-CHUNK_ROWS // rows)))


class _Threads:
    """Run small problems on one intra-op thread.

    A few microseconds of work per operator cannot amortise an OpenMP fork and
    barrier, and on a loaded machine a barrier waiting for a descheduled
    thread costs milliseconds: small problems are faster on one thread.
    """

    def __init__(self, plan: Plan):
        import torch
        self.torch = torch
        self.active = plan.small and plan.device.type == "cpu"

    def __enter__(self):
        if self.active:
            self.old = self.torch.get_num_threads()
            if self.old > 1:
                self.torch.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        if self.active and self.old > 1:
            self.torch.set_num_threads(self.old)


_GATE_MATRICES: dict = {}


def gate_matrix(F: int, scale_c: bool, dtype, device):
    """(4F, 4F) matrix reordering gate blocks i,f,c,o -> i,f,o,c (c doubled if asked).

    Multiplying by it is exact (one nonzero, 1 or 2, per column) and costs one
    operator call, where slicing and concatenating costs five: what matters
    for the small problems that use it.
    """
    import torch
    key = (F, scale_c, dtype, device)
    P = _GATE_MATRICES.get(key)
    if P is None:
        P = torch.zeros((4 * F, 4 * F), dtype=dtype, device=device)
        for dst, src in enumerate(GATE_ORDER):
            scale = 2.0 if (scale_c and dst == 3) else 1.0
            P[src * F:(src + 1) * F, dst * F:(dst + 1) * F] = torch.eye(F) * scale
        _GATE_MATRICES[key] = P
    return P



def native_applies(plan: Plan) -> bool:
    """Whether _infer_native computes this plan (when it has no mask)."""
    return plan.native is not None


def _native_library(plan: Plan):
    """The C kernels' library where they can compute this plan at all (CPU,
    float32/float64, activations they implement), else None."""
    import torch
    spec = plan.spec
    if not (plan.device.type == "cpu" and plan.dtype in (torch.float32, torch.float64)
            and spec.activation in native.ACTIVATIONS
            and spec.recurrent_activation in native.ACTIVATIONS):
        return None
    return native.library()


def _native_call(plan: Plan, lib):
    """(kernel, geometry prefix, state shape, sequence shape, numpy dtype) for the
    whole-call C kernel of ``lib`` (see _native_library), or None where it does
    not apply: it takes small problems up to NATIVE_MAX_FILTERS."""
    import torch
    spec, g = plan.spec, plan.geo
    f32 = plan.dtype == torch.float32
    F = spec.filters
    if (not plan.small or g.T < 1
            or F > NATIVE_MAX_FILTERS["float32" if f32 else "float64"]):
        return None
    (sh, sw), (dh, dw), (kh, kw) = spec.strides, spec.dilation, spec.kernel
    prefix = (g.B, g.T, g.H, g.W, g.C, F, g.Ho, g.Wo, kh, kw, sh, sw, dh, dw,
              g.pad_in[0], g.pad_in[2], g.pad_rec[0], g.pad_rec[2], int(spec.go_backwards),
              native.ACTIVATIONS[spec.activation], native.ACTIVATIONS[spec.recurrent_activation])
    return (lib.convlstm_small_f32 if f32 else lib.convlstm_small_f64, prefix,
            (g.B, g.Ho, g.Wo, F),
            (g.B, g.T, g.Ho, g.Wo, F) if spec.return_sequences else None,
            np.float32 if f32 else np.float64)


def _native_gates(plan: Plan, lib):
    """The C gate arithmetic (lstm_gates_*) of ``lib`` for _infer without a mask."""
    import torch
    return lib.lstm_gates_f32 if plan.dtype == torch.float32 else lib.lstm_gates_f64


def _native_cell(plan: Plan, lib):
    """(forward, backward) of ``lib``'s C training cell for the fused
    tanh/sigmoid cell of _train, or None for other activations."""
    import torch
    spec = plan.spec
    if not (spec.activation == "tanh" and spec.recurrent_activation == "sigmoid"):
        return None
    suffix = "f32" if plan.dtype == torch.float32 else "f64"
    return getattr(lib, "lstm_cell_fwd_" + suffix), getattr(lib, "lstm_cell_bwd_" + suffix)


def _native_winograd(plan: Plan):
    """The C library where its Winograd convolution computes this plan's
    recurrent convolution: big float32 CPU problems with a 3x3 kernel, 4F a
    multiple of 8 (its vector width) and at least WINOGRAD_MIN_CHANNELS
    filters, else None.  Small problems keep the im2col path: their GEMMs
    are too short for the transforms to pay.  ``CONVLSTM_WINOGRAD=0`` turns
    it off."""
    import torch
    if os.environ.get("CONVLSTM_WINOGRAD", "1") == "0":
        return None
    if (plan.small or plan.device.type != "cpu" or plan.dtype != torch.float32
            or plan.spec.kernel != (3, 3)):
        return None
    F = plan.spec.filters
    if (4 * F) % 8 or F < WINOGRAD_MIN_CHANNELS:
        return None
    return native.library()


# F(2x2, 3x3)'s filter transform (reference/native/winograd.c): entries 0,
# +-1/2 and 1, so U = G w G^T is exact in float64 before its one rounding.
_WINOGRAD_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))


def winograd_weights(w):
    """Weights (3, 3, K, N) -> (16, K, N) float32 contiguous, U = G w G^T per
    channel pair, computed in float64 and rounded once."""
    import torch
    G = torch.tensor(_WINOGRAD_G, dtype=torch.float64, device=w.device)
    u = torch.einsum("ra,abkn,sb->rskn", G, w.to(torch.float64), G)
    return u.reshape(16, w.shape[2], w.shape[3]).to(torch.float32).contiguous()


def conv3x3_in_c(lib, xp, U, out, *, k0: int = 0, k1: int | None = None,
                  bias=None, accumulate: bool = False, pad: tuple[int, int] = (0, 0)) -> None:
    """out (B, H', W', N) = (or +=) the 3x3 convolution of xp[..., k0:k1] by
    the Winograd weights U (16, K, N) rows k0:k1 (plus bias), on this thread,
    by ``lib`` (a plan's ``winograd``).

    Output (y, x) reads xp's rows y-pad[0]..y-pad[0]+2 and columns
    x-pad[1]..x-pad[1]+2; outside xp they read as zero.  xp and out need unit
    channel stride."""
    K, N = U.shape[1], U.shape[2]
    k1 = K if k1 is None else k1
    if xp.stride(3) != 1 or out.stride(3) != 1 or U.stride(2) != 1:
        raise ValueError("the C Winograd convolution needs contiguous channels")
    B, Ho, Wo, _ = out.shape
    g = native.geometry_array((B, Ho, Wo, xp.shape[1], xp.shape[2], *pad, k1 - k0, N,
                               int(accumulate), 0, K * N, *xp.stride()[:3], *out.stride()[:3]))
    status = lib.winograd3x3_f32(g, xp.data_ptr() + 4 * k0, U.data_ptr() + 4 * k0 * N,
                                 bias.data_ptr() if bias is not None else None, out.data_ptr())
    if status != 0:
        raise MemoryError("the C Winograd convolution could not allocate its blocks")


def weight_grad3x3_in_c(lib, xp, dy):
    """The gradient (3, 3, K, N) float32 of sum(dy * conv3x3(xp, w)) with
    respect to w, for xp (B, H'+2, W'+2, K) bordered as in conv3x3_in_c and
    dy (B, H', W', N), both with unit channel stride: the gradient dU of the
    Winograd weights in C, then dw = G^T dU G (the adjoint of U = G w G^T)
    in float64."""
    import torch
    if xp.stride(3) != 1 or dy.stride(3) != 1:
        raise ValueError("the C Winograd weight gradient needs contiguous channels")
    B, Ho, Wo, N = dy.shape
    K = xp.shape[3]
    dU = torch.zeros((16, K, N), dtype=torch.float32, device=xp.device)
    g = native.geometry_array((B, Ho, Wo, xp.shape[1], xp.shape[2], 0, 0, K, N, 0, 0, 0,
                               *xp.stride()[:3], *dy.stride()[:3]))
    if lib.winograd3x3_wgrad_f32(g, xp.data_ptr(), dy.data_ptr(), dU.data_ptr()) != 0:
        raise MemoryError("the C Winograd weight gradient could not allocate its blocks")
    G = torch.tensor(_WINOGRAD_G, dtype=torch.float64, device=xp.device)
    dw = torch.einsum("ra,rskn,sb->abkn", G, dU.view(4, 4, K, N).to(torch.float64), G)
    return dw.to(torch.float32)


def gates_in_c(plan: Plan, z, c, h, out) -> None:
    """z (B, H', W', 4F) pre-activations in the internal gate order, unscaled
    -> c updated in place, h (a view into the state buffer) and out (the
    step's output slot, or None) written.  Every array NHWC with unit channel
    stride (what the convolution library returns for channels_last inputs)."""
    spec = plan.spec
    B, Ho, Wo, _ = z.shape
    strides = [t.stride() if t is not None else (0, 0, 0, 1) for t in (z, c, h, out)]
    if any(st[3] != 1 for st in strides):
        raise ValueError(f"the C gate kernel needs contiguous channels, got strides {strides}")
    g = native.geometry_array((B, Ho, Wo, spec.filters, native.ACTIVATIONS[spec.activation],
                               native.ACTIVATIONS[spec.recurrent_activation],
                               *(v for st in strides for v in st[:3])))
    status = plan.native_gates(g, z.data_ptr(), c.data_ptr(), h.data_ptr(),
                               out.data_ptr() if out is not None else None)
    if status != 0:
        raise MemoryError("the C gate kernel could not allocate its scratch buffer")



def slice_rows(t, lo, hi, axis=0):
    """Batch rows lo:hi of an optional tensor."""
    if t is None:
        return None
    return t[lo:hi] if axis == 0 else t[:, lo:hi]


# Batch parallelism.  PyTorch's intra-op parallelism splits every operator
# over the cores and joins after it: hundreds of joins per call, and on a
# machine shared with other work each join waits for the most descheduled
# core.  Big problems on several cores instead run one batch slice per core,
# each on one intra-op thread, joining once per call.
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def part_count(plan: Plan) -> int:
    """How many batch slices run_parts makes: one per core for big problems
    on the CPU, else one."""
    import torch
    if plan.small or plan.device.type != "cpu":
        return 1
    return max(1, min(torch.get_num_threads(), plan.geo.B))


def run_parts(plan: Plan, fn):
    """fn(sub_plan, lo, hi) over batch slices; returns the list of results."""
    import torch
    B = plan.geo.B
    n = part_count(plan)
    if n <= 1:
        with _Threads(plan):
            return [fn(plan, 0, B)]
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers < n:
            _POOL = ThreadPoolExecutor(max_workers=n, thread_name_prefix="ref-torch")
        pool = _POOL
    bounds = [round(i * B / n) for i in range(n + 1)]
    grad_mode = torch.is_grad_enabled()      # thread-local: pass it on

    def task(lo, hi):
        torch.set_num_threads(1)
        with torch.set_grad_enabled(grad_mode):
            return fn(replace(plan, geo=replace(plan.geo, B=hi - lo), native=None), lo, hi)

    old = torch.get_num_threads()
    try:
        futures = [pool.submit(task, lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]
        return [f.result() for f in futures]
    finally:
        torch.set_num_threads(old)
