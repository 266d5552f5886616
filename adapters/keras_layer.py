"""Keras ConvLSTM2D: Keras 3 on any backend, and tf-keras (Keras 2).

Keras 3 chooses its backend once per process from ``KERAS_BACKEND``, so the
registry runs this adapter inside a worker process per backend
(``core/worker.py``).  The canonical weights *are* Keras's layout; mapping
them is a plain ``set_weights([kernel, recurrent_kernel, bias])``.

Only the arguments present in ``case.config`` are passed to the constructor, so
a case that leaves an argument out exercises the layer's own default.
"""
from __future__ import annotations

import importlib
import re
import time
import traceback
from typing import Any

import numpy as np

from convlstm_conformance.features import Capabilities, activations, is_policy
from convlstm_conformance.model import (ADAPTER_ERROR, CALL, CONSTRUCT, OK, RAISED, Adapter,
                                        Case, ErrorInfo, Outcome)
from convlstm_conformance.registry import COMPILED_DATA, AdapterEntry, gpu_present

# Which of the spec's activation names each Keras accepts (``activations.get``),
# measured on tf-keras 2.15 to 2.21 and on Keras 3.0.5, 3.3.3 and 3.4 to 3.15
# (tests/test_keras_activations.py checks the installed one).
# tf-keras (Keras 2.x) knows fewer names than the spec (Keras 3) documents:
TF_KERAS_ACTIVATIONS = frozenset({
    "tanh", "sigmoid", "hard_sigmoid", "relu", "relu6", "leaky_relu", "elu", "selu",
    "softplus", "softsign", "swish", "silu", "gelu", "exponential", "mish", "linear", None})
# and Keras 3 gained some after 3.0: the first release accepting each.
KERAS3_ACTIVATION_SINCE = {
    **dict.fromkeys(("celu", "hard_shrink", "hard_tanh", "log_sigmoid", "soft_shrink",
                     "squareplus", "tanh_shrink"), (3, 7)),
    "sparse_plus": (3, 8), "sparse_sigmoid": (3, 10)}


