"""Standalone scripts that show one case's divergence with the framework alone.

For a failing case, :func:`snippet_for` writes the Python script a maintainer
pastes into an upstream bug report: it imports only the implementation's
framework and NumPy (nothing of this project), builds the layer with the
case's configuration, sets the case's weights as the adapter maps them, runs
the case's input and compares the result with the float64 oracle's numbers,
which it carries (small arrays as literals, others as base64 of float64
bytes), element by element against the tolerance model's budget.  It prints
the versions, the wrong and the right numbers, and exits 1 when they differ
beyond the budget, 0 when they agree.

Each registry entry names its generator (``AdapterEntry.snippet``); the
generator gets the entry's ``kwargs`` like the adapter does.  The weight
mappings below restate those of the adapter modules as plain NumPy text,
because the script must run without this project; the tests run every
generator's script against the oracle, so a mapping that drifts from the
adapter's shows.

Only forward calls are written: a case with further calls, a serialization
round trip, an upstream Masking layer, unknown dimensions, training (dropout)
or a cotangent (gradients) gets no snippet (None), nor does a case without
weights.
"""
from __future__ import annotations

import base64
import math
from typing import Any, Mapping

import numpy as np

from convlstm_conformance.features import is_policy
from convlstm_conformance.model import Case
from convlstm_conformance.registry import snippet_for  # noqa: F401  (the public entry point)

#: Arrays of at most this many elements are written as literals.
MAX_INLINE = 24
#: Names of the compared tensors, in the order a layer returns them.
TENSORS = ("output", "h", "c")


def supported(case: Case) -> str:
    """Why ``case`` cannot be written as a standalone forward call; '' when it can."""
    if case.kernel is None or case.recurrent_kernel is None:
        return "the case runs the layer's own initializers"
    for what, present in (("further calls", case.followups), ("a round trip", case.roundtrip),
                          ("a Masking layer", case.masking_value is not None),
                          ("unknown dimensions", case.unknown_dims),
                          ("training", case.training), ("gradients", case.cotangent is not None)):
        if present:
            return f"the case has {what}"
    return ""


# -- literals ------------------------------------------------------------------

