"""The reference's configuration handling, shared by both backends (no framework).

Argument validation with Keras's messages, the normalised configuration
(:class:`LayerSpec`, hashable: a cache key of compiled programs), the output
geometry of a call, the shape checks of a case's arrays and when dropout
applies.  The torch and JAX references reject exactly the same
configurations with the same messages because both use this module.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from convlstm_conformance import features
from convlstm_conformance.model import Case, Refused

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



def activations() -> frozenset:
    """The elementwise Keras 3 activations the references compute: every name
    the spec documents."""
    return features.activations()


def dtypes() -> tuple[str, ...]:
    """The float formats the references compute in: every format the spec lists."""
    return features.formats()


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
        if value in activations():
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
