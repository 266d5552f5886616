"""Keras ConvLSTM2D: Keras 3 on any backend, and tf-keras (Keras 2).

Keras 3 chooses its backend once per process from ``KERAS_BACKEND``, so the
registry runs this adapter inside a worker process per backend
(``adapters/worker.py``).  The canonical weights *are* Keras's layout; mapping
them is a plain ``set_weights([kernel, recurrent_kernel, bias])``.

Only the arguments present in ``case.config`` are passed to the constructor, so
a case that leaves an argument out exercises the layer's own default.
"""
from __future__ import annotations

import importlib
import time
import traceback
from typing import Any

import numpy as np

from adapters.registry import gpu_present
from adapters.base import (ADAPTER_ERROR, CALL, CONSTRUCT, OK, RAISED, Adapter,
                           Capabilities, Case, ErrorInfo, Outcome)

# Elementwise activations the spec's ACT-* clauses name; Keras 3 knows them all.
KERAS3_ACTIVATIONS = frozenset({
    "tanh", "sigmoid", "hard_sigmoid", "relu", "relu6", "leaky_relu", "elu", "selu",
    "celu", "softplus", "softsign", "squareplus", "soft_shrink", "hard_shrink",
    "tanh_shrink", "hard_tanh", "sparse_plus", "sparse_sigmoid", "silu", "swish",
    "gelu", "exponential", "hard_silu", "hard_swish", "mish", "log_sigmoid", "linear",
    None})
# tf-keras (Keras 2.x) knows fewer names.
TF_KERAS_ACTIVATIONS = frozenset({
    "tanh", "sigmoid", "hard_sigmoid", "relu", "elu", "selu", "softplus", "softsign",
    "swish", "silu", "gelu", "exponential", "mish", "linear", None})

# Call-time arguments are not constructor arguments.
_NOT_CONSTRUCTOR = {"device"}