def literal(value: Any) -> str:
    """Python source for a JSON-like value (case configs are untrusted: only
    dicts, lists, strings, numbers, booleans and None are written)."""
    if value is None or isinstance(value, (bool, int, str)):
        return repr(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else f"float({str(value)!r})"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(str(k))}: {literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write a {type(value).__name__} into a snippet")


def array_literal(a: Any) -> str:
    """A float64 array as source: inline when small, else base64 of its bytes."""
    if a is None:
        return "None"
    a = np.asarray(a, dtype=np.float64)
    shape = literal(list(a.shape))
    if a.size <= MAX_INLINE:
        return f"np.array({literal([float(v) for v in a.ravel()])}, dtype=np.float64).reshape({shape})"
    data = base64.b64encode(a.astype("<f8").tobytes()).decode("ascii")
    lines = [data[i:i + 96] for i in range(0, len(data), 96)]
    body = "\n    ".join(f'"{line}"' for line in lines)
    return f"f64(\n    {body},\n    {shape})"


# -- the script ------------------------------------------------------------------

_HEADER = '''\
"""ConvLSTM2D on {title}, compared with a float64 reference.

{description}
Exit status: 1 when the result differs from the reference beyond the
budget (the float64 rounding-error bound for {dtype}), 0 when it agrees.
"""
'''

_COMMON = '''\
import base64
import sys

import numpy as np
{imports}


def f64(data, shape):
    return np.frombuffer(base64.b64decode(data), dtype="<f8").reshape(shape).copy()


CONFIG = {config}
DTYPE = {dtype!r}
INPUTS = {inputs}
KERNEL = {kernel}
RECURRENT_KERNEL = {recurrent_kernel}
BIAS = {bias}
INITIAL_STATE = {initial_state}
MASK = {mask}
# The float64 reference's result, and the error each element may carry.
EXPECTED = {expected}
BUDGET = {budget}
'''

_MAIN = '''

def compare(name, got, want, budget):
    got = np.asarray(got, dtype=np.float64)
    if got.shape != want.shape:
        print(f"{name}: shape {got.shape}, expected {want.shape}")
        return False
    same_special = (np.isnan(got) & np.isnan(want)) | (got == want)
    err = np.where(same_special, 0.0, np.abs(got - want))
    err = np.where(np.isnan(err), np.inf, err)
    ratio = np.where(err > 0, err / np.maximum(budget, 1e-300), 0.0)
    i = np.unravel_index(int(np.argmax(ratio)), ratio.shape) if ratio.size else ()
    bad = bool(ratio.size) and bool(ratio[i] > 1)
    if ratio.size:
        print(f"{name}: max |error| {err.max():.3g} at {tuple(int(v) for v in i)}: "
              f"got {float(got[i])!r}, expected {float(want[i])!r}, budget {budget[i]:.3g}, "
              f"error/budget {ratio[i]:.3g}" + (" DIFFERS" if bad else " ok"))
        print(f"  got      {np.array2string(got.ravel()[:6], precision=10)}")
        print(f"  expected {np.array2string(want.ravel()[:6], precision=10)}")
    return not bad


def main():
    print("python", sys.version.split()[0], "| numpy", np.__version__, "|", versions())
    got = run()
    names = list(EXPECTED)
    if len(got) != len(names):
        print(f"returned {len(got)} tensors, expected {len(names)} ({', '.join(names)})")
        return 1
    ok = all([compare(n, g, EXPECTED[n], BUDGET[n]) for n, g in zip(names, got)])
    print("agrees with the float64 reference" if ok
          else "DIFFERS from the float64 reference beyond the budget")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
'''


def script(case: Case, expected: Mapping[str, Any], budget: Mapping[str, Any], *, title: str,
           prelude: str, imports: str, body: str, config: Mapping[str, Any] | None = None) -> str:
    """The whole script: header, data, the implementation's ``body`` (which
    defines ``versions()`` and ``run()`` -> the returned tensors), the check."""
    names = [n for n in TENSORS if n in expected]
    budgets = {n: np.broadcast_to(np.asarray(budget[n], dtype=np.float64),
                                  np.shape(expected[n])) for n in names}
    shape = "x".join(str(d) for d in np.shape(case.inputs))
    description = (f"Input {shape}, dtype {case.dtype}, configuration:\n"
                   f"    {literal(dict(config if config is not None else case.config))}")
    state = ("None" if case.initial_state is None else
             "(" + ", ".join(array_literal(s) for s in case.initial_state) + ")")
    mask = "None" if case.mask is None else f"{array_literal(case.mask)}.astype(bool)"
    mapping = lambda arrays: "{\n    " + ",\n    ".join(  # noqa: E731
        f"{n!r}: {array_literal(arrays[n])}" for n in names) + ",\n}"
    data = _COMMON.format(
        imports=imports, config=literal(dict(config if config is not None else case.config)),
        dtype=case.dtype, inputs=array_literal(case.inputs), kernel=array_literal(case.kernel),
        recurrent_kernel=array_literal(case.recurrent_kernel), bias=array_literal(case.bias),
        initial_state=state, mask=mask, expected=mapping(expected), budget=mapping(budgets))
    header = _HEADER.format(title=title, description=description, dtype=case.dtype)
    return header + prelude + data + "\n" + body.strip("\n") + "\n" + _MAIN


def _given(case: Case, expected, budget) -> bool:
    return not supported(case) and bool(expected) and all(n in budget for n in expected)


# -- Keras 3 and tf-keras ----------------------------------------------------------

_KERAS_BODY = '''
ARRAY_DTYPE = {array_dtype!r}   # a mixed-precision policy keeps float32 variables


def versions():
    return {versions}


def tensor(a):
    {tensor}


def run():
    kwargs = {{k: tuple(v) if isinstance(v, list) else v for k, v in CONFIG.items()}}
    layer = keras.layers.ConvLSTM2D(**kwargs, dtype=DTYPE)
    # Stateful layers need the batch size in the input shape.
    layer.build(INPUTS.shape if kwargs.get("stateful") else (None,) + INPUTS.shape[1:])
    # Keras's own layout: kernel (kh, kw, in, 4F), recurrent kernel (kh, kw, F, 4F),
    # bias (4F,), gate blocks i, f, c, o.
    weights = [KERNEL, RECURRENT_KERNEL] + ([BIAS] if CONFIG.get("use_bias", True) else [])
    layer.set_weights([tensor(w) for w in weights])
    kw = {{"training": False}}
    if INITIAL_STATE is not None:
        kw["initial_state"] = [tensor(s) for s in INITIAL_STATE]
    if MASK is not None:
        kw["mask"] = MASK
    result = layer(tensor(INPUTS), **kw)
    result = result if isinstance(result, (list, tuple)) else [result]
    return [{to_numpy} for t in result]
'''


def keras(case: Case, expected: Mapping[str, Any], budget: Mapping[str, Any],
          flavor: str = "keras3", backend: str = "tensorflow") -> str | None:
    """keras.layers.ConvLSTM2D (Keras 3 on ``backend``) or tf_keras's (Keras 2):
    the canonical weights are Keras's layout, set as they are."""
    if not _given(case, expected, budget):
        return None
    from convlstm_conformance.adapters.keras_layer import _NOT_CONSTRUCTOR
    config = {k: v for k, v in case.config.items() if k not in _NOT_CONSTRUCTOR}
    array_dtype = "float32" if is_policy(case.dtype) else case.dtype
    if flavor == "keras3":
        lib = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[backend]
        title = f"Keras 3 ({backend} backend)"
        prelude = ("import os\n\n# Keras 3 picks its backend once, at import.\n"
                   f"os.environ[\"KERAS_BACKEND\"] = {backend!r}\n")
        imports = f"import keras\nimport {lib}"
        versions = f'f"keras {{keras.__version__}} | {lib} {{{lib}.__version__}}"'
        tensor = ('return keras.ops.cast(a.astype("float32"), ARRAY_DTYPE) '
                  'if ARRAY_DTYPE == "bfloat16" else a.astype(ARRAY_DTYPE)')
        to_numpy = "np.asarray(keras.ops.convert_to_numpy(t)).astype(np.float64)"
    else:
        title = "tf-keras (Keras 2)"
        prelude = ""
        imports = "import tensorflow as tf\nimport tf_keras as keras"
        versions = 'f"tf_keras {keras.__version__} | tensorflow {tf.__version__}"'
        # tf-keras refuses NumPy arrays as initial_state: tensors throughout.
        tensor = "return tf.cast(tf.constant(a), ARRAY_DTYPE)"
        to_numpy = "t.numpy().astype(np.float64)"
    body = _KERAS_BODY.format(array_dtype=array_dtype, versions=versions, tensor=tensor,
                              to_numpy=to_numpy)
    return script(case, expected, budget, title=title, prelude=prelude, imports=imports,
                  body=body, config=config)


# -- Flax and Haiku: two convolutions, gates i, g, f, o, sigmoid(f + 1) ---------

_JAX_PRELUDE = '''\
import jax

jax.config.update("jax_platforms", "cpu")
jax.config.update("jax_enable_x64", {x64})
'''

_JAX_COMMON = '''
def versions():
    return {versions}


def pair(v):
    return tuple(v) if isinstance(v, (list, tuple)) else (v, v)


def reorder(w):
    """Keras's gate blocks i, f, c, o -> the cell's i, g, f, o (g: the candidate)."""
    i, f, c, o = jnp.split(w, 4, axis=-1)
    return jnp.concatenate([i, c, f, o], axis=-1)


def weights():
    """(input kernel, recurrent kernel, input bias, recurrent bias) for the cell.
    Kernels are HWIO like Keras's.  Keras's one bias goes to the input
    convolution, less 1 on the forget gate (the cell adds 1 there); the
    recurrent convolution's bias is zero."""
    dt = jnp.dtype(DTYPE)
    filters = CONFIG["filters"]
    zero = jnp.zeros((filters,), dt)
    offset = jnp.concatenate([zero, zero + 1.0, zero, zero])
    bias = jnp.asarray(BIAS, dt) if CONFIG.get("use_bias", True) else offset * 0
    return (reorder(jnp.asarray(KERNEL, dt)), reorder(jnp.asarray(RECURRENT_KERNEL, dt)),
            reorder(bias - offset), jnp.zeros((4 * filters,), dt))


def run():
    dt = jnp.dtype(DTYPE)
    channels_first = CONFIG.get("data_format") == "channels_first"
    x = jnp.asarray(INPUTS, dt)
    state = None if INITIAL_STATE is None else [jnp.asarray(s, dt) for s in INITIAL_STATE]
    if channels_first:  # the cell is channels_last
        x = jnp.moveaxis(x, 2, -1)
        state = None if state is None else [jnp.moveaxis(s, 1, -1) for s in state]
    if state is None:
        state = [jnp.zeros(x.shape[:1] + x.shape[2:4] + (CONFIG["filters"],), dt)] * 2
    ys, h, c = jax.jit(unroll)(weights(), x, *state)
    out = ys if CONFIG.get("return_sequences", False) else ys[:, -1]
    if channels_first:
        out = jnp.moveaxis(out, -1, 2 if CONFIG.get("return_sequences", False) else 1)
        h, c = jnp.moveaxis(h, -1, 1), jnp.moveaxis(c, -1, 1)
    result = [out, h, c] if CONFIG.get("return_state", False) else [out]
    return [np.asarray(t).astype(np.float64) for t in result]
'''

_FLAX_UNROLL = '''
def unroll(params, x, h0, c0):
    """flax.linen.RNN over ConvLSTMCell; go_backwards scans from the last step
    and returns outputs in processing order, as Keras does."""
    kernel, recurrent_kernel, bias, recurrent_bias = params
    rnn = nn.RNN(nn.ConvLSTMCell(features=CONFIG["filters"], kernel_size=pair(CONFIG["kernel_size"]),
                                 padding="SAME", use_bias=True),
                 return_carry=True, reverse=CONFIG.get("go_backwards", False), keep_order=False)
    cell = {"ih": {"kernel": kernel, "bias": bias},
            "hh": {"kernel": recurrent_kernel, "bias": recurrent_bias}}
    (c, h), ys = rnn.apply({"params": {"cell": cell}}, x, initial_carry=(c0, h0))
    return ys, h, c
'''

_HAIKU_UNROLL = '''
def unroll(params, x, h0, c0):
    """haiku.Conv2DLSTM under haiku.dynamic_unroll; with go_backwards the
    outputs are flipped into processing order, as Keras returns them."""
    kernel, recurrent_kernel, bias, recurrent_bias = params
    backwards = CONFIG.get("go_backwards", False)

    def core_unroll(x, h0, c0):
        core = hk.Conv2DLSTM(input_shape=x.shape[2:4], output_channels=CONFIG["filters"],
                             kernel_shape=pair(CONFIG["kernel_size"]), name="conv_lstm")
        ys, state = hk.dynamic_unroll(core, x, hk.LSTMState(hidden=h0, cell=c0),
                                      time_major=False, reverse=backwards)
        return (jnp.flip(ys, axis=1) if backwards else ys), state.hidden, state.cell

    p = {"conv_lstm/input_to_hidden": {"w": kernel, "b": bias},
         "conv_lstm/hidden_to_hidden": {"w": recurrent_kernel, "b": recurrent_bias}}
    return hk.transform(core_unroll).apply(p, None, x, h0, c0)
'''


def _jax_cell(case, expected, budget, title: str, imports: str, versions: str,
              unroll: str) -> str | None:
    if not _given(case, expected, budget):
        return None
    prelude = _JAX_PRELUDE.format(x64=case.dtype == "float64")
    body = _JAX_COMMON.format(versions=versions) + unroll
    return script(case, expected, budget, title=title, prelude=prelude,
                  imports="import jax.numpy as jnp\n" + imports, body=body)


def flax(case: Case, expected: Mapping[str, Any], budget: Mapping[str, Any]) -> str | None:
    """flax.linen.ConvLSTMCell under flax.linen.RNN (adapters/flax_linen.py)."""
    return _jax_cell(case, expected, budget, "Flax (flax.linen.ConvLSTMCell)",
                     "import flax\nimport flax.linen as nn",
                     'f"flax {flax.__version__} | jax {jax.__version__}"', _FLAX_UNROLL)


def haiku(case: Case, expected: Mapping[str, Any], budget: Mapping[str, Any]) -> str | None:
    """haiku.Conv2DLSTM under haiku.dynamic_unroll (adapters/haiku_conv2dlstm.py)."""
    return _jax_cell(case, expected, budget, "Haiku (haiku.Conv2DLSTM)", "import haiku as hk",
                     'f"dm-haiku {hk.__version__} | jax {jax.__version__}"', _HAIKU_UNROLL)


# -- conv-lstm (PyPI): one convolution over cat([x, h]), gates i, f, o, g --------

_CONV_LSTM_BODY = '''
def versions():
    from importlib.metadata import version
    return f"conv-lstm {version('conv-lstm')} | torch {torch.__version__}"


def reorder(w):
    """Keras's gate blocks i, f, c, o -> the library's i, f, o, g."""
    i, f, c, o = np.split(w, 4, axis=-1)
    return np.concatenate([i, f, o, c], axis=-1)


def run():
    dtype = getattr(torch, DTYPE)
    channels_first = CONFIG.get("data_format") == "channels_first"
    k = KERNEL.shape[0]
    model = ConvLSTM(input_dim=KERNEL.shape[2], hidden_dim=CONFIG["filters"], kernel_size=k,
                     num_layers=1, batch_first=True, bias=CONFIG.get("use_bias", True),
                     return_all_layers=False).to(dtype)
    # One conv over cat([x, h]): the kernels stacked on the input-channel
    # axis, HWIO -> torch's OIHW; the bias as it is.
    state = {"cell_list.0.conv.weight": torch.tensor(
        reorder(np.concatenate([KERNEL, RECURRENT_KERNEL], axis=2)).transpose(3, 2, 0, 1).copy())}
    if CONFIG.get("use_bias", True):
        state["cell_list.0.conv.bias"] = torch.tensor(reorder(BIAS))
    model.load_state_dict({n: v.to(dtype) for n, v in state.items()})
    x = torch.tensor(INPUTS, dtype=dtype)
    if not channels_first:  # the library takes (B, T, C, H, W)
        x = x.permute(0, 1, 4, 2, 3)
    if CONFIG.get("go_backwards", False):
        x = torch.flip(x, dims=[1])   # outputs then come in processing order, as Keras's
    with torch.no_grad():
        layer_outputs, last_states = model(x)
    seq, (h, c) = layer_outputs[0], last_states[0]
    sequences = CONFIG.get("return_sequences", False)
    out = seq if sequences else seq[:, -1]
    if not channels_first:
        out = out.permute(0, 1, 3, 4, 2) if sequences else out.permute(0, 2, 3, 1)
        h, c = h.permute(0, 2, 3, 1), c.permute(0, 2, 3, 1)
    result = [out, h, c] if CONFIG.get("return_state", False) else [out]
    return [t.double().numpy() for t in result]
'''


def conv_lstm(case: Case, expected: Mapping[str, Any], budget: Mapping[str, Any]) -> str | None:
    """conv_lstm.ConvLSTM with one layer (adapters/conv_lstm_pypi.py)."""
    if not _given(case, expected, budget) or case.initial_state is not None \
            or case.mask is not None:
        return None
    return script(case, expected, budget, title="conv-lstm (PyPI, PyTorch)", prelude="",
                  imports="import torch\nfrom conv_lstm import ConvLSTM", body=_CONV_LSTM_BODY)
