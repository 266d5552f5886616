"""The fast reference ConvLSTM2D, in PyTorch (CPU and CUDA).

Same contract as the float64 oracle (Keras 3 semantics, see
``specs/convlstm2d.yaml``), written for speed instead of clarity.  Inference:

* Tensors stay physically NHWC (PyTorch "channels_last"): oneDNN's fastest CPU
  convolution layout, and the layout in which a gate block is a slice of the
  last axis, so no transposes happen inside the loop.
* The four gates share one recurrent convolution with 4F output channels.
* The input convolution is hoisted out of the time loop where that helps: one
  GEMM over many frames.  Hoisting pays where one time step is too small a GEMM
  to run efficiently; past ``CHUNK_ROWS`` output positions a chunk is already
  efficient and more only costs memory (4F channels per position), so frames
  are projected in chunks of about that size: all B*T frames at once for small
  problems, one step at a time for big ones.
* Big problems whose input convolution has the recurrent one's geometry
  (stride 1, no dilation, 'same': the common case) go one step further: x_t
  rides along as C extra channels of the state buffer, and a single
  convolution over F+C channels yields the whole pre-activation.
* The state lives inside a zero-bordered buffer, so the recurrent 'same'
  convolution (odd or even kernel) needs no per-step padding copy; without an
  initial state the first step skips the recurrent convolution (h = 0).
* The gate arithmetic runs in place on the convolution's output, on
  preallocated buffers; on the CPU in float32, tanh is computed as
  2*sigmoid(2x) - 1 (see :func:`make_plan`).  Without a mask, and where the C
  kernels of ``adapters/native`` are available, a step's gate arithmetic is
  one C call (:func:`_gates_in_c`) reading and writing every position once,
  where the operators make ten passes over megabytes.
* Big float32 problems with 3x3 kernels compute the recurrent convolution (and
  the input one where x_t rides along, see :func:`_infer`) by Winograd's
  F(2x2, 3x3) in C (``adapters/native/winograd.c``, :func:`_conv3x3_in_c`):
  16 multiplications per 2x2 output tile where direct convolution takes 36.
  The direct convolution already ran at the machine's GEMM rate, so no
  formulation of it could go faster.  The training path's per-step
  convolution takes it too, with its input and weight gradients (ConvStep).
  Its rounding is not that of a summation order: see
  :data:`WINOGRAD_MIN_CHANNELS` for where it is used and why.
* Small problems replace the library convolution by im2col GEMMs and run on
  one thread: oneDNN's per-call overhead (~50 us) and OpenMP's fork/join
  dominate at those sizes, so that path is written for operator count.  Where
  a C compiler is available, small maskless float32/float64 inference with
  few filters and the common activations runs instead as one call of a C
  kernel (``adapters/native``, see :data:`NATIVE_MAX_FILTERS`): at fuzzer
  sizes even a few operator dispatches cost more than the arithmetic.  Big
  problems on several cores run one batch slice per core instead of splitting
  every operator (see :func:`_run_parts`).

Training and gradients run an out-of-place path under autograd, with two
hand-written backward passes: the fused gate arithmetic (one contiguous
gradient for the four gates; one C call each way where ``adapters/native``
is available) and the per-step convolution (oneDNN for the input gradient,
one GEMM for the weight gradient).

The module also holds the framework-free configuration handling (argument
validation, output geometry, case checks) that the JAX reference shares, so
both references reject exactly the same configurations with the same messages.
Torch itself is imported lazily.
"""
from __future__ import annotations

import os
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

import numpy as np

from adapters import native
from adapters.base import (ADAPTER_ERROR, CALL, CONSTRUCT, OK, RAISED, REFUSED, Adapter,
                           Capabilities, Case, ErrorInfo, Outcome, Refused)

# PyTorch's CPU kernels run on OpenMP, whose threads by default spin after
# every parallel region.  On a machine shared with other work a spinning
# thread steals the core a descheduled peer needs, and a forward pass runs
# two to three times slower than on one thread.  Passive waiting costs a few
# microseconds per region on an idle machine.  It takes effect only if torch
# (libgomp) is not loaded yet, and never overrides a user's setting.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# --------------------------------------------------------------------------
# Configuration: framework-free, shared with adapters/reference_jax.py

#: The elementwise Keras 3 activations, by their registered names.
ACTIVATIONS = frozenset({
    "tanh", "sigmoid", "hard_sigmoid", "relu", "relu6", "leaky_relu", "elu", "selu",
    "celu", "softplus", "softsign", "squareplus", "soft_shrink", "hard_shrink",
    "tanh_shrink", "hard_tanh", "sparse_plus", "sparse_sigmoid", "silu", "swish",
    "gelu", "exponential", "hard_silu", "hard_swish", "mish", "log_sigmoid", "linear"})
#: Names Keras 3 knows that are not elementwise (or need extra arguments):
#: legitimate configurations these references decline instead of rejecting.
NON_ELEMENTWISE = frozenset({"softmax", "log_softmax", "sparsemax", "glu", "threshold"})

#: Every keyword ConvLSTM2D accepts (its own, RNN's and Layer's); anything else
#: is rejected as Keras rejects it.  "device" is the suite's own key.
KNOWN_KEYS = frozenset({
    "filters", "kernel_size", "strides", "padding", "data_format", "dilation_rate",
    "activation", "recurrent_activation", "use_bias", "kernel_initializer",
    "recurrent_initializer", "bias_initializer", "unit_forget_bias", "kernel_regularizer",
    "recurrent_regularizer", "bias_regularizer", "activity_regularizer", "kernel_constraint",
    "recurrent_constraint", "bias_constraint", "dropout", "recurrent_dropout", "seed",
    "return_sequences", "return_state", "go_backwards", "stateful", "unroll",
    "zero_output_for_mask", "trainable", "dtype", "autocast", "name", "input_shape",
    "input_dim", "device"})

DTYPES = ("float64", "float32", "float16", "bfloat16")

#: Output positions (GEMM rows) per hoisted input-projection chunk (see the
#: module docstring); a chunk holds at least one time step.
CHUNK_ROWS = 16384
#: Scratch for the im2col matrix of a weight gradient, in bytes.
COLS_BYTES = 16 << 20
#: Problems whose per-step GEMM has at most this many rows (B*H'*W') use the
#: im2col path instead of the library convolution.
SMALL_ROWS = 2048
#: Small maskless inference with at most this many filters runs on the C
#: kernel (adapters/native), per dtype.  Its copies specialised for F <= 16
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
#: bound at one channel and 0.015 at eight (benchmarks/winograd_accuracy.py,
#: figures in benchmarks/README.md).
WINOGRAD_MIN_CHANNELS = 8


@dataclass(frozen=True)
class LayerSpec:
    """A validated, normalised ConvLSTM2D configuration (hashable: a cache key)."""

    filters: int
    kernel: tuple[int, int]
    strides: tuple[int, int]
    dilation: tuple[int, int]
    padding: str
    channels_first: bool
    activation: str
    recurrent_activation: str
    use_bias: bool
    return_sequences: bool
    return_state: bool
    go_backwards: bool
    stateful: bool
    dropout: float
    recurrent_dropout: float
    zero_output_for_mask: bool
    seed: int | None


def _int_pair(value: Any, name: str) -> tuple[int, int]:
    """Keras's standardize_tuple for rank 2, positive values only."""
    bad = ValueError(f"`{name}` must be a positive integer or a tuple/list of 2 positive "
                     f"integers. Received {name}={value!r}")
    if isinstance(value, bool):
        raise bad
    if isinstance(value, (int, np.integer)):
        pair = (int(value), int(value))
    else:
        try:
            items = tuple(value)
        except TypeError:
            raise bad from None
        if len(items) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer))
                                  for v in items):
            raise bad
        pair = (int(items[0]), int(items[1]))
    if min(pair) < 1:
        raise bad
    return pair


def _activation_name(value: Any, which: str) -> str:
    if value is None:
        return "linear"
    if isinstance(value, str):
        if value in ACTIVATIONS:
            return value
        if value in NON_ELEMENTWISE:
            raise Refused(f"{which}={value!r} is not an elementwise activation")
    raise ValueError(f"Could not interpret {which} function identifier: {value!r}")


def _rate(value: Any, name: str) -> float:
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a float between 0 and 1, got {value!r}") from None
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"`{name}` must be a float between 0 and 1, got {value!r}")
    return rate