class KerasConvLSTM(Adapter):
    """keras.layers.ConvLSTM2D, in the process's Keras."""

    def __init__(self, flavor: str = "keras3", backend: str = "tensorflow"):
        if flavor not in ("keras3", "tf_keras"):
            raise ValueError(f"flavor must be 'keras3' or 'tf_keras', got {flavor!r}")
        self.flavor = flavor
        self.backend = backend if flavor == "keras3" else "tensorflow"
        self.name = f"keras3-{backend}" if flavor == "keras3" else "tf-keras"
        self._mod = None

    # -- capabilities --------------------------------------------------
    def capabilities(self) -> Capabilities:
        keras3 = self.flavor == "keras3"
        formats = {"channels_last", "channels_first"}
        if self.backend == "tensorflow" and not gpu_present():
            # TensorFlow has no NCHW Conv2D kernel on the CPU, as the Keras conv
            # docs say (keras-team/keras#17034); claim it only where a GPU runs it.
            formats = {"channels_last"}
        return Capabilities(
            data_format=frozenset(formats),
            activation=KERAS3_ACTIVATIONS if keras3 else TF_KERAS_ACTIVATIONS,
            recurrent_activation=KERAS3_ACTIVATIONS if keras3 else TF_KERAS_ACTIVATIONS,
            dtype=frozenset({"float64", "float32", "float16", "bfloat16"}),
            mask=True, stateful=True, initial_state=True, go_backwards=True,
            dropout=True, argument_validation=True, gradients=True, masking_layer=True,
            serialization=True, mixed_precision=True, symbolic_shapes=True)

    # -- plumbing ------------------------------------------------------
    def _keras(self):
        if self._mod is None:
            if self.flavor == "keras3":
                import os
                want = os.environ.get("KERAS_BACKEND", "tensorflow")
                if want != self.backend:
                    raise RuntimeError(f"this process runs Keras on {want!r}; "
                                       f"start it with KERAS_BACKEND={self.backend}")
                self._mod = importlib.import_module("keras")
            else:
                self._mod = importlib.import_module("tf_keras")
        return self._mod

    def versions(self) -> dict[str, str]:
        k = self._keras()
        out = {("keras" if self.flavor == "keras3" else "tf_keras"): k.__version__}
        lib = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[self.backend]
        out[lib] = importlib.import_module(lib).__version__
        return out

    def _to_numpy(self, t) -> np.ndarray:
        k = self._keras()
        if self.flavor == "keras3":
            arr = k.ops.convert_to_numpy(t)
        else:
            arr = t.numpy()
        return np.asarray(arr)

    def _states(self, states, dtype: str) -> list:
        """initial_state as framework tensors (tf-keras refuses NumPy arrays there)."""
        arrays = [self._tensor(v, dtype) for v in states]
        if self.flavor == "tf_keras":
            import tensorflow as tf
            return [tf.constant(a) for a in arrays]
        return arrays

    def _tensor(self, a: np.ndarray | None, dtype: str):
        if a is None:
            return None
        if dtype == "bfloat16":
            import ml_dtypes
            return np.asarray(a).astype(ml_dtypes.bfloat16)
        return np.asarray(a).astype(dtype)

    # -- the run -------------------------------------------------------
    def run(self, case: Case) -> Outcome:
        start = time.perf_counter()
        try:
            return self._run(case, start)
        except Exception:
            return Outcome(status=ADAPTER_ERROR, detail=traceback.format_exc(),
                           duration_s=time.perf_counter() - start)

    def _run(self, case: Case, start: float) -> Outcome:
        k = self._keras()
        kwargs: dict[str, Any] = {key: (tuple(v) if isinstance(v, list) else v)
                                  for key, v in case.config.items() if key not in _NOT_CONSTRUCTOR}
        kwargs["dtype"] = case.dtype     # a dtype or a mixed-precision policy name
        # Arrays go in as the variable dtype: float32 under a mixed policy.
        adt = "float32" if case.dtype.startswith("mixed_") else case.dtype
        stateful = bool(kwargs.get("stateful", False))
        x = self._tensor(case.inputs, adt)
        try:
            layer = k.layers.ConvLSTM2D(**kwargs)
        except Exception as exc:  # the layer refused the configuration
            return Outcome(status=RAISED, error=ErrorInfo.from_exception(exc, CONSTRUCT),
                           duration_s=time.perf_counter() - start)
        if case.unknown_dims:
            return self._build_symbolic(layer, x.shape, case, start)
        try:
            if stateful:
                # Stateful layers need the batch size fixed in the input shape.
                layer.build(tuple(x.shape))
            else:
                layer.build((None,) + tuple(x.shape[1:]))
            if case.kernel is not None:
                weights = [case.kernel, case.recurrent_kernel]
                if kwargs.get("use_bias", True):
                    weights.append(case.bias)
                layer.set_weights([self._tensor(w, adt) for w in weights])
            call_kwargs: dict[str, Any] = {"training": bool(case.training)}
            if case.initial_state is not None:
                call_kwargs["initial_state"] = self._states(case.initial_state, adt)
            if case.mask is not None:
                call_kwargs["mask"] = np.asarray(case.mask, dtype=bool)
            grads: dict[str, np.ndarray] = {}
            if case.masking_value is not None:
                # As users build it: a Masking layer in front, the mask flows on its own.
                inp = k.Input(shape=x.shape[1:])
                model = k.Model(inp, layer(k.layers.Masking(mask_value=case.masking_value)(inp)))
                result = model(x, training=bool(case.training))
            elif case.cotangent is None:
                result = layer(x, **call_kwargs)
            else:
                result, grads = self._with_gradients(layer, x, call_kwargs,
                                                     self._tensor(case.cotangent, adt))
            later = []
            for call in case.followups:
                if call.reset:
                    layer.reset_states()
                kw: dict[str, Any] = {"training": bool(case.training)}
                if call.initial_state is not None:
                    kw["initial_state"] = self._states(call.initial_state, adt)
                later.append(layer(self._tensor(call.inputs, adt), **kw))
            if case.roundtrip:
                later.append(self._roundtrip(layer, x, case.roundtrip))
        except Exception as exc:
            return Outcome(status=RAISED, error=ErrorInfo.from_exception(exc, CALL),
                           duration_s=time.perf_counter() - start)
        if isinstance(result, (list, tuple)):
            tensors, structure = list(result), "list"
        else:
            tensors, structure = [result], "tensor"
        arrays = [self._to_numpy(t) for t in tensors]
        dtypes = [str(a.dtype) for a in arrays]
        used = {}
        if case.kernel is None:
            names = ["kernel", "recurrent_kernel", "bias"]
            used = {n: np.asarray(w, dtype=np.float64) for n, w in zip(names, layer.get_weights())}
        followup_outputs = [[self._to_numpy(t).astype(np.float64)
                             for t in (r if isinstance(r, (list, tuple)) else [r])] for r in later]
        return Outcome(status=OK, outputs=[a.astype(np.float64) for a in arrays],
                       structure=structure, dtypes=dtypes, weights=used, grads=grads,
                       followup_outputs=followup_outputs,
                       duration_s=time.perf_counter() - start)

    def _build_symbolic(self, layer, shape, case: Case, start: float) -> Outcome:
        """Build for an input shape with unknown dimensions, as a model with a
        partly unknown Input does; nothing runs."""
        axes = ({"rows": 3, "cols": 4, "channels": 2} if case.channels_first
                else {"rows": 2, "cols": 3, "channels": 4})
        sym = [None] + list(shape[1:])
        for name in case.unknown_dims:
            sym[axes[name]] = None
        try:
            layer.build(tuple(sym))
        except Exception as exc:
            return Outcome(status=RAISED, error=ErrorInfo.from_exception(exc, CALL),
                           duration_s=time.perf_counter() - start)
        return Outcome(status=OK, structure="built", detail=f"built for {tuple(sym)}",
                       duration_s=time.perf_counter() - start)

    def _roundtrip(self, layer, x, how: str):
        """The same layer serialized and rebuilt, called on the same input."""
        k = self._keras()
        if how == "config":
            clone = type(layer).from_config(layer.get_config())
            clone.build((None,) + tuple(x.shape[1:]))
            clone.set_weights(layer.get_weights())
            return clone(x)
        import tempfile
        import os
        inp = k.Input(shape=x.shape[1:])
        model = k.Model(inp, layer(inp))
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.keras")
            model.save(path)
            loaded = k.models.load_model(path)
        return loaded(x)

    # -- gradients of sum(output * cotangent), one way per backend ---------
    def _with_gradients(self, layer, x, call_kwargs, cot):
        names = ["kernel", "recurrent_kernel", "bias"][:len(layer.trainable_weights)]
        init = call_kwargs.pop("initial_state", None)
        if self.backend == "tensorflow":
            import tensorflow as tf
            xt = tf.constant(x)
            init_t = [tf.constant(v) for v in init] if init is not None else None
            with tf.GradientTape() as tape:
                tape.watch(xt)
                if init_t is not None:
                    tape.watch(init_t)
                result = layer(xt, initial_state=init_t, **call_kwargs)
                primary = result[0] if isinstance(result, (list, tuple)) else result
                loss = tf.reduce_sum(primary * tf.constant(cot))
            wrt = [xt] + list(layer.trainable_weights) + (init_t or [])
            grads = tape.gradient(loss, wrt)
        elif self.backend == "torch":
            import torch
            xt = torch.tensor(x, requires_grad=True)
            init_t = ([torch.tensor(v, requires_grad=True) for v in init]
                      if init is not None else None)
            result = layer(xt, initial_state=init_t, **call_kwargs)
            primary = result[0] if isinstance(result, (list, tuple)) else result
            loss = (primary * torch.tensor(cot)).sum()
            wrt = [xt] + [v.value for v in layer.trainable_weights] + (init_t or [])
            grads = torch.autograd.grad(loss, wrt, allow_unused=True)
        else:
            import jax
            import jax.numpy as jnp
            trainable = [v.value for v in layer.trainable_variables]
            frozen = [v.value for v in layer.non_trainable_variables]

            def loss_fn(tv, xv, iv):
                out, _ = layer.stateless_call(tv, frozen, xv, initial_state=iv, **call_kwargs)
                prim = out[0] if isinstance(out, (list, tuple)) else out
                return jnp.sum(prim * cot), out
            (_, result), (g_tv, g_x, g_init) = _value_and_grad(jax, loss_fn)(
                trainable, jnp.asarray(x), [jnp.asarray(v) for v in init] if init is not None else None)
            grads = [g_x] + list(g_tv) + (list(g_init) if init is not None else [])
        out = {"inputs": grads[0]}
        out.update(zip(names, grads[1:1 + len(names)]))
        if init is not None:
            out["initial_h"], out["initial_c"] = grads[1 + len(names):3 + len(names)]
        return result, {k: np.asarray(self._to_numpy(v), dtype=np.float64) for k, v in out.items()
                        if v is not None}


def _value_and_grad(jax, fn):
    return jax.value_and_grad(fn, argnums=(0, 1, 2), has_aux=True)
