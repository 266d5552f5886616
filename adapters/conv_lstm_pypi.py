"""The PyPI package ``conv-lstm`` (import ``conv_lstm``): a PyTorch ConvLSTM.

What the library offers, read from ``conv_lstm/conv_lstm.py`` (0.1.2):

* ``ConvLSTM(input_dim, hidden_dim, kernel_size, num_layers, batch_first, bias)``
  takes ``(B, T, C, H, W)`` with ``batch_first=True`` and returns
  ``([outputs (B, T, F, H, W)], [[h, c]])``; it always starts from zero state
  (``forward`` takes no initial state), so initial_state is not offered.
* Each cell is ONE ``nn.Conv2d`` over ``torch.cat([x, h], dim=1)``, stride 1,
  ``padding=k // 2``: that is Keras's 'same' only for odd kernels (an even kernel
  grows the map by one and the state update fails to broadcast).
  ``kernel_size`` must be an int: square kernels only.  No strides, no dilation.
* Gates split as i, f, o, g (g the cell candidate); one bias (``bias=False``
  drops it); no forget-gate offset; activations hard-coded sigmoid/tanh.
* The zero state is ``torch.zeros`` in the default dtype (float32): float64 runs
  (``cat`` promotes), float16/bfloat16 fail with a dtype mismatch in the conv.

The adapter transposes channels_last cases to the library's channels_first
layout, reverses the time axis for go_backwards, and assembles Keras's return
structure from the library's outputs.
"""
from __future__ import annotations

import time
import traceback

import numpy as np

from convlstm_conformance.features import Capabilities, refuse_unless_mappable
from convlstm_conformance.model import (ADAPTER_ERROR, CALL, CONSTRUCT, OK, RAISED, REFUSED,
                                        Adapter, Case, ErrorInfo, Outcome, Refused)
from convlstm_conformance.registry import AdapterEntry

PREFIX = "cell_list.0.conv."  # the single layer's conv inside ConvLSTM


def keras_to_conv_lstm_params(kernel, recurrent_kernel, bias) -> dict:
    """Canonical Keras weights (torch tensors) -> ConvLSTM parameters by name.

    * One conv on ``cat([x, h])``: stack ``kernel`` then ``recurrent_kernel`` along
      the input-channel axis, giving ``(kh, kw, C_in + F, 4F)``.
    * Gate order: Keras's i, f, c, o blocks become the library's i, f, o, g.
    * Layout: torch's OIHW ``(4F, C_in + F, kh, kw)``, a permute of HWIO.
    * Bias: the conv's only bias takes Keras's bias as is (no offset to undo).

    Written with torch ops so autograd maps gradients back to the Keras arrays.
    """
    import torch

    def reorder(w):
        i, f, c, o = torch.chunk(w, 4, dim=-1)
        return torch.cat([i, f, o, c], dim=-1)

    weight = reorder(torch.cat([kernel, recurrent_kernel], dim=2)).permute(3, 2, 0, 1)
    params = {PREFIX + "weight": weight}
    if bias is not None:
        params[PREFIX + "bias"] = reorder(bias)
    return params


