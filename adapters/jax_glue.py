"""Glue shared by the JAX-based third-party adapters (flax, haiku).

Each of them maps canonical weights in its own module and supplies an
``unroll`` function; this module jits it with the data_format transposes, the
zero initial state, Keras's last-step output and the VJP for gradients, and
turns the result into an :class:`Outcome`.
"""
from __future__ import annotations

import time
import traceback

import numpy as np

from convlstm_conformance.features import Capabilities, formats, refuse_unless_mappable
from convlstm_conformance.model import (ADAPTER_ERROR, CALL, CONSTRUCT, OK, RAISED, REFUSED, Case,
                                        ErrorInfo, Outcome, Refused)


def _pair(v) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (list, tuple)) else (int(v), int(v))


GRAD_NAMES = ("inputs", "kernel", "recurrent_kernel", "bias", "initial_h", "initial_c")


def jit_layer(unroll, filters: int, use_bias: bool, channels_first: bool,
              return_sequences: bool, with_grads: bool):
    """Jitted ``(x, kernel, recurrent_kernel, bias, h0, c0[, cot])`` -> outputs[, grads].

    ``unroll(kernel, recurrent_kernel, bias, x, h0, c0)`` runs the library on
    channels_last arrays and returns (outputs in processing order, h, c).  This
    wrapper adds the data_format transposes, zero initial state (None h0/c0) and
    Keras's last-step output; with ``with_grads`` it also returns the VJP of the
    output with ``cot`` for each argument, in the case's own layouts.
    """
    import jax
    import jax.numpy as jnp

    def forward(x, kernel, recurrent_kernel, bias, h0, c0):
        if channels_first:
            x = jnp.moveaxis(x, 2, -1)
            h0, c0 = (None if s is None else jnp.moveaxis(s, 1, -1) for s in (h0, c0))
        if h0 is None:
            h0 = c0 = jnp.zeros(x.shape[:1] + x.shape[2:4] + (filters,), x.dtype)
        ys, h, c = unroll(kernel, recurrent_kernel, bias if use_bias else None, x, h0, c0)
        out = ys if return_sequences else ys[:, -1]
        if channels_first:
            out = jnp.moveaxis(out, -1, 2 if return_sequences else 1)
            h, c = jnp.moveaxis(h, -1, 1), jnp.moveaxis(c, -1, 1)
        return out, h, c

    if not with_grads:
        return jax.jit(forward)

    def forward_and_grads(x, kernel, recurrent_kernel, bias, h0, c0, cot):
        outs, pullback = jax.vjp(forward, x, kernel, recurrent_kernel, bias, h0, c0)
        grads = pullback((cot.astype(outs[0].dtype), jnp.zeros_like(outs[1]),
                          jnp.zeros_like(outs[2])))
        return outs, grads

    return jax.jit(forward_and_grads)


def cell_capabilities() -> Capabilities:
    """What the Flax and Haiku cells offer through their adapters: 'same' only,
    tanh/sigmoid hard-coded, channels_first by transposing around the
    channels_last cell, every float dtype, gradients through jax.vjp."""
    return Capabilities(
        padding=frozenset({"same"}),
        data_format=frozenset({"channels_last", "channels_first"}),
        activation=frozenset({"tanh"}), recurrent_activation=frozenset({"sigmoid"}),
        dtype=frozenset(formats()),
        strides=False, dilation=False, no_bias=True, initial_state=True,
        return_state=True, return_sequences=True, go_backwards=True, gradients=True,
        argument_validation=False, non_square=True)


def x64(on: bool):
    """A scope computing in 64 bits or not: ``jax.enable_x64`` (JAX 0.8 on),
    ``jax.experimental.enable_x64`` before it, so the release matrix runs
    Flax and Haiku on the JAX of their time."""
    import jax
    scope = getattr(jax, "enable_x64", None)
    if scope is None:
        from jax.experimental import enable_x64 as scope
    return scope(on)

def run_jax_case(case: Case, caps: Capabilities, compiled) -> Outcome:
    """Run ``case`` through ``compiled(static config...)``; never raises.

    Errors while building the module are reported at construction, errors from
    the jitted call (where Haiku builds its modules) at call.
    """
    start = time.perf_counter()
    try:
        refuse_unless_mappable(case, caps)
    except Refused as exc:
        return Outcome(status=REFUSED, detail=str(exc))
    except Exception:
        return Outcome(status=ADAPTER_ERROR, detail=traceback.format_exc())

    cfg = case.config
    use_bias = bool(cfg.get("use_bias", True))
    phase = CONSTRUCT
    try:
        import jax
        # The capabilities claim the CPU: pin it even where JAX sees an accelerator.
        with x64(case.dtype == "float64"), jax.default_device(jax.devices("cpu")[0]):
            fn = compiled(case.filters, _pair(cfg["kernel_size"]), use_bias,
                          case.channels_first, bool(cfg.get("return_sequences", False)),
                          bool(cfg.get("go_backwards", False)), case.cotangent is not None)
            phase = CALL
            args = jax_args(case, use_bias)
            if case.cotangent is None:
                outs, grads = fn(*args), None
            else:
                outs, grads = fn(*args, cast_for_jax(case.cotangent, case.dtype))
            jax.block_until_ready(outs)
    except Exception as exc:
        return Outcome(status=RAISED, error=ErrorInfo.from_exception(exc, phase),
                       duration_s=time.perf_counter() - start)
    try:
        return jax_outcome(case, outs, grads, start)
    except Exception:
        return Outcome(status=ADAPTER_ERROR, detail=traceback.format_exc())


def cast_for_jax(a, dtype: str):
    import jax.numpy as jnp
    return None if a is None else jnp.asarray(np.asarray(a, np.float64), dtype=jnp.dtype(dtype))


def jax_args(case: Case, use_bias: bool) -> tuple:
    h0, c0 = case.initial_state if case.initial_state is not None else (None, None)
    return tuple(cast_for_jax(a, case.dtype) for a in (
        case.inputs, case.kernel, case.recurrent_kernel, case.bias if use_bias else None,
        h0, c0))


def jax_outcome(case: Case, outs, grads, start: float) -> Outcome:
    """Keras's return structure from (output, h, c), as float64 numpy."""
    arrays = [np.asarray(a).astype(np.float64) for a in outs]
    dtypes = [str(np.dtype(a.dtype)) for a in outs]
    if not case.config.get("return_state", False):
        arrays, dtypes = arrays[:1], dtypes[:1]
    out = Outcome(status=OK, outputs=arrays, structure="list" if len(arrays) == 3 else "tensor",
                  dtypes=dtypes)
    if grads is not None:
        out.grads = {name: np.asarray(g).astype(np.float64)
                     for name, g in zip(GRAD_NAMES, grads) if g is not None}
    out.duration_s = time.perf_counter() - start
    return out
