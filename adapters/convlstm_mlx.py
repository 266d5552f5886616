"""The PyPI package ``convlstm-mlx`` (import ``convlstm_mlx``): a ConvLSTM in Apple's MLX.

MLX runs on Linux x86 CPUs with its CPU build (``pip install "mlx[cpu]"``).
What the library offers, read from ``convlstm_mlx/conv_lstm.py`` (0.1.1):

* ``ConvLSTM(in_channels, out_channels, kernel_size, bias)`` takes ``(B, T, H,
  W, C)`` and returns the hidden state of every step; it always starts from
  zero state and never returns the cell state, so neither initial_state nor
  return_state is offered.
* The cell is ONE ``mlx.nn.Conv2d`` over ``concatenate([x, h], axis=-1)``,
  stride 1, ``padding=k // 2`` (Keras's 'same' for odd kernels; even ones are
  refused by an assertion), an int ``kernel_size`` (square kernels only).
* Gates split as i, f, c, o, the Keras order; one bias (``bias=False`` drops
  it); activations hard-coded sigmoid/tanh.
* The hidden states are kept time-major, ``(T, B, H, W, F)``, and reshaped
  (not transposed) to ``(B, T, H, W, F)``: with a batch and more than one
  step, batch and time are scrambled.  The result is then ``.squeeze()``-d:
  every axis of extent one goes, the batch, time and filter axes included.
  The adapter hands the library's array over as it is, so the suite sees what
  a caller gets (tests/test_convlstm_mlx.py shows the mapping exact once the
  reshape is undone).

The adapter transposes channels_first cases to the library's channels_last,
reverses the time axis for go_backwards, takes the last step for
return_sequences=False, and computes gradients with ``mlx.core.vjp``.
"""
from __future__ import annotations

import time
import traceback

import numpy as np

from convlstm_conformance.features import Capabilities, refuse_unless_mappable
from convlstm_conformance.model import (ADAPTER_ERROR, CALL, CONSTRUCT, OK, RAISED, REFUSED,
                                        Adapter, Case, ErrorInfo, Outcome, Refused)
from convlstm_conformance.registry import AdapterEntry

GRAD_NAMES = ("inputs", "kernel", "recurrent_kernel", "bias")


def keras_to_mlx_params(kernel, recurrent_kernel, bias) -> dict:
    """Canonical Keras weights (mlx arrays) -> the ConvLSTM's parameter tree.

    * One conv on ``concatenate([x, h])``: ``kernel`` then ``recurrent_kernel``
      along the input-channel axis, ``(kh, kw, C_in + F, 4F)``.
    * Gate order: the library splits i, f, c, o, as Keras does: no reorder.
    * Layout: MLX's Conv2d weight is ``(out, kh, kw, in)``, a transpose of HWIO.
    * Bias: the conv's only bias takes Keras's bias as is.

    Written with mlx ops so ``vjp`` maps gradients back to the Keras arrays.
    """
    import mlx.core as mx
    conv = {"weight": mx.transpose(mx.concatenate([kernel, recurrent_kernel], axis=2),
                                   (3, 0, 1, 2))}
    if bias is not None:
        conv["bias"] = bias
    return {"cell": {"conv": conv}}


class ConvLstmMLX(Adapter):
    """``convlstm_mlx.ConvLSTM``."""

    name = "convlstm-mlx"

    def capabilities(self) -> Capabilities:
        return Capabilities(
            padding=frozenset({"same"}), kernel_parity=frozenset({"odd"}),
            # channels_first by transposing to the library's channels_last.
            data_format=frozenset({"channels_last", "channels_first"}),
            activation=frozenset({"tanh"}), recurrent_activation=frozenset({"sigmoid"}),
            dtype=frozenset({"float32"}),
            strides=False, dilation=False, no_bias=True, initial_state=False,
            return_state=False, return_sequences=True, go_backwards=True, gradients=True,
            argument_validation=False, non_square=False)

    def versions(self) -> dict[str, str]:
        from importlib.metadata import version
        return {"convlstm-mlx": version("convlstm-mlx"), "mlx": version("mlx")}

    def run(self, case: Case) -> Outcome:
        start = time.perf_counter()
        try:
            refuse_unless_mappable(case, self.capabilities())
            import mlx.core as mx
            use_bias = bool(case.config.get("use_bias", True))
            arrays = {name: mx.array(np.asarray(a, np.float32))
                      for name, a in zip(GRAD_NAMES, (case.inputs, case.kernel,
                                                      case.recurrent_kernel,
                                                      case.bias if use_bias else None))
                      if a is not None}
            k = int(np.shape(case.kernel)[0])
            channels = int(np.shape(case.kernel)[2])
        except Refused as exc:
            return Outcome(status=REFUSED, detail=str(exc))
        except Exception:
            return Outcome(status=ADAPTER_ERROR, detail=traceback.format_exc())

        phase = CONSTRUCT
        try:
            from convlstm_mlx import ConvLSTM
            model = ConvLSTM(channels, case.filters, kernel_size=k, bias=use_bias)
            phase = CALL
            names = list(arrays)

            def forward(*leaves):
                return [self._forward(model, case, dict(zip(names, leaves)))]

            grads = None
            if case.cotangent is not None:
                cot = mx.array(np.asarray(case.cotangent, np.float32))
                (out,), values = mx.vjp(forward, [arrays[n] for n in names], [cot])
                grads = dict(zip(names, values))
            else:
                (out,) = forward(*arrays.values())
            mx.eval(out)
        except Exception as exc:
            return Outcome(status=RAISED, error=ErrorInfo.from_exception(exc, phase),
                           duration_s=time.perf_counter() - start)
        try:
            result = Outcome(status=OK, outputs=[np.asarray(out, np.float64)],
                             structure="tensor", dtypes=[str(out.dtype).removeprefix("mlx.core.")])
            if grads is not None:
                result.grads = {n: np.asarray(g, np.float64) for n, g in grads.items()}
            result.duration_s = time.perf_counter() - start
            return result
        except Exception:
            return Outcome(status=ADAPTER_ERROR, detail=traceback.format_exc())

    @staticmethod
    def _forward(model, case: Case, leaves: dict):
        """The output in the case's layout, from the library's return value."""
        import mlx.core as mx
        x = leaves["inputs"]
        if case.channels_first:
            x = mx.transpose(x, (0, 1, 3, 4, 2))
        if case.config.get("go_backwards", False):
            x = x[:, ::-1]          # outputs then come in processing order
        model.update(keras_to_mlx_params(leaves["kernel"], leaves["recurrent_kernel"],
                                         leaves.get("bias")))
        seq = model(x)
        # A squeezed result (an axis of extent one) is passed on as it is.
        out = seq if case.config.get("return_sequences", False) or seq.ndim != 5 else seq[:, -1]
        if case.channels_first and out.ndim in (4, 5):
            out = mx.moveaxis(out, -1, out.ndim - 3)
        return out


ENTRY = AdapterEntry("convlstm-mlx", f"{__name__}:ConvLstmMLX", requires=("convlstm_mlx", "mlx"),
                     isolate=True)