def parse_config(config: Mapping[str, Any]) -> LayerSpec:
    """Validate a Keras-named config; ValueError (construction errors) or Refused."""
    unknown = sorted(set(config) - KNOWN_KEYS)
    if unknown:
        raise ValueError("Unrecognized keyword arguments passed to ConvLSTM2D: "
                         f"{ {k: config[k] for k in unknown} }")
    if "filters" not in config or "kernel_size" not in config:
        raise ValueError("ConvLSTM2D needs `filters` and `kernel_size`")
    filters = config["filters"]
    if isinstance(filters, bool) or not isinstance(filters, (int, np.integer)) or filters < 1:
        raise ValueError(f"`filters` must be a positive integer, got filters={filters!r}")
    kernel = _int_pair(config["kernel_size"], "kernel_size")
    strides = _int_pair(config.get("strides", 1), "strides")
    dilation = _int_pair(config.get("dilation_rate", 1), "dilation_rate")
    if max(strides) > 1 and max(dilation) > 1:
        raise ValueError("Specifying `strides > 1` is not compatible with `dilation_rate > 1`. "
                         f"Received: strides={strides} and dilation_rate={dilation}")
    padding = config.get("padding", "valid")
    if not isinstance(padding, str) or padding.lower() not in ("valid", "same"):
        raise ValueError(f"`padding` must be 'valid' or 'same' (case-insensitive), "
                         f"got padding={padding!r}")
    fmt = config.get("data_format")
    fmt = "channels_last" if fmt is None else str(fmt).lower()
    if fmt not in ("channels_last", "channels_first"):
        raise ValueError("`data_format` must be 'channels_last' or 'channels_first', "
                         f"got data_format={config.get('data_format')!r}")
    seed = config.get("seed")
    return LayerSpec(
        filters=int(filters), kernel=kernel, strides=strides, dilation=dilation,
        padding=padding.lower(), channels_first=fmt == "channels_first",
        activation=_activation_name(config.get("activation", "tanh"), "activation"),
        recurrent_activation=_activation_name(config.get("recurrent_activation", "sigmoid"),
                                              "recurrent_activation"),
        use_bias=bool(config.get("use_bias", True)),
        return_sequences=bool(config.get("return_sequences", False)),
        return_state=bool(config.get("return_state", False)),
        go_backwards=bool(config.get("go_backwards", False)),
        stateful=bool(config.get("stateful", False)),
        dropout=_rate(config.get("dropout", 0.0), "dropout"),
        recurrent_dropout=_rate(config.get("recurrent_dropout", 0.0), "recurrent_dropout"),
        zero_output_for_mask=bool(config.get("zero_output_for_mask", False)),
        seed=None if seed is None else int(seed))


