"""haiku.Conv2DLSTM, unrolled over time by haiku.dynamic_unroll under hk.transform.

What the library offers, read from ``haiku/_src/recurrent.py`` and ``conv.py``
(dm-haiku 0.0.17):

* ``Conv2DLSTM(input_shape, output_channels, kernel_shape)`` builds two
  ``ConvND`` modules, ``input_to_hidden`` on x and ``hidden_to_hidden`` on h, with
  ConvND's defaults: stride 1, rate 1, padding 'SAME' (``lax`` placement: the odd
  row/column after, as Keras), bias on.  None of these is exposed, so: padding
  'same' only, no strides, no dilation, always a bias (even kernels are fine).
* Activations are hard-coded sigmoid/tanh; the forget gate is ``sigmoid(f + 1)``.
* The state is ``LSTMState(hidden, cell)``, i.e. (h, c); ``input_shape`` only
  sizes ``initial_state()``, which allocates float32 zeros whatever the input
  dtype, so the adapter passes zeros of the case's dtype instead.
* ``dynamic_unroll(reverse=True)`` is ``lax.scan(reverse=True)``: it scans from
  the last step but returns outputs aligned with the inputs, so the adapter flips
  them into processing order, which is what Keras's go_backwards returns.
"""
from __future__ import annotations

import functools

from convlstm_conformance.adapters.jax_glue import cell_capabilities, jit_layer, run_jax_case
from convlstm_conformance.features import Capabilities
from convlstm_conformance.model import Adapter, Case, Outcome
from convlstm_conformance.registry import COMPILED_DATA, AdapterEntry

MODULE = "conv_lstm"          # the Conv2DLSTM's module name, prefix of its parameters
FORGET_OFFSET = 1.0           # ConvNDLSTM computes sigmoid(f + 1)


def keras_to_haiku_params(kernel, recurrent_kernel, bias, filters: int) -> dict:
    """Canonical Keras weights -> the params of ``Conv2DLSTM(name=MODULE)``.

    * Kernels: ConvND's ``w`` is HWIO ``(kh, kw, in, 4F)`` like Keras's, so no
      transpose; ``input_to_hidden`` gets ``kernel``, ``hidden_to_hidden`` gets
      ``recurrent_kernel``.
    * Gate order: the core splits its gates as i, g, f, o (g the cell candidate),
      so Keras's i, f, c, o blocks become i, c, f, o.
    * Bias: both convs have one; Keras's single bias goes to ``input_to_hidden``,
      ``hidden_to_hidden`` gets zeros.  The core's +1 on the forget gate is
      cancelled by subtracting it from the forget bias, also when Keras has none.

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
    return {f"{MODULE}/input_to_hidden": {"w": reorder(kernel), "b": reorder(b - offset)},
            f"{MODULE}/hidden_to_hidden": {"w": reorder(recurrent_kernel),
                                           "b": jnp.zeros((4 * filters,), dtype)}}


@functools.lru_cache(maxsize=64)
def _compiled(filters: int, kernel_size: tuple, use_bias: bool, channels_first: bool,
              return_sequences: bool, go_backwards: bool, with_grads: bool):
    import haiku as hk
    import jax.numpy as jnp

    def core_unroll(x, h0, c0):
        core = hk.Conv2DLSTM(input_shape=x.shape[2:4], output_channels=filters,
                             kernel_shape=kernel_size, name=MODULE)
        ys, state = hk.dynamic_unroll(core, x, hk.LSTMState(hidden=h0, cell=c0),
                                      time_major=False, reverse=go_backwards)
        if go_backwards:
            ys = jnp.flip(ys, axis=1)
        return ys, state.hidden, state.cell

    apply = hk.transform(core_unroll).apply

    def unroll(kernel, recurrent_kernel, bias, x, h0, c0):
        params = keras_to_haiku_params(kernel, recurrent_kernel, bias, filters)
        return apply(params, None, x, h0, c0)

    return jit_layer(unroll, filters, use_bias, channels_first, return_sequences, with_grads)


class HaikuConv2DLSTM(Adapter):
    """``haiku.Conv2DLSTM`` under ``haiku.dynamic_unroll``."""

    name = "haiku"

    def capabilities(self) -> Capabilities:
        return cell_capabilities()

    def versions(self) -> dict[str, str]:
        import haiku
        import jax
        return {"dm-haiku": haiku.__version__, "jax": jax.__version__}

    def run(self, case: Case) -> Outcome:
        return run_jax_case(case, self.capabilities(), _compiled)


# ~0.3 s to compile each new configuration: fewer examples, several cases each.
ENTRY = AdapterEntry("haiku", f"{__name__}:HaikuConv2DLSTM", requires=("haiku", "jax"),
                     isolate=True, example_share=0.5, data_per_example=COMPILED_DATA,
                     snippet="convlstm_conformance.adapters.snippets:haiku")