def _torch_dtype(name: str):
    import torch
    return {"float64": torch.float64, "float32": torch.float32,
            "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


class ConvLstmPyPI(Adapter):
    """``conv_lstm.ConvLSTM`` with one layer."""

    name = "conv-lstm"

    def capabilities(self) -> Capabilities:
        return Capabilities(
            padding=frozenset({"same"}), kernel_parity=frozenset({"odd"}),
            # channels_last by transposing to the library's channels_first.
            data_format=frozenset({"channels_last", "channels_first"}),
            activation=frozenset({"tanh"}), recurrent_activation=frozenset({"sigmoid"}),
            dtype=frozenset({"float64", "float32"}),
            strides=False, dilation=False, no_bias=True, initial_state=False,
            return_state=True, return_sequences=True, go_backwards=True, gradients=True,
            argument_validation=False, non_square=False)

    def versions(self) -> dict[str, str]:
        from importlib.metadata import version
        import torch
        return {"conv-lstm": version("conv-lstm"), "torch": torch.__version__}

    def run(self, case: Case) -> Outcome:
        start = time.perf_counter()
        try:
            refuse_unless_mappable(case, self.capabilities())
            import torch
            dtype = _torch_dtype(case.dtype)
            cfg = case.config
            use_bias = bool(cfg.get("use_bias", True))
            with_grads = case.cotangent is not None
            leaves = {name: torch.tensor(np.asarray(a, np.float64), dtype=dtype,
                                         requires_grad=with_grads)
                      for name, a in (("inputs", case.inputs), ("kernel", case.kernel),
                                      ("recurrent_kernel", case.recurrent_kernel),
                                      ("bias", case.bias if use_bias else None))
                      if a is not None}
            k = int(np.shape(case.kernel)[0])
            channels = int(np.shape(case.kernel)[2])
        except Refused as exc:
            return Outcome(status=REFUSED, detail=str(exc))
        except Exception:
            return Outcome(status=ADAPTER_ERROR, detail=traceback.format_exc())

        phase = CONSTRUCT
        try:
            from conv_lstm import ConvLSTM
            model = ConvLSTM(input_dim=channels, hidden_dim=case.filters, kernel_size=k,
                             num_layers=1, batch_first=True, bias=use_bias,
                             return_all_layers=False).to(dtype)
            phase = CALL
            with torch.set_grad_enabled(with_grads):
                outs = self._forward(model, case, leaves)
                grads = None
                if with_grads:
                    cot = torch.tensor(np.asarray(case.cotangent, np.float64), dtype=outs[0].dtype)
                    values = torch.autograd.grad(outs[0], list(leaves.values()), grad_outputs=cot,
                                                 allow_unused=True)
                    grads = dict(zip(leaves, values))
        except Exception as exc:
            return Outcome(status=RAISED, error=ErrorInfo.from_exception(exc, phase),
                           duration_s=time.perf_counter() - start)
        try:
            return self._outcome(case, outs, grads, start)
        except Exception:
            return Outcome(status=ADAPTER_ERROR, detail=traceback.format_exc())

    @staticmethod
    def _forward(model, case: Case, leaves: dict) -> tuple:
        """(output, h, c) in the case's layout, from the library's return value."""
        import torch
        cl = not case.channels_first
        x = leaves["inputs"]
        if cl:
            x = x.permute(0, 1, 4, 2, 3)
        if case.config.get("go_backwards", False):
            x = torch.flip(x, dims=[1])   # outputs then come in processing order
        params = keras_to_conv_lstm_params(leaves["kernel"], leaves["recurrent_kernel"],
                                           leaves.get("bias"))
        layer_outputs, last_states = torch.func.functional_call(model, params, (x,))
        seq, (h, c) = layer_outputs[0], last_states[0]
        seq_out = bool(case.config.get("return_sequences", False))
        out = seq if seq_out else seq[:, -1]
        if cl:
            out = out.permute(0, 1, 3, 4, 2) if seq_out else out.permute(0, 2, 3, 1)
            h, c = h.permute(0, 2, 3, 1), c.permute(0, 2, 3, 1)
        return out, h, c

    @staticmethod
    def _outcome(case: Case, outs, grads, start: float) -> Outcome:
        outs = list(outs) if case.config.get("return_state", False) else [outs[0]]
        result = Outcome(
            status=OK, outputs=[t.detach().to("cpu").double().numpy() for t in outs],
            structure="list" if len(outs) == 3 else "tensor",
            dtypes=[str(t.dtype).removeprefix("torch.") for t in outs])
        if grads is not None:
            result.grads = {name: g.detach().double().numpy()
                            for name, g in grads.items() if g is not None}
        result.duration_s = time.perf_counter() - start
        return result


ENTRY = AdapterEntry("conv-lstm", f"{__name__}:ConvLstmPyPI", requires=("conv_lstm", "torch"),
                     isolate=True, snippet="convlstm_conformance.adapters.snippets:conv_lstm")