def same_padding(n: int, k: int, s: int, d: int) -> tuple[int, int]:
    """(before, after) for 'same': TF/XLA put the odd extra row/column after."""
    out = -(-n // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
    return total // 2, total - total // 2


@dataclass(frozen=True)
class Geometry:
    """Shapes of one call (channels_last terms whatever the data_format)."""

    B: int
    T: int
    H: int
    W: int
    C: int
    Ho: int
    Wo: int
    pad_in: tuple[int, int, int, int]    # input conv: top, bottom, left, right
    pad_rec: tuple[int, int, int, int]   # recurrent conv (stride 1, same)

    @property
    def state_shape(self) -> tuple[int, int, int]:
        return (self.Ho, self.Wo)


def geometry(spec: LayerSpec, shape: tuple[int, ...]) -> Geometry:
    """Output geometry for an input of ``shape``; ValueError (call errors)."""
    if len(shape) != 5:
        raise ValueError(f"Input 0 of ConvLSTM2D is incompatible: expected ndim=5 "
                         f"(batch, time, rows, cols, channels), found ndim={len(shape)} "
                         f"with shape {tuple(shape)}")
    if spec.channels_first:
        B, T, C, H, W = shape
    else:
        B, T, H, W, C = shape
    if min(B, T, C) < 1:
        raise ValueError(f"input shape {tuple(shape)} has an empty batch, time or channel "
                         "dimension")
    (kh, kw), (sh, sw), (dh, dw) = spec.kernel, spec.strides, spec.dilation
    if spec.padding == "same":
        pt, pb = same_padding(H, kh, sh, dh)
        pl, pr = same_padding(W, kw, sw, dw)
    else:
        pt = pb = pl = pr = 0
    Ho = (H + pt + pb - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + pl + pr - dw * (kw - 1) - 1) // sw + 1
    if Ho < 1 or Wo < 1 or H < 1 or W < 1:
        raise ValueError(f"input spatial size {H}x{W} is too small for kernel_size "
                         f"{spec.kernel} with dilation_rate {spec.dilation} and padding "
                         f"'{spec.padding}': the output size would be {Ho}x{Wo} (negative "
                         "or zero dimension)")
    rt, rb = same_padding(Ho, kh, 1, 1)
    rl, rr = same_padding(Wo, kw, 1, 1)
    return Geometry(B, T, H, W, C, Ho, Wo, (pt, pb, pl, pr), (rt, rb, rl, rr))


def check_case(spec: LayerSpec, geo: Geometry, case: Case) -> None:
    """Shapes of the case's arrays against the geometry; ValueError (call errors)."""
    kh, kw = spec.kernel
    F = spec.filters
    want = {"kernel": (kh, kw, geo.C, 4 * F), "recurrent_kernel": (kh, kw, F, 4 * F)}
    if spec.use_bias:
        want["bias"] = (4 * F,)
    for name, shape in want.items():
        got = np.shape(getattr(case, name))
        if got != shape:
            raise ValueError(f"{name} has shape {got}, expected {shape} for this config")
    state = ((geo.B, F, geo.Ho, geo.Wo) if spec.channels_first
             else (geo.B, geo.Ho, geo.Wo, F))
    if case.initial_state is not None:
        if len(case.initial_state) != 2:
            raise ValueError(f"initial_state must be [h, c], got {len(case.initial_state)} "
                             "tensors")
        for name, s in zip(("h", "c"), case.initial_state):
            if np.shape(s) != state:
                raise ValueError(f"initial_state {name} has shape {np.shape(s)}, expected "
                                 f"the state shape {state}")
    if case.mask is not None and np.shape(case.mask) != (geo.B, geo.T):
        raise ValueError(f"mask must have shape (batch, timesteps) = {(geo.B, geo.T)}, "
                         f"got {np.shape(case.mask)}")
    if case.dropout_mask is not None and np.shape(case.dropout_mask) != (4, geo.B, geo.H,
                                                                         geo.W, geo.C):
        raise ValueError(f"dropout_mask has shape {np.shape(case.dropout_mask)}, expected "
                         f"{(4, geo.B, geo.H, geo.W, geo.C)}")
    if (case.recurrent_dropout_mask is not None
            and np.shape(case.recurrent_dropout_mask) != (4, geo.B, geo.Ho, geo.Wo, F)):
        raise ValueError(f"recurrent_dropout_mask has shape "
                         f"{np.shape(case.recurrent_dropout_mask)}, expected "
                         f"{(4, geo.B, geo.Ho, geo.Wo, F)}")
    if case.cotangent is not None:
        out = ((geo.B, geo.T) if spec.return_sequences else (geo.B,)) + state[1:]
        if np.shape(case.cotangent) != out:
            raise ValueError(f"cotangent has shape {np.shape(case.cotangent)}, expected the "
                             f"output shape {out}")


def dropout_active(spec: LayerSpec, case: Case) -> tuple[bool, bool]:
    """Whether input / recurrent dropout apply to this call.

    Keras applies dropout only in training and only for 0 < rate < 1 (a rate of
    exactly 1 disables it); an injected mask is used whenever it is given in
    training, as the oracle does.
    """
    if not case.training:
        return False, False
    inp = case.dropout_mask is not None or 0.0 < spec.dropout < 1.0
    rec = case.recurrent_dropout_mask is not None or 0.0 < spec.recurrent_dropout < 1.0
    return inp, rec


def base_capabilities(devices: frozenset) -> Capabilities:
    names = frozenset(ACTIVATIONS) | {None}
    return Capabilities(
        activation=names, recurrent_activation=names, dtype=frozenset(DTYPES),
        device=devices, mask=True, stateful=True, initial_state=True, return_state=True,
        return_sequences=True, go_backwards=True, dropout=True, dropout_injection=True,
        gradients=True, argument_validation=True)


class ReferenceAdapter(Adapter):
    """The run() protocol both references share: validate, compute, report.

    Subclasses implement :meth:`_compute`, which gets validated inputs and
    returns ``(outputs, grads, final_state)`` as float64 NumPy arrays in the
    case's layouts (``final_state`` as framework tensors, for stateful layers).
    """

    device = "cpu"
    framework = ""        # "torch" or "jax": names the adapter, ref-<framework>-<device>

    def __init__(self, device: str = "cpu") -> None:
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        self.device = device
        self.name = f"ref-{self.framework}-{device}"
        self._state: dict[Any, Any] = {}   # stateful carry, keyed by layer identity

    def reset_states(self) -> None:
        """Forget the state a stateful layer carried between calls."""
        self._state.clear()

    reset = reset_states   # the worker protocol's name

    def run(self, case: Case) -> Outcome:
        start = time.perf_counter()
        # Every case is a new layer object: a stateful layer carries state only
        # between the calls of one case (Case.followups).
        self.reset_states()
        if hasattr(self, "_seed"):
            self._seed = None      # a seeded new layer starts its mask sequence afresh
        if hasattr(self, "_draws"):
            self._draws = 0
        try:
            outcome = self._run(case, start)
            if outcome.status == OK and case.followups:
                try:
                    outcome.followup_outputs = self._followups(case)
                except ValueError as exc:   # a later call the layer must refuse
                    return Outcome(status=RAISED, error=ErrorInfo.from_exception(exc, CALL),
                                   duration_s=time.perf_counter() - start)
            return outcome
        except Refused as exc:
            return Outcome(status=REFUSED, detail=str(exc),
                           duration_s=time.perf_counter() - start)
        except Exception:
            return Outcome(status=ADAPTER_ERROR, detail=traceback.format_exc()[-4000:],
                           duration_s=time.perf_counter() - start)

    def _run(self, case: Case, start: float) -> Outcome:
        def raised(exc: Exception, phase: str) -> Outcome:
            return Outcome(status=RAISED, error=ErrorInfo.from_exception(exc, phase),
                           duration_s=time.perf_counter() - start)

        try:
            spec = parse_config(case.config)
        except ValueError as exc:
            return raised(exc, CONSTRUCT)
        device = case.config.get("device", "cpu")
        if device != self.device:
            raise Refused(f"{self.name} runs on {self.device}, the case asks for {device!r}")
        if case.dtype not in DTYPES:
            raise Refused(f"dtype {case.dtype!r} is not supported")
        if case.kernel is None or case.recurrent_kernel is None or (
                spec.use_bias and case.bias is None):
            try:   # what is wrong with the call is said before what is missing
                geometry(spec, np.shape(case.inputs))
            except ValueError as exc:
                return raised(exc, CALL)
            raise Refused("the reference has no initializers: the case must carry weights")
        try:
            geo = geometry(spec, np.shape(case.inputs))
            check_case(spec, geo, case)
        except ValueError as exc:
            return raised(exc, CALL)
        outputs, grads = self._compute(spec, geo, case)
        names = ["output", "h", "c"] if spec.return_state else ["output"]
        return Outcome(status=OK, outputs=outputs[:len(names)],
                       structure="list" if spec.return_state else "tensor",
                       dtypes=[case.dtype] * len(names), grads=grads,
                       duration_s=time.perf_counter() - start)

    def _followups(self, case: Case) -> list[list[np.ndarray]]:
        """Later calls on the same layer: carried state, reset or explicit state."""
        import dataclasses
        spec = parse_config(case.config)
        results = []
        for call in case.followups:
            if call.reset:
                self.reset_states()
            sub = dataclasses.replace(case, inputs=call.inputs, initial_state=call.initial_state,
                                      followups=[], mask=None, cotangent=None)
            geo = geometry(spec, np.shape(sub.inputs))
            if spec.stateful and geo.B != np.shape(case.inputs)[0] and call.initial_state is None:
                raise ValueError(f"a stateful layer was called with batch size {geo.B} after "
                                 f"{np.shape(case.inputs)[0]}: the batch size must stay the same")
            check_case(spec, geo, sub)
            outputs, _ = self._compute(spec, geo, sub)
            results.append(outputs[:3 if spec.return_state else 1])
        return results

    def _state_key(self, spec: LayerSpec, geo: Geometry, dtype: str) -> Any:
        # A stateful layer's state is reused only by a call of the same layer
        # (same config and state shape); any other call starts from zeros.
        return (spec, geo.B, geo.Ho, geo.Wo, geo.C, dtype)

    def _compute(self, spec: LayerSpec, geo: Geometry, case: Case):
        raise NotImplementedError


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


def _gate_activations(plan) -> tuple[Callable, Callable]:
    """(gates_, act_) for the inference loops: ``gates_(z)`` applies the
    activations in place to a pre-activation z whose last axis holds the gate
    blocks [i f o | c] (the order _reorder_gates gives); ``act_`` is the
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
class _Plan:
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


def make_plan(spec: LayerSpec, geo: Geometry, dtype, device) -> _Plan:
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
    plan = _Plan(spec, geo, dtype, device, small=rows <= SMALL_ROWS, fast_tanh=fast_tanh,
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
_GATE_ORDER = (0, 1, 3, 2)


def _reorder_gates(w, F: int, scale_c: bool):
    """Canonical last-axis gate blocks i,f,c,o -> i,f,o,c (c doubled for fast tanh)."""
    import torch
    blocks = [w[..., g * F:(g + 1) * F] for g in _GATE_ORDER]
    if scale_c:
        blocks[3] = blocks[3] * 2
    return torch.cat(blocks, dim=-1)


def _conv_weight(w):
    """(kh, kw, Cin, O) -> (O, Cin, kh, kw) in channels_last memory (a view of it)."""
    return w.permute(3, 2, 0, 1)


def _im2col(x, kh, kw, sh, sw, dh, dw, Ho, Wo):
    """x (N, Hp, Wp, C) contiguous -> (N*Ho*Wo, kh*kw*C) patches, (kh, kw, C) order."""
    N, _, _, C = x.shape
    s0, s1, s2, s3 = x.stride()
    view = x.as_strided((N, Ho, Wo, kh, kw, C),
                        (s0, s1 * sh, s2 * sw, s1 * dh, s2 * dw, s3))
    return view.reshape(N * Ho * Wo, kh * kw * C)


def _pad_nhwc(x, pads):
    import torch.nn.functional as tf
    pt, pb, pl, pr = pads
    if not any(pads):
        return x
    return tf.pad(x, (0, 0, pl, pr, pt, pb))


class _Projector:
    """The hoisted input convolution: frames (N, H, W, C) -> (N, H', W', 4F)."""

    def __init__(self, plan: _Plan, K, bias, dmask=None):
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
            x = _pad_nhwc(x, g.pad_in)
            w = self.K.reshape(kh, kw, g.C, 4, F4 // 4).permute(3, 4, 2, 0, 1)
            w = w.reshape(F4, g.C, kh, kw)
            out = tf.conv2d(x.permute(0, 3, 1, 2), w, self.bias, (sh, sw), 0, (dh, dw), 4)
            return out.permute(0, 2, 3, 1)
        if p.small:
            x = _pad_nhwc(frames, g.pad_in).contiguous()
            cols = _im2col(x, kh, kw, sh, sw, dh, dw, g.Ho, g.Wo)
            K2 = self.K.reshape(kh * kw * g.C, F4)
            out = (torch.addmm(self.bias, cols, K2) if self.bias is not None
                   else torch.mm(cols, K2))
            return out.view(N, g.Ho, g.Wo, F4)
        pt, pb, pl, pr = g.pad_in
        if pt == pb and pl == pr:
            x, pad = frames, (pt, pl)
        else:
            x, pad = _pad_nhwc(frames, g.pad_in), (0, 0)
        out = tf.conv2d(x.permute(0, 3, 1, 2), _conv_weight(self.K), self.bias,
                        (sh, sw), pad, (dh, dw))
        return out.permute(0, 2, 3, 1)


def _frames_time_major(x, spec: LayerSpec):
    """Canonical inputs -> (T, B, H, W, C) contiguous, in processing order."""
    if spec.channels_first:
        x = x.permute(1, 0, 3, 4, 2)
    else:
        x = x.transpose(0, 1)
    if spec.go_backwards:
        x = x.flip(0)
    return x.contiguous()


def _state_to_nhwc(s, spec: LayerSpec):
    return s.permute(0, 2, 3, 1) if spec.channels_first else s


def _chunk_steps(plan: _Plan) -> int:
    g = plan.geo
    rows = g.B * g.Ho * g.Wo
    return max(1, min(g.T, -(-CHUNK_ROWS // rows)))


class _Threads:
    """Run small problems on one intra-op thread.

    A few microseconds of work per operator cannot amortise an OpenMP fork and
    barrier, and on a loaded machine a barrier waiting for a descheduled
    thread costs milliseconds: small problems are faster on one thread.
    """

    def __init__(self, plan: _Plan):
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


def _gate_matrix(F: int, scale_c: bool, dtype, device):
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
        for dst, src in enumerate(_GATE_ORDER):
            scale = 2.0 if (scale_c and dst == 3) else 1.0
            P[src * F:(src + 1) * F, dst * F:(dst + 1) * F] = torch.eye(F) * scale
        _GATE_MATRICES[key] = P
    return P


def _infer_small(plan: _Plan, x, K, U, bias, h0, c0):
    """forward_infer for small problems without a mask: im2col GEMMs, fewest calls.

    Each operator call costs microseconds of dispatch, as much as its
    arithmetic at these sizes, so this path is written for call count.
    """
    import torch
    spec, g = plan.spec, plan.geo
    F = spec.filters
    B, T, Ho, Wo = g.B, g.T, g.Ho, g.Wo
    kh, kw = spec.kernel
    dt, dev = plan.dtype, plan.device
    P = _gate_matrix(F, plan.fast_tanh, dt, dev)
    K2 = torch.mm(K.reshape(kh * kw * g.C, 4 * F), P)
    U2 = torch.mm(U.reshape(kh * kw * F, 4 * F), P)
    frames = _frames_time_major(x, spec).view(T * B, g.H, g.W, g.C)
    frames = _pad_nhwc(frames, g.pad_in)
    cols = _im2col(frames, kh, kw, *spec.strides, *spec.dilation, Ho, Wo)
    xp = (torch.addmm(torch.mv(P.t(), bias), cols, K2) if bias is not None
          else torch.mm(cols, K2))
    rows = B * Ho * Wo
    rt, rb, rl, rr = g.pad_rec
    hp = torch.zeros((B, Ho + rt + rb, Wo + rl + rr, F), dtype=dt, device=dev)
    h = hp[:, rt:rt + Ho, rl:rl + Wo, :]
    if h0 is not None:
        h.copy_(_state_to_nhwc(h0, spec))
        c = _state_to_nhwc(c0, spec).contiguous().clone()
    else:
        c = torch.zeros((B, Ho, Wo, F), dtype=dt, device=dev)
    # Every buffer and view the loop touches exists before it starts, so a
    # step is eight operator calls: patch copy, GEMM, gates, cell, output.
    s0, s1, s2, s3 = hp.stride()
    patches = hp.as_strided((B, Ho, Wo, kh, kw, F), (s0, s1, s2, s1, s2, s3))
    cols = torch.empty((B, Ho, Wo, kh, kw, F), dtype=dt, device=dev)
    cols2 = cols.view(rows, kh * kw * F)
    z = torch.empty((rows, 4 * F), dtype=dt, device=dev)
    z4 = z.view(B, Ho, Wo, 4 * F)
    i, f, o, gc = z4.split(F, dim=-1)
    tmp = torch.empty((B, Ho, Wo, F), dtype=dt, device=dev)
    seq = (torch.empty((B, T, Ho, Wo, F), dtype=dt, device=dev)
           if spec.return_sequences else None)
    gates_, act_c = _gate_activations(plan)
    xps = xp.split(rows)
    for s in range(T):
        if s == 0 and h0 is None:     # h = 0: no recurrent term
            z.copy_(xps[0])
        else:
            cols.copy_(patches)
            torch.addmm(xps[s], cols2, U2, out=z)
        gates_(z4)
        c.mul_(f)
        if plan.fast_tanh:
            c.addcmul_(i, gc, value=2.0).sub_(i)
        else:
            c.addcmul_(i, gc)
        if spec.activation == "linear":
            torch.mul(o, c, out=h)
        else:
            torch.mul(o, torch.tanh(c, out=tmp) if spec.activation == "tanh"
                      else act_c(tmp.copy_(c)), out=h)
        if seq is not None:
            seq[:, s] = h
    return (seq if seq is not None else h), h, c


def native_applies(plan: _Plan) -> bool:
    """Whether _infer_native computes this plan (when it has no mask)."""
    return plan.native is not None


def _native_library(plan: _Plan):
    """The C kernels' library where they can compute this plan at all (CPU,
    float32/float64, activations they implement), else None."""
    import torch
    spec = plan.spec
    if not (plan.device.type == "cpu" and plan.dtype in (torch.float32, torch.float64)
            and spec.activation in native.ACTIVATIONS
            and spec.recurrent_activation in native.ACTIVATIONS):
        return None
    return native.library()


def _native_call(plan: _Plan, lib):
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


def _native_gates(plan: _Plan, lib):
    """The C gate arithmetic (lstm_gates_*) of ``lib`` for _infer without a mask."""
    import torch
    return lib.lstm_gates_f32 if plan.dtype == torch.float32 else lib.lstm_gates_f64


def _native_cell(plan: _Plan, lib):
    """(forward, backward) of ``lib``'s C training cell for the fused
    tanh/sigmoid cell of _train, or None for other activations."""
    import torch
    spec = plan.spec
    if not (spec.activation == "tanh" and spec.recurrent_activation == "sigmoid"):
        return None
    suffix = "f32" if plan.dtype == torch.float32 else "f64"
    return getattr(lib, "lstm_cell_fwd_" + suffix), getattr(lib, "lstm_cell_bwd_" + suffix)


def _native_winograd(plan: _Plan):
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


# F(2x2, 3x3)'s filter transform (adapters/native/winograd.c): entries 0,
# +-1/2 and 1, so U = G w G^T is exact in float64 before its one rounding.
_WINOGRAD_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))


def _winograd_weights(w):
    """Weights (3, 3, K, N) -> (16, K, N) float32 contiguous, U = G w G^T per
    channel pair, computed in float64 and rounded once."""
    import torch
    G = torch.tensor(_WINOGRAD_G, dtype=torch.float64, device=w.device)
    u = torch.einsum("ra,abkn,sb->rskn", G, w.to(torch.float64), G)
    return u.reshape(16, w.shape[2], w.shape[3]).to(torch.float32).contiguous()


def _conv3x3_in_c(lib, xp, U, out, *, k0: int = 0, k1: int | None = None,
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


def _weight_grad3x3_in_c(lib, xp, dy):
    """The gradient (3, 3, K, N) float32 of sum(dy * conv3x3(xp, w)) with
    respect to w, for xp (B, H'+2, W'+2, K) bordered as in _conv3x3_in_c and
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