def _release(package: str) -> tuple[int, ...]:
    """The installed release of ``package`` as numbers, read from its
    metadata (importing Keras would fix the process's backend)."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        text = version(package)
    except PackageNotFoundError:
        return ()
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


# Compiled configurations a Keras-on-JAX worker keeps (each holds a layer and
# an XLA executable); a fuzzer's shrinking revisits recent ones.
JIT_CACHE_SIZE = 64

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
        # Keras 3 on JAX: compiled stateless calls per configuration (see _run_jitted).
        self._jitted: dict = {}

    # -- capabilities --------------------------------------------------
    def capabilities(self) -> Capabilities:
        keras3 = self.flavor == "keras3"
        formats = {"channels_last", "channels_first"}
        if self.backend == "tensorflow" and not gpu_present():
            # TensorFlow has no NCHW Conv2D kernel on the CPU, as the Keras conv
            # docs say (keras-team/keras#17034); claim it only where a GPU runs it.
            formats = {"channels_last"}
        # Only what the installed release accepts is claimed, so the release
        # matrix judges each release on what it offers (a name refused at
        # construction would fail every clause that drew it).
        if keras3:
            release = _release("keras")
            names = frozenset(n for n in activations()
                              if release >= KERAS3_ACTIVATION_SINCE.get(n, ())) | {None}
        else:
            names = TF_KERAS_ACTIVATIONS
        return Capabilities(
            data_format=frozenset(formats),
            activation=names, recurrent_activation=names,
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
        adt = "float32" if is_policy(case.dtype) else case.dtype
        stateful = bool(kwargs.get("stateful", False))
        x = self._tensor(case.inputs, adt)
        if self._jit_eligible(case, stateful):
            return self._run_jitted(case, kwargs, adt, x, start)
        try:
            layer = k.layers.ConvLSTM2D(**kwargs)
        except Exception as exc:  # the layer refused the configuration
            return Outcome(status=RAISED, error=ErrorInfo.from_exception(exc, CONSTRUCT),
                           duration_s=time.perf_counter() - start)
        if case.unknown_dims:
            return self._build_symbolic(layer, x.shape, case, start)
        if case.kernel is not None and self.backend == "jax":
            _skip_initial_values(k, layer, case.config, case.dtype)
        try:
            if stateful:
                # Stateful layers need the batch size fixed in the input shape.
                layer.build(tuple(x.shape))
            else:
                layer.build((None,) + tuple(x.shape[1:]))
            if case.kernel is not None:
                self._set_case_weights(layer, case, kwargs, adt)
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
        used = {}
        if case.kernel is None:
            names = ["kernel", "recurrent_kernel", "bias"]
            used = {n: np.asarray(w, dtype=np.float64) for n, w in zip(names, layer.get_weights())}
        followup_outputs = [[self._to_numpy(t).astype(np.float64)
                             for t in (r if isinstance(r, (list, tuple)) else [r])] for r in later]
        return self._ok(result, start, weights=used, grads=grads,
                        followup_outputs=followup_outputs)

    def _set_case_weights(self, layer, case: Case, kwargs: dict, adt: str) -> None:
        """The case's canonical weights are Keras's layout; set_weights checks the shapes."""
        weights = [case.kernel, case.recurrent_kernel]
        if kwargs.get("use_bias", True):
            weights.append(case.bias)
        layer.set_weights([self._tensor(w, adt) for w in weights])

    def _ok(self, result, start: float, **fields) -> Outcome:
        """The layer's return value as an Outcome: structure, dtypes, float64 arrays."""
        if isinstance(result, (list, tuple)):
            tensors, structure = list(result), "list"
        else:
            tensors, structure = [result], "tensor"
        arrays = [self._to_numpy(t) for t in tensors]
        return Outcome(status=OK, outputs=[a.astype(np.float64) for a in arrays],
                       structure=structure, dtypes=[str(a.dtype) for a in arrays],
                       duration_s=time.perf_counter() - start, **fields)

    # -- Keras 3 on JAX, compiled ----------------------------------------
    def _jit_eligible(self, case: Case, stateful: bool) -> bool:
        """One call of a layer with given weights, outside training.

        That is how Keras runs on JAX in predict and fit (jit_compile is on by
        default there), and it lets a configuration seen before skip tracing:
        an eager call traces the recurrence again every time, ~0.5 s even for
        a case run before.  Everything else (training with dropout, stateful
        and follow-up calls, Masking models, round trips, symbolic builds,
        mixed policies) takes the eager path of :meth:`_run`.
        """
        return (self.flavor == "keras3" and self.backend == "jax" and case.kernel is not None
                and not stateful and not case.training and not case.followups
                and case.masking_value is None and not case.roundtrip
                and not case.unknown_dims and not is_policy(case.dtype))

    def _run_jitted(self, case: Case, kwargs: dict, adt: str, x, start: float) -> Outcome:
        import json
        import jax
        import jax.numpy as jnp
        k = self._keras()
        want_grads = case.cotangent is not None
        key = (json.dumps(kwargs, sort_keys=True, default=repr), tuple(x.shape), adt,
               None if case.mask is None else np.shape(case.mask),
               case.initial_state is not None, want_grads)
        entry = self._jitted.get(key)
        if entry is None:
            try:
                layer = k.layers.ConvLSTM2D(**kwargs)
            except Exception as exc:
                return Outcome(status=RAISED, error=ErrorInfo.from_exception(exc, CONSTRUCT),
                               duration_s=time.perf_counter() - start)
            _skip_initial_values(k, layer, case.config, case.dtype)
        else:
            layer, fn = entry
        try:
            if entry is None:
                layer.build((None,) + tuple(x.shape[1:]))
                fn = jax.jit(_stateless_fn(jax, jnp, layer, want_grads))
            self._set_case_weights(layer, case, kwargs, adt)
            tv = [v.value for v in layer.trainable_variables]
            ntv = [v.value for v in layer.non_trainable_variables]
            init = (self._states(case.initial_state, adt)
                    if case.initial_state is not None else None)
            mask = None if case.mask is None else jnp.asarray(np.asarray(case.mask, dtype=bool))
            cot = self._tensor(case.cotangent, adt) if want_grads else None
            result, grads = fn(tv, ntv, jnp.asarray(x), init, mask, cot)
            jax.block_until_ready(result)
        except Exception as exc:
            return Outcome(status=RAISED, error=ErrorInfo.from_exception(exc, CALL),
                           duration_s=time.perf_counter() - start)
        self._jitted.pop(key, None)
        self._jitted[key] = (layer, fn)      # most recent last
        while len(self._jitted) > JIT_CACHE_SIZE:
            self._jitted.pop(next(iter(self._jitted)))
        named = {}
        if grads is not None:
            g_tv, g_x, g_init = grads
            named = self._named_grads([g_x, *g_tv, *(g_init or [])], len(tv), init is not None)
        return self._ok(result, start, grads=named)

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
            run = _stateless_fn(jax, jnp, layer, want_grads=True,
                                training=call_kwargs.get("training", False))
            result, (g_tv, g_x, g_init) = run(
                [v.value for v in layer.trainable_variables],
                [v.value for v in layer.non_trainable_variables], jnp.asarray(x),
                [jnp.asarray(v) for v in init] if init is not None else None,
                call_kwargs.get("mask"), cot)
            grads = [g_x, *g_tv, *(g_init if init is not None else [])]
        return result, self._named_grads(grads, len(names), init is not None)

    def _named_grads(self, grads, n_weights: int, with_init: bool) -> dict:
        """[d inputs, d weights..., (d h0, d c0)] as the Outcome's named float64 arrays."""
        names = ["inputs", *["kernel", "recurrent_kernel", "bias"][:n_weights]]
        if with_init:
            names += ["initial_h", "initial_c"]
        return {n: np.asarray(self._to_numpy(g), dtype=np.float64)
                for n, g in zip(names, grads) if g is not None}


