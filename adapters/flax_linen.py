"""flax.linen.ConvLSTMCell, run over time by flax.linen.RNN.

What the library offers, read from ``flax/linen/recurrent.py`` (flax 0.12):

* ``ConvLSTMCell(features, kernel_size, strides, padding, use_bias)`` holds two
  ``Conv`` submodules, ``ih`` on x and ``hh`` on h.  Both receive the cell's
  ``strides`` and ``padding``, so the recurrent convolution is only the spec's
  stride-1 'same' convolution when the layer itself is stride 1 and 'SAME'; with
  strides > 1 or 'VALID' the two gate maps differ in size.  The cell has no
  dilation argument.  Hence: padding 'same' only, no strides, no dilation.
* 'SAME' is ``lax`` padding, which puts the odd row/column after, as Keras does:
  even kernels are fine.
* Activations are hard-coded sigmoid/tanh; the forget gate is ``sigmoid(f + 1)``.
* The carry is ``(c, h)``; ``nn.RNN(reverse=True, keep_order=False)`` scans from
  the last step and returns outputs in processing order, as Keras's go_backwards.

The adapter adds the data_format transposes (the cell is channels_last only) and
assembles Keras's return structure from the RNN's carry and output sequence.
"""
from __future__ import annotations

import functools

from convlstm_conformance.adapters.jax_glue import cell_capabilities, jit_layer, run_jax_case
from convlstm_conformance.features import Capabilities
from convlstm_conformance.model import Adapter, Case, Outcome
from convlstm_conformance.registry import COMPILED_DATA, AdapterEntry

FORGET_OFFSET = 1.0  # ConvLSTMCell computes sigmoid(f + 1)


def keras_to_flax_params(kernel, recurrent_kernel, bias, filters: int) -> dict:
    """Canonical Keras weights -> the ``params`` of ``ConvLSTMCell``.

    * Kernels: flax ``Conv`` kernels are HWIO ``(kh, kw, in, 4F)`` like Keras's,
      so no transpose; ``ih`` gets ``kernel``, ``hh`` gets ``recurrent_kernel``.
    * Gate order: the cell splits its gates as i, g, f, o (g the cell candidate),
      so Keras's i, f, c, o blocks become i, c, f, o.
    * Bias: each conv has one; Keras's single bias goes to ``ih``, ``hh`` gets
      zeros.  The cell's +1 on the forget gate is cancelled by subtracting it from
      the forget bias, also when Keras has no bias (so the cell always has one).

    Written with ``jnp`` so gradients flow back to the canonical arrays.
    """
    import jax.numpy as jnp

    def reorder(w):
        i, f, c, o = jnp.split(w, 4, axis=-1)
        return jnp.concatenate([i, c, f, o], axis=-1)

    dtype = kernel.dtype
    zero = jnp.zeros((filters,), dtype)
    offset = jnp.concatenate([zero, zero + FORGET_OFFSET, zero, zero])
    b = offset * 0 if bias is None else bias
    return {"ih": {"kernel": reorder(kernel), "bias": reorder(b - offset)},
            "hh": {"kernel": reorder(recurrent_kernel), "bias": jnp.zeros((4 * filters,), dtype)}}


@functools.lru_cache(maxsize=64)
def _compiled(filters: int, kernel_size: tuple, use_bias: bool, channels_first: bool,
              return_sequences: bool, go_backwards: bool, with_grads: bool):
    import flax.linen as nn

    rnn = nn.RNN(nn.ConvLSTMCell(features=filters, kernel_size=kernel_size, padding="SAME",
                                 use_bias=True),
                 return_carry=True, reverse=go_backwards, keep_order=False)

    def unroll(kernel, recurrent_kernel, bias, x, h0, c0):
        params = keras_to_flax_params(kernel, recurrent_kernel, bias, filters)
        (c, h), ys = rnn.apply({"params": {"cell": params}}, x, initial_carry=(c0, h0))
        return ys, h, c

    return jit_layer(unroll, filters, use_bias, channels_first, return_sequences, with_grads)


class FlaxConvLSTM(Adapter):
    """``flax.linen.ConvLSTMCell`` under ``flax.linen.RNN``."""

    name = "flax"

    def capabilities(self) -> Capabilities:
        return cell_capabilities()

    def versions(self) -> dict[str, str]:
        import flax
        import jax
        return {"flax": flax.__version__, "jax": jax.__version__}

    def run(self, case: Case) -> Outcome:
        return run_jax_case(case, self.capabilities(), _compiled)


# ~0.3 s to compile each new configuration: fewer examples, several cases each.
ENTRY = AdapterEntry("flax", f"{__name__}:FlaxConvLSTM", requires=("flax", "jax"), isolate=True,
                     example_share=0.5, data_per_example=COMPILED_DATA,
                     snippet="convlstm_conformance.adapters.snippets:flax")