def _gates_in_c(plan: _Plan, z, c, h, out) -> None:
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


def _infer_native(plan: _Plan, x, K, U, bias, h0, c0):
    """_infer_small in one call of the C kernel (adapters/native), or None
    where the kernel does not apply.  Arguments and results as forward_infer;
    written for call overhead, which at fuzzer sizes is a fifth of the time."""
    import torch
    if plan.native is None:
        return None
    kernel, prefix, state_shape, seq_shape, np_dtype = plan.native
    cf = plan.spec.channels_first
    xs = x.stride()
    if cf:                                   # (b, t, c, y, x) -> strides in (b, t, y, x, c)
        xs = (xs[0], xs[1], xs[3], xs[4], xs[2])
    ss = (0, 0, 0, 0)
    if h0 is not None:
        if h0.stride() != c0.stride():
            h0, c0 = h0.contiguous(), c0.contiguous()
        ss = h0.stride()
        if cf:                               # (b, f, y, x) -> (b, y, x, f)
            ss = (ss[0], ss[2], ss[3], ss[1])
    # NumPy allocates a small result in half the time torch.empty takes.
    h = torch.from_numpy(np.empty(state_shape, np_dtype))
    c = torch.from_numpy(np.empty(state_shape, np_dtype))
    seq = torch.from_numpy(np.empty(seq_shape, np_dtype)) if seq_shape else None
    status = kernel(native.geometry_array(prefix + xs + ss), x.data_ptr(),
                    K.contiguous().data_ptr(), U.contiguous().data_ptr(),
                    bias.contiguous().data_ptr() if bias is not None else None,
                    h0.data_ptr() if h0 is not None else None,
                    c0.data_ptr() if c0 is not None else None,
                    seq.data_ptr() if seq is not None else None, h.data_ptr(), c.data_ptr())
    if status != 0:
        raise MemoryError("the C kernel could not allocate its work buffer")
    return (seq if seq is not None else h), h, c