def _stateless_fn(jax, jnp, layer, want_grads: bool, training: bool = False):
    """(trainable, non_trainable, x, initial_state, mask, cotangent) ->
    (outputs, grads or None) of one call, pure enough for jax.jit; grads are
    (d trainable, d x, d initial_state) of sum(output * cotangent)."""
    def call(tv, ntv, x, init, mask):
        out, _ = layer.stateless_call(tv, ntv, x, initial_state=init, mask=mask,
                                      training=training)
        return out

    def run(tv, ntv, x, init, mask, cot):
        if not want_grads:
            return call(tv, ntv, x, init, mask), None

        def loss_fn(tv_, x_, init_):
            out = call(tv_, ntv, x_, init_, mask)
            prim = out[0] if isinstance(out, (list, tuple)) else out
            return jnp.sum(prim * cot), out
        (_, out), grads = jax.value_and_grad(loss_fn, argnums=(0, 1, 2), has_aux=True)(
            tv, x, init)
        return out, grads
    return run


def _skip_initial_values(k, layer, config: dict, dtype: str) -> None:
    """Cheap initial values for weights the case overwrites at once (JAX only).

    build() runs the kernel and recurrent initializers, then set_weights
    replaces their values.  On the JAX backend every new weight shape compiles
    the initializers (the orthogonal one's QR alone takes seconds), making the
    build dearer than the call.  Only the defaults are swapped, and only in
    float32/float64, where glorot_uniform and orthogonal build every shape:
    an initializer the case names, or a half-precision layer (whose default
    orthogonal initializer cannot be built on JAX: see
    conformance/expectations/keras3-jax.yaml), keeps the user's path.  The swap
    is on the cell's attributes after construction, so the constructor still
    sees exactly the case's arguments.  Building with the real initializers is
    what the initialization clauses check (cases without weights).
    """
    if dtype not in ("float32", "float64"):
        return
    cell = getattr(layer, "cell", None)
    for name in ("kernel_initializer", "recurrent_initializer"):
        if name not in config and cell is not None and hasattr(cell, name):
            setattr(cell, name, k.initializers.Zeros())


SNIPPETS = "convlstm_conformance.adapters.snippets"

# -- registry entries: Keras 3 picks its backend once per process, so each
# runs in a worker process of its own (convlstm_conformance.worker).

def _keras3(backend: str, lib: str, share: float = 1.0, data: int = 1) -> AdapterEntry:
    return AdapterEntry(f"keras3-{backend}", f"{__name__}:KerasConvLSTM",
                        {"flavor": "keras3", "backend": backend}, ("keras", lib), isolate=True,
                        env={"KERAS_BACKEND": backend}, example_share=share,
                        data_per_example=data, snippet=f"{SNIPPETS}:keras")


KERAS3_TENSORFLOW = _keras3("tensorflow", "tensorflow")
# ~0.3 s per new configuration (jit): fewer examples, several cases each.
KERAS3_JAX = _keras3("jax", "jax", share=0.75, data=COMPILED_DATA)
KERAS3_TORCH = _keras3("torch", "torch")
TF_KERAS = AdapterEntry("tf-keras", f"{__name__}:KerasConvLSTM", {"flavor": "tf_keras"},
                        ("tf_keras", "tensorflow"), isolate=True, snippet=f"{SNIPPETS}:keras")