def forward_infer(plan: _Plan, x, K, U, bias, h0, c0, mask):
    """Inference without autograd: in place, on preallocated buffers.

    Arguments are torch tensors in canonical layouts (x in the data_format,
    K/U/bias in Keras layout, h0/c0 in the data_format or None, mask (B, T)
    bool or None).  Returns (output, h, c) with output and states physically
    NHWC: (B, T, H', W', F) / (B, H', W', F).
    """
    import torch
    if plan.small and mask is None:
        # One C call, single-threaded: no batch slices, no thread settings.
        done = _infer_native(plan, x, K, U, bias, h0, c0)
        if done is not None:
            return done

    if plan.small:
        def part(sub, lo, hi):
            if mask is None:
                return _infer_small(sub, x[lo:hi], K, U, bias, h0, c0)
            return _infer(sub, x, K, U, bias, h0, c0, mask)
        return _run_parts(plan, part)[0]

    # Batch slices write their rows of the results in place, each on its own
    # core: no concatenation afterwards (megabytes copied on one core while
    # the other waits, and the results held twice).
    out_shape, state = _result_shapes(plan)
    h_all = torch.empty(state, dtype=plan.dtype, device=plan.device)
    c_all = torch.empty(state, dtype=plan.dtype, device=plan.device)
    if plan.spec.return_sequences:
        out_all = torch.empty(out_shape, dtype=plan.dtype, device=plan.device)
    else:   # the last output is the last h, except where a mask holds it back
        out_all = h_all if mask is None else torch.empty_like(h_all)

    def part(sub, lo, hi):
        _infer(sub, x[lo:hi], K, U, bias, _rows(h0, lo, hi), _rows(c0, lo, hi),
               _rows(mask, lo, hi), dest=(out_all[lo:hi], h_all[lo:hi], c_all[lo:hi]))

    _run_parts(plan, part)
    return out_all, h_all, c_all


def _result_shapes(plan: _Plan) -> tuple[tuple, tuple]:
    """(output, state) shapes of a whole batch's results, physically NHWC."""
    g = plan.geo
    state = (g.B, g.Ho, g.Wo, plan.spec.filters)
    return ((g.B, g.T) + state[1:] if plan.spec.return_sequences else state), state


def _infer(plan: _Plan, x, K, U, bias, h0, c0, mask, dest=None):
    """forward_infer on one batch slice.  ``dest`` (output, h, c): tensors the
    results are written into (the slice's rows of the whole batch's; output
    may be h itself), or None to allocate them."""
    import torch
    import torch.nn.functional as tf
    spec, g = plan.spec, plan.geo
    F = spec.filters
    B, T, Ho, Wo = g.B, g.T, g.Ho, g.Wo
    kh, kw = spec.kernel
    dt, dev = plan.dtype, plan.device

    # Without a mask the gate arithmetic is one C call per step where the
    # kernel is available; it takes the c-gate weights as they are.
    in_c = mask is None and plan.native_gates is not None
    scale = plan.fast_tanh and not in_c
    Ki = _reorder_gates(K, F, scale)
    Ui = _reorder_gates(U, F, scale)
    bi = _reorder_gates(bias, F, scale) if bias is not None else None
    # When the input convolution has the recurrent one's geometry (stride 1,
    # no dilation, 'same') and one time step is a big enough GEMM on its own,
    # the frame x_t rides along as C extra channels of the state buffer: one
    # convolution over F+C channels yields the whole pre-activation, with no
    # projection buffer and no separate add pass.
    ride = (not plan.small and spec.padding == "same" and spec.strides == (1, 1)
            and spec.dilation == (1, 1))
    extra = g.C if ride else 0

    # The state h lives inside a zero-bordered buffer: the recurrent 'same'
    # convolution then reads it with no padding work at all.
    rt, rb, rl, rr = g.pad_rec
    hp = torch.zeros((B, Ho + rt + rb, Wo + rl + rr, F + extra), dtype=dt, device=dev)
    h = hp[:, rt:rt + Ho, rl:rl + Wo, :F]
    if dest is not None:
        c = dest[2]
        c.zero_()
    else:
        c = torch.zeros((B, Ho, Wo, F), dtype=dt, device=dev)
    if h0 is not None:
        h.copy_(_state_to_nhwc(h0, spec))
        c.copy_(_state_to_nhwc(c0, spec))
    wino = plan.winograd is not None
    if ride:
        xin = hp[:, rt:rt + Ho, rl:rl + Wo, F:]
        frames = x.permute(0, 1, 3, 4, 2) if spec.channels_first else x   # B, T, H, W, C
        Wcat = torch.cat([Ui, Ki], dim=2)
        Wc = _conv_weight(Wcat)
        if wino:
            Uw = _winograd_weights(Wcat)
            zbuf = torch.empty((B, Ho, Wo, 4 * F), dtype=dt, device=dev)
    else:
        project = _Projector(plan, Ki, bi)
        frames = _frames_time_major(x, spec)                               # T, B, H, W, C
        steps_per_chunk = _chunk_steps(plan)
        U2 = Ui.reshape(kh * kw * F, 4 * F)
        Wc = _conv_weight(Ui)
        if wino:
            Uw = _winograd_weights(Ui)
    hp_nchw = hp.permute(0, 3, 1, 2)
    tmp = torch.empty((B, Ho, Wo, F), dtype=dt, device=dev)

    seq = None
    if spec.return_sequences:
        seq = dest[0] if dest is not None else torch.empty((B, T, Ho, Wo, F), dtype=dt, device=dev)
    if mask is not None:
        active = mask.flip(1) if spec.go_backwards else mask
        active = active.to(dev).view(B, T, 1, 1, 1)
        h_new = torch.empty((B, Ho, Wo, F), dtype=dt, device=dev)
        prev_out = torch.zeros((B, Ho, Wo, F), dtype=dt, device=dev)
        zeros = torch.zeros((), dtype=dt, device=dev)
    gates_, act_c = _gate_activations(plan)

    xp = None
    # Without an initial state h is zero at the first step, and so is its
    # convolution: that step needs the input half only.
    zero_h = h0 is None
    for s in range(T):
        if ride:
            xin.copy_(frames[:, T - 1 - s if spec.go_backwards else s])
            first = s == 0 and zero_h        # the input channels only
            if wino and not (first and g.C < WINOGRAD_MIN_CHANNELS):
                z = zbuf
                _conv3x3_in_c(plan.winograd, hp, Uw, z, k0=F if first else 0, bias=bi)
            elif first:
                z = tf.conv2d(hp_nchw[:, F:], _conv_weight(Ki), bi).permute(0, 2, 3, 1)
            else:
                z = tf.conv2d(hp_nchw, Wc, bi).permute(0, 2, 3, 1)
        else:
            j = s % steps_per_chunk
            if j == 0:
                xp = None   # release the previous chunk before the next is made
                t1 = min(T, s + steps_per_chunk)
                xp = project(frames[s:t1].view((t1 - s) * B, g.H, g.W, g.C))
            xs = xp[j * B:(j + 1) * B]
            if s == 0 and zero_h:
                z = xs      # the chunk is ours: its steps can be overwritten in place
            elif plan.small:
                z = torch.addmm(xs.reshape(B * Ho * Wo, 4 * F),
                                _im2col(hp, kh, kw, 1, 1, 1, 1, Ho, Wo), U2)
                z = z.view(B, Ho, Wo, 4 * F)
            elif wino and xs.stride(3) == 1:
                z = xs      # accumulated into in place, as at the first step
                _conv3x3_in_c(plan.winograd, hp, Uw, z, accumulate=True)
            else:
                z = tf.conv2d(hp_nchw, Wc).permute(0, 2, 3, 1)
                z.add_(xs)
        if in_c:
            _gates_in_c(plan, z, c, h, seq[:, s] if seq is not None else None)
            continue
        gates_(z)
        i, f, o, gc = z.split(F, dim=-1)
        if mask is not None:
            m = active[:, s]
            c_prev = c.clone()
        c.mul_(f)
        if plan.fast_tanh:
            # c' = f*c + i*(2*s - 1) with s = sigmoid(2 z_c)
            c.addcmul_(i, gc, value=2.0).sub_(i)
        else:
            c.addcmul_(i, gc)
        target = h_new if mask is not None else h
        if spec.activation == "linear":
            torch.mul(o, c, out=target)
        else:
            if plan.fast_tanh:
                # tanh(c') = 2 sigmoid(2c') - 1: five cheap passes beat one tanh
                torch.mul(c, 2.0, out=tmp).sigmoid_().mul_(2.0).sub_(1.0)
            elif spec.activation == "tanh":
                torch.tanh(c, out=tmp)
            else:
                act_c(tmp.copy_(c))
            torch.mul(o, tmp, out=target)
        if mask is not None:
            torch.where(m, c, c_prev, out=c)
            torch.where(m, h_new, h, out=h)
            fill = zeros if spec.zero_output_for_mask else prev_out
            torch.where(m, h_new, fill, out=prev_out)
            if seq is not None:
                seq[:, s].copy_(prev_out)
        elif seq is not None:
            seq[:, s].copy_(h)
    if spec.return_sequences:
        out = seq
    else:
        out = prev_out if mask is not None else h
    if dest is None:
        return out, h, c
    dest[1].copy_(h)
    if out is not seq and dest[0].data_ptr() != dest[1].data_ptr():   # output is not h itself
        dest[0].copy_(out)
    return dest


def _make_cell_class():
    import torch

    class LSTMCell(torch.autograd.Function):
        """The gate arithmetic of one step, fused, with a hand-written backward.

        z: (B, H', W', 4F) pre-activations in gate order i, f, o, c (the c block
        doubled when ``fast_tanh``: act = 2*sigmoid(z) - 1); c: previous cell
        state.  Saves the four gate values and tanh(c') (the least the backward
        needs) and returns dz as one contiguous tensor, so autograd does no
        per-gate slicing work.
        """

        @staticmethod
        def forward(ctx, z, c, fast_tanh, cell=None):
            F = c.shape[-1]
            ctx.cell = cell
            if cell is not None:
                # The C cell (adapters/native): one pass each way; c unscaled.
                z, c = z.contiguous(), c.contiguous()
                a, c_new, h = torch.empty_like(z), torch.empty_like(c), torch.empty_like(c)
                cell[0](c.numel() // F, F, z.data_ptr(), c.data_ptr(), a.data_ptr(),
                        c_new.data_ptr(), h.data_ptr())
                ctx.save_for_backward(a, c, c_new)
                return h, c_new
            if fast_tanh:
                a = torch.sigmoid(z)
            else:
                a = torch.empty_like(z)
                torch.sigmoid(z[..., :3 * F], out=a[..., :3 * F])
                torch.tanh(z[..., 3 * F:], out=a[..., 3 * F:])
            i, f, o, s = a.split(F, dim=-1)
            c_new = torch.mul(f, c)
            if fast_tanh:
                # c' = f c + i (2 s - 1); tanh(c') = 2 sigmoid(2 c') - 1
                c_new.addcmul_(i, s, value=2.0).sub_(i)
                tc = torch.mul(c_new, 2.0).sigmoid_().mul_(2.0).sub_(1.0)
            else:
                c_new.addcmul_(i, s)
                tc = torch.tanh(c_new)
            h = torch.mul(o, tc)
            ctx.fast_tanh = fast_tanh
            # c' rather than tanh(c'): c' lives on anyway (the next step's c),
            # so the backward recomputes tanh instead of keeping a copy.
            ctx.save_for_backward(a, c, c_new)
            return h, c_new

        @staticmethod
        def backward(ctx, dh, dc_new):
            # In place on the output buffers where possible: every pass here
            # is memory-bound, and fresh large tensors cost page faults.
            a, c, c_new = ctx.saved_tensors
            F = c.shape[-1]
            if ctx.cell is not None:
                dz, dc = torch.empty_like(a), torch.empty_like(c)

                # Contiguous copies, held in names until the call returns.
                dh = None if dh is None else dh.contiguous()
                dc_new = None if dc_new is None else dc_new.contiguous()
                ctx.cell[1](c.numel() // F, F, a.data_ptr(), c.data_ptr(), c_new.data_ptr(),
                            None if dh is None else dh.data_ptr(),
                            None if dc_new is None else dc_new.data_ptr(),
                            dz.data_ptr(), dc.data_ptr())
                return dz, dc, None, None
            i, f, o, s = a.split(F, dim=-1)
            if ctx.fast_tanh:     # the forward's own formula, for consistent gradients
                tc = torch.mul(c_new, 2.0).sigmoid_().mul_(2.0).sub_(1.0)
            else:
                tc = torch.tanh(c_new)
            if dh is None:
                dh = torch.zeros_like(c)
            dz = torch.empty_like(a)
            dzi, dzf, dzo, dzc = dz.split(F, dim=-1)
            # dc = dc' + dh o (1 - tanh(c')^2)
            dc = torch.mul(dh, o)
            dc.addcmul_(dc, tc * tc, value=-1.0)
            if dc_new is not None:
                dc.add_(dc_new)
            # x * y * (1 - y) computed as u = x * y; u - u * y
            torch.mul(dh, tc, out=dzo).mul_(o)
            dzo.addcmul_(dzo, o, value=-1.0)
            if ctx.fast_tanh:
                torch.mul(dc, s, out=dzi).mul_(2.0).sub_(dc)      # dc * g, g = 2 s - 1
            else:
                torch.mul(dc, s, out=dzi)
            dzi.mul_(i)
            dzi.addcmul_(dzi, i, value=-1.0)
            torch.mul(dc, c, out=dzf).mul_(f)
            dzf.addcmul_(dzf, f, value=-1.0)
            torch.mul(dc, i, out=dzc)
            if ctx.fast_tanh:                                     # d/dz 2 sigmoid = 2 s (1 - s)
                dzc.mul_(s)
                dzc.addcmul_(dzc, s, value=-1.0).mul_(2.0)
            else:                                                 # d/dz tanh = 1 - g^2
                dzc.addcmul_(dzc, s * s, value=-1.0)
            return dz, dc.mul_(f), None, None

    return LSTMCell


# Scratch buffers reused across the time steps of one backward pass (a fresh
# tens-of-megabytes buffer per step costs more in page faults than the copy
# into it); per thread, since batch parts run concurrently, and dropped by
# :func:`forward_backward` when the pass ends.
_TLS = threading.local()


def _workspaces() -> dict:
    if not hasattr(_TLS, "buffers"):
        _TLS.buffers = {}
    return _TLS.buffers


def _workspace(shape, dtype, device):
    import torch
    key = (tuple(shape), dtype, str(device))
    buffers = _workspaces()
    buf = buffers.get(key)
    if buf is None:
        buf = buffers[key] = torch.empty(shape, dtype=dtype, device=device)
    return buf


def _make_conv_class():
    import torch
    import torch.nn.functional as tf

    class ConvStep(torch.autograd.Function):
        """A stride-1, unpadded NHWC convolution whose weight gradient is a GEMM.

        inp (N, Hp, Wp, Cin) already padded, w (kh, kw, Cin, O), bias (O,) or
        None -> (N, Hp-kh+1, Wp-kw+1, O).  oneDNN computes the forward and the
        input gradient well; its weight gradient runs at about half the GEMM
        rate on CPUs without AVX-512, so the weight gradient here is the im2col
        matrix (kh*kw slab copies) times the output gradient, one GEMM.  With
        ``wino`` (a _WinogradWeights of w) all three are Winograd's F(2x2,
        3x3) in C instead, where _winograd_takes says so.
        """

        @staticmethod
        def forward(ctx, inp, w, bias, wino=None):
            ctx.save_for_backward(inp, w)
            ctx.has_bias = bias is not None
            ctx.wino = wino
            if _winograd_takes(wino, inp.shape[3], w):
                N, Hp, Wp, _ = inp.shape
                out = torch.empty((N, Hp - 2, Wp - 2, w.shape[3]), dtype=inp.dtype,
                                  device=inp.device)
                _conv3x3_in_c(wino.lib, inp, wino.forward(), out, bias=bias)
                return out
            return tf.conv2d(inp.permute(0, 3, 1, 2), w.permute(3, 2, 0, 1),
                             bias).permute(0, 2, 3, 1)

        @staticmethod
        def backward(ctx, dz):
            inp, w = ctx.saved_tensors
            kh, kw, cin, O = w.shape
            N, Hp, Wp, _ = inp.shape
            Ho, Wo = Hp - kh + 1, Wp - kw + 1
            dz = dz.contiguous()
            d_inp = d_w = d_b = None
            # The input gradient is the correlation of dz with the flipped,
            # transposed kernel: Winograd where it computes this convolution.
            if ctx.needs_input_grad[0] and _winograd_takes(ctx.wino, O, w.transpose(2, 3)):
                d_inp = torch.empty(inp.shape, dtype=inp.dtype, device=inp.device)
                _conv3x3_in_c(ctx.wino.lib, dz, ctx.wino.flipped(), d_inp, pad=(2, 2))
            elif ctx.needs_input_grad[0]:
                d_inp = torch.ops.aten.convolution_backward(
                    dz.permute(0, 3, 1, 2), inp.permute(0, 3, 1, 2), w.permute(3, 2, 0, 1),
                    None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
                    [True, False, False])[0].permute(0, 2, 3, 1)
            dz2 = dz.view(N * Ho * Wo, O)
            if ctx.needs_input_grad[1] and _winograd_takes(ctx.wino, cin, w):
                d_w = _weight_grad3x3_in_c(ctx.wino.lib, inp, dz)
            elif ctx.needs_input_grad[1]:
                # Images in chunks whose patch matrix stays under COLS_BYTES:
                # the GEMMs keep thousands of rows, the scratch stays small.
                per_image = Ho * Wo * kh * kw * cin * inp.element_size()
                n = max(1, min(N, COLS_BYTES // per_image))
                cols = _workspace((n, Ho, Wo, kh * kw, cin), inp.dtype, inp.device)
                d_w = torch.zeros((kh * kw * cin, O), dtype=inp.dtype, device=inp.device)
                for i0 in range(0, N, n):
                    m = min(n, N - i0)
                    part = cols[:m]
                    for a in range(kh):
                        for b in range(kw):
                            part[:, :, :, a * kw + b].copy_(inp[i0:i0 + m, a:a + Ho, b:b + Wo])
                    d_w.addmm_(part.view(m * Ho * Wo, kh * kw * cin).t(),
                               dz2[i0 * Ho * Wo:(i0 + m) * Ho * Wo])
                d_w = d_w.view(kh, kw, cin, O)
            if ctx.has_bias and ctx.needs_input_grad[2]:
                d_b = dz2.sum(0)
            return d_inp, d_w, d_b, None

    return ConvStep


class _WinogradWeights:
    """A plan's Winograd library with the transforms of one weight tensor w
    (3, 3, K, N), each made on first use: U for the convolution, and U of
    the flipped, transposed kernel for its input gradient.  The training
    path makes one per weight tensor per call; transforming on every step
    cost about 1.3 ms of a batch slice's step at size S."""

    def __init__(self, lib, w):
        self.lib, self.w = lib, w
        self._u = self._flipped = None

    def forward(self):
        if self._u is None:
            self._u = _winograd_weights(self.w)
        return self._u

    def flipped(self):
        if self._flipped is None:
            self._flipped = _winograd_weights(self.w.flip(0, 1).transpose(2, 3))
        return self._flipped


def _winograd_takes(wino, channels: int, w) -> bool:
    """Whether the C Winograd convolution (``wino``, a _WinogradWeights or
    None) computes a convolution over ``channels`` input channels with
    weights of w's shape (3, 3, channels, O): enough channels for its
    accuracy, O a multiple of its vector width."""
    return (wino is not None and tuple(w.shape[:2]) == (3, 3)
            and channels >= WINOGRAD_MIN_CHANNELS and w.shape[3] % 8 == 0)


class _LazyFunction:
    """An autograd Function built on first use, keeping torch imports lazy."""

    def __init__(self, make: Callable):
        self._make = make
        self._cls = None

    def apply(self, *args):
        if self._cls is None:
            self._cls = self._make()
        return self._cls.apply(*args)


_ConvStep = _LazyFunction(_make_conv_class)
_LSTMCell = _LazyFunction(_make_cell_class)


def forward_backward(plan: _Plan, x, K, U, bias, h0, c0, mask, cotangent=None,
                     dmask=None, rmask=None):
    """The training path: out of place, dropout masks, and gradients.

    Same arguments as :func:`forward_infer`, plus the cotangent of the output
    (NHWC like the output) and per-gate dropout multipliers (canonical gate
    order, channels_last, already scaled) or None.  Returns ``((output, h, c),
    grads)`` where grads are the gradients of sum(output * cotangent) w.r.t.
    (x, K, U, bias, h0, c0), None where an argument is None or no cotangent
    was given.  Arguments need not require grad.
    """
    import torch
    want = cotangent is not None

    def leaf(t):
        # A private autograd identity per batch part: parts run concurrently.
        return None if t is None else t.detach().requires_grad_(want)

    # With several batch slices, each writes its rows of the outputs and of
    # the per-sample gradients in place (as forward_infer does); the weight
    # gradients, to which every slice contributes, are summed afterwards.
    dest = None
    if _part_count(plan) > 1:
        out_shape, state = _result_shapes(plan)

        def like(shape, present=True):
            return torch.empty(shape, dtype=plan.dtype, device=plan.device) if present else None

        per_sample = (x, None, None, None, h0, c0)
        dest = ((like(out_shape), like(state), like(state)),
                tuple(like(a.shape, want) if a is not None else None for a in per_sample))

    def part(sub, lo, hi):
        args = [leaf(x[lo:hi]), leaf(K), leaf(U), leaf(bias),
                leaf(_rows(h0, lo, hi)), leaf(_rows(c0, lo, hi))]
        with torch.enable_grad():
            out, h, c = _train(sub, *args, _rows(mask, lo, hi), _rows(dmask, lo, hi, 1),
                               _rows(rmask, lo, hi, 1))
        grads = (None,) * 6
        if want:
            try:
                wanted = [a for a in args if a is not None]
                got = iter(torch.autograd.grad(out, wanted, cotangent[lo:hi],
                                               allow_unused=True))
                grads = tuple(None if a is None else next(got) for a in args)
            finally:
                _workspaces().clear()
        outs = (out.detach(), h.detach(), c.detach())
        if dest is None:
            return outs, grads
        for d, r in zip(dest[0] + dest[1], outs + grads):
            if d is not None and r is not None:
                d[lo:hi].copy_(r)
        return grads

    res = _run_parts(plan, part)
    if dest is None:
        return res[0]
    grads = list(dest[1])
    for i in (1, 2, 3):             # weights: every slice contributes
        if res[0][i] is not None:
            grads[i] = torch.stack([r[i] for r in res]).sum(0)
    return dest[0], tuple(grads)


def _rows(t, lo, hi, axis=0):
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


def _part_count(plan: _Plan) -> int:
    """How many batch slices _run_parts makes: one per core for big problems
    on the CPU, else one."""
    import torch
    if plan.small or plan.device.type != "cpu":
        return 1
    return max(1, min(torch.get_num_threads(), plan.geo.B))


def _run_parts(plan: _Plan, fn):
    """fn(sub_plan, lo, hi) over batch slices; returns the list of results."""
    import torch
    B = plan.geo.B
    n = _part_count(plan)
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


def _train(plan: _Plan, x, K, U, bias, h0, c0, mask, dmask, rmask):
    import torch
    import torch.nn.functional as tf
    spec, g = plan.spec, plan.geo
    F = spec.filters
    B, T, Ho, Wo = g.B, g.T, g.Ho, g.Wo
    dt, dev = plan.dtype, plan.device

    # The fused cell runs in C where available; it takes the c-gate weights
    # as they are (no fast-tanh doubling).
    cell = plan.native_cell
    scale = plan.fast_tanh and cell is None
    Ki = _reorder_gates(K, F, scale)
    Ui = _reorder_gates(U, F, scale)
    bi = _reorder_gates(bias, F, scale) if bias is not None else None
    order = list(_GATE_ORDER)
    dm = dmask[order] if dmask is not None else None
    rm = rmask[order] if rmask is not None else None
    frames = _frames_time_major(x, spec)
    # As in inference: with the recurrent geometry, x_t rides along as extra
    # input channels of one convolution per step (one backward call per step
    # instead of two, the input side's small-K GEMMs folded into a big one).
    ride = (not plan.small and dm is None and rm is None and spec.padding == "same"
            and spec.strides == (1, 1) and spec.dilation == (1, 1))
    # Each weight tensor's Winograd transforms, made once per call.
    wino = ((lambda w: _WinogradWeights(plan.winograd, w)) if plan.winograd is not None
            else (lambda w: None))
    if ride:
        Wcat = torch.cat([Ui, Ki], dim=2)
        wino_cat, wino_k = wino(Wcat), wino(Ki)
        xp = [frames]
    else:
        wino_u = wino(Ui)
        project = _Projector(plan, Ki, bi, dm)
        n = _chunk_steps(plan)
        xp = [project(frames[t0:t0 + n].reshape(-1, g.H, g.W, g.C)).reshape(
            -1, B, Ho, Wo, 4 * F) for t0 in range(0, T, n)]

    kh, kw = spec.kernel
    if rm is not None:
        # Per-gate masked copies of h, one grouped convolution.
        Ug = Ui.reshape(kh, kw, F, 4, F).permute(3, 4, 2, 0, 1).reshape(4 * F, F, kh, kw)
        rmp = rm.permute(1, 2, 3, 0, 4)                      # B, Ho, Wo, 4, F

        def recurrent(h):
            hg = (h.unsqueeze(3) * rmp).reshape(B, Ho, Wo, 4 * F)
            hg = _pad_nhwc(hg, g.pad_rec)
            return tf.conv2d(hg.permute(0, 3, 1, 2), Ug, groups=4).permute(0, 2, 3, 1)
    elif plan.small:
        U2 = Ui.reshape(kh * kw * F, 4 * F)

        def recurrent(h):
            hpad = _pad_nhwc(h, g.pad_rec).contiguous()
            return torch.mm(_im2col(hpad, kh, kw, 1, 1, 1, 1, Ho, Wo), U2).view(
                B, Ho, Wo, 4 * F)
    else:
        def recurrent(h):
            return _ConvStep.apply(_pad_nhwc(h, g.pad_rec).contiguous(), Ui, None, wino_u)

    def pre(xs, h, first):
        """Pre-activation z of one step (h = 0 when ``first``)."""
        if ride:      # xs is the frame x_t
            inp = xs if first else torch.cat([h, xs], dim=-1)
            return _ConvStep.apply(_pad_nhwc(inp, g.pad_rec).contiguous(),
                                   Ki if first else Wcat, bi,
                                   wino_k if first else wino_cat)
        return xs if first else xs + recurrent(h)   # xs is the projected x_t

    if h0 is not None:
        h, c = _state_to_nhwc(h0, spec), _state_to_nhwc(c0, spec)
    else:
        h = torch.zeros((B, Ho, Wo, F), dtype=dt, device=dev)
        c = torch.zeros((B, Ho, Wo, F), dtype=dt, device=dev)
    if mask is not None:
        active = (mask.flip(1) if spec.go_backwards else mask).to(dev).view(B, T, 1, 1, 1)
        prev_out = torch.zeros((B, Ho, Wo, F), dtype=dt, device=dev)
    F3 = 3 * F
    # The fused cell (hand-written backward) covers the default activations;
    # other activations go through autograd op by op.
    fused = spec.activation == "tanh" and spec.recurrent_activation == "sigmoid"
    outs = []
    # unbind/split rather than indexing: their backward assembles the gradient
    # in one pass instead of zero-filling a full-size tensor per slice.
    zero_h = h0 is None
    for xs in (step for chunk in xp for step in chunk.unbind(0)):
        # (h = 0 at the first step without an initial state: no recurrent term)
        z = pre(xs, h, zero_h and not outs)
        if fused:
            h_new, c_new = _LSTMCell.apply(z, c, scale, cell)
        else:
            zr, zc = z.split([F3, F], dim=-1)
            i, f, o = plan.ract(zr).split(F, dim=-1)
            # (fast_tanh: the c-gate weights are doubled, act = 2 sigmoid - 1)
            gc = 2.0 * torch.sigmoid(zc) - 1.0 if plan.fast_tanh else plan.act(zc)
            c_new = f * c + i * gc
            h_new = o * plan.act(c_new)
        if mask is not None:
            m = active[:, len(outs)]
            h = torch.where(m, h_new, h)
            c = torch.where(m, c_new, c)
            prev_out = torch.where(m, h_new, torch.zeros_like(h_new)
                                   if spec.zero_output_for_mask else prev_out)
            outs.append(prev_out)
        else:
            h, c = h_new, c_new
            outs.append(h)
    out = torch.stack(outs, dim=1) if spec.return_sequences else outs[-1]
    return out, h, c


def _draw_masks(plan: _Plan, spec: LayerSpec, case: Case, generator):
    """Injected masks, or fresh Bernoulli ones (keep 1-rate, scaled 1/(1-rate))."""
    import torch
    g = plan.geo
    use_in, use_rec = dropout_active(spec, case)

    def draw(shape, rate):
        keep = torch.full(shape, 1.0 - rate, dtype=torch.float64)
        return torch.bernoulli(keep, generator=generator) / (1.0 - rate)

    dm = rm = None
    if use_in:
        dm = (torch.from_numpy(np.asarray(case.dropout_mask, dtype=np.float64))
              if case.dropout_mask is not None
              else draw((4, g.B, g.H, g.W, g.C), spec.dropout))
    if use_rec:
        rm = (torch.from_numpy(np.asarray(case.recurrent_dropout_mask, dtype=np.float64))
              if case.recurrent_dropout_mask is not None
              else draw((4, g.B, g.Ho, g.Wo, spec.filters), spec.recurrent_dropout))
    return dm, rm


def _torch_dtype(name: str):
    import torch
    return {"float64": torch.float64, "float32": torch.float32,
            "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def _to_numpy64(t) -> np.ndarray:
    import torch
    return t.detach().to("cpu", torch.float64).numpy()


class TorchReference(ReferenceAdapter):
    """The fast reference on PyTorch; ``device`` is "cpu" or "cuda"."""

    framework = "torch"

    def __init__(self, device: str = "cpu"):
        super().__init__(device)
        import torch
        if device == "cuda":
            if not torch.cuda.is_available():
                raise RuntimeError("ref-torch-cuda needs a CUDA GPU and torch built with CUDA")
            # TF32 would silently round convolution and matmul inputs to 10
            # mantissa bits; the reference must compute in the dtype it claims.
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        self._torch_device = torch.device(device)
        self._generator = torch.Generator()
        self._seed: int | None = None

    def capabilities(self) -> Capabilities:
        return base_capabilities(frozenset({self.device}))

    def versions(self) -> dict[str, str]:
        import torch
        out = {"torch": torch.__version__}
        if self.device == "cuda":
            out["cuda"] = str(torch.version.cuda)
        else:
            # Whether small problems ran on the C kernel, and if not why.
            out["native kernel"] = native.status()
        return out

    # -- the computation ------------------------------------------------
    def _compute(self, spec: LayerSpec, geo: Geometry, case: Case):
        import torch
        dtype = _torch_dtype(case.dtype)
        dev = self._torch_device
        plan = make_plan(spec, geo, dtype, dev)

        def tensor(a):
            return torch.as_tensor(np.asarray(a, dtype=np.float64)).to(dev, dtype)

        want_grads = case.cotangent is not None
        x = tensor(case.inputs)
        K = tensor(case.kernel)
        U = tensor(case.recurrent_kernel)
        bias = tensor(case.bias) if spec.use_bias else None
        key = self._state_key(spec, geo, case.dtype)
        if case.initial_state is not None:
            h0, c0 = (tensor(s) for s in case.initial_state)
        elif spec.stateful and key in self._state:
            h0, c0 = self._state[key]
        else:
            h0 = c0 = None
        mask = (torch.as_tensor(np.asarray(case.mask, dtype=bool)).to(dev)
                if case.mask is not None else None)
        use_in, use_rec = dropout_active(spec, case)

        if spec.seed is not None and spec.seed != self._seed:
            # A seeded layer draws a reproducible sequence of dropout masks.
            self._generator.manual_seed(spec.seed)
            self._seed = spec.seed
        if want_grads or use_in or use_rec:
            dm, rm = _draw_masks(plan, spec, case, self._generator)
            dm = dm.to(dev, dtype) if dm is not None else None
            rm = rm.to(dev, dtype) if rm is not None else None
            cot = (tensor(_nhwc_numpy(case.cotangent, spec, time_axis=spec.return_sequences))
                   if want_grads else None)
            (out, h, c), got = forward_backward(plan, x, K, U, bias, h0, c0, mask, cot,
                                                dm, rm)
        else:
            with torch.no_grad():
                out, h, c = forward_infer(plan, x, K, U, bias, h0, c0, mask)

        grads = {}
        if want_grads:
            names = ["inputs", "kernel", "recurrent_kernel", "bias", "initial_h", "initial_c"]
            for name, arg, g in zip(names, (x, K, U, bias, h0, c0), got):
                if arg is None or (name.startswith("initial_") and case.initial_state is None):
                    continue
                grads[name] = (_to_numpy64(g) if g is not None
                               else np.zeros(arg.shape, dtype=np.float64))
        if spec.stateful:
            self._state[key] = tuple(_from_nhwc(s.detach(), spec, False).clone()
                                     for s in (h, c))
        outputs = [_to_numpy64(_from_nhwc(out, spec, spec.return_sequences)),
                   _to_numpy64(_from_nhwc(h, spec, False)),
                   _to_numpy64(_from_nhwc(c, spec, False))]
        return outputs, grads


def _from_nhwc(t, spec: LayerSpec, time_axis: bool):
    """Physically-NHWC result -> the data_format layout (a view)."""
    if not spec.channels_first:
        return t
    return t.permute(0, 1, 4, 2, 3) if time_axis else t.permute(0, 3, 1, 2)


def _nhwc_numpy(a: np.ndarray, spec: LayerSpec, time_axis: bool) -> np.ndarray:
    if not spec.channels_first:
        return a
    return np.moveaxis(a, 2 if time_axis else 1, -1)
