"""The third-party adapters (flax, haiku, conv-lstm) against the float64 oracle.

Every adapter meets every case of a small grid: a case inside its declared
capabilities must conform to the oracle within the tolerance model, a case
outside them must be refused cleanly.  Weights are random and asymmetric, with
a non-zero forget bias, so a gate swap, a kernel transpose or a forgotten
forget-gate offset in a weight mapping fails loudly (checked below by mutants).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from convlstm_conformance.features import Capabilities, required_features
from convlstm_conformance.model import Case
from convlstm_conformance import oracle
from convlstm_conformance.tolerance import judge

ROOT = Path(__file__).resolve().parents[1]
MODULES = {"flax": ("convlstm_conformance.adapters.flax_linen", "FlaxConvLSTM"),
           "haiku": ("convlstm_conformance.adapters.haiku_conv2dlstm", "HaikuConv2DLSTM"),
           "conv-lstm": ("convlstm_conformance.adapters.conv_lstm_pypi", "ConvLstmPyPI")}


def _adapter(name):
    import importlib
    module, cls = MODULES[name]
    return getattr(importlib.import_module(module), cls)()


@pytest.fixture(scope="module", params=sorted(MODULES))
def adapter(request):
    pytest.importorskip({"flax": "flax", "haiku": "haiku", "conv-lstm": "conv_lstm"}[request.param])
    return _adapter(request.param)


# -- cases ---------------------------------------------------------------------

def _round(a, dtype):
    if a is None:
        return None
    np_dtype = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype)
    return np.asarray(a).astype(np_dtype).astype(np.float64)


def make_case(config, *, dtype="float32", shape=(2, 3, 5, 6, 3), initial_state=False,
              cotangent=False, seed=0) -> Case:
    """A case with random asymmetric weights; ``shape`` is (B, T, H, W, C)."""
    rng = np.random.default_rng(seed)
    cfg = {"padding": "same", **config}
    B, T, H, W, C = shape
    F = cfg["filters"]
    kh, kw = cfg["kernel_size"]
    cf = cfg.get("data_format") == "channels_first"
    x = rng.normal(size=(B, T, C, H, W) if cf else (B, T, H, W, C))
    scale = 1.0 / np.sqrt(kh * kw * (C + F))
    kernel = rng.normal(scale=scale, size=(kh, kw, C, 4 * F))
    recurrent = rng.normal(scale=scale, size=(kh, kw, F, 4 * F))
    bias = rng.normal(size=4 * F) if cfg.get("use_bias", True) else None
    state_shape = (B, F, H, W) if cf else (B, H, W, F)
    state = (tuple(_round(rng.normal(size=state_shape), dtype) for _ in range(2))
             if initial_state else None)
    case = Case(config=cfg, inputs=_round(x, dtype), kernel=_round(kernel, dtype),
                recurrent_kernel=_round(recurrent, dtype), bias=_round(bias, dtype),
                initial_state=state, dtype=dtype)
    if cotangent:
        out = oracle.forward(case).output
        case.cotangent = _round(rng.normal(size=out.shape), dtype)
    return case


GRID = {
    "k3-seq-state": make_case(dict(filters=2, kernel_size=(3, 3), return_sequences=True,
                                   return_state=True)),
    "k2x3-back-init": make_case(dict(filters=2, kernel_size=(2, 3), return_state=True,
                                     go_backwards=True), initial_state=True, seed=1),
    "cf-nobias-back-init": make_case(dict(filters=3, kernel_size=(3, 3), use_bias=False,
                                          data_format="channels_first", return_sequences=True,
                                          return_state=True, go_backwards=True),
                                     initial_state=True, seed=2),
    "cf-k5-back": make_case(dict(filters=3, kernel_size=(5, 5), data_format="channels_first",
                                 return_sequences=True, go_backwards=True),
                            shape=(1, 4, 6, 5, 2), seed=3),
    "f64-k1": make_case(dict(filters=2, kernel_size=(1, 1), return_state=True),
                        dtype="float64", seed=4),
    "f64-k3-cf-seq": make_case(dict(filters=2, kernel_size=(3, 3), return_sequences=True,
                                    data_format="channels_first"), dtype="float64", seed=5),
    "f16-k3-state": make_case(dict(filters=2, kernel_size=(3, 3), return_state=True),
                              dtype="float16", seed=6),
    "bf16-cf-seq": make_case(dict(filters=2, kernel_size=(3, 3), return_sequences=True,
                                  data_format="channels_first"), dtype="bfloat16", seed=7),
    # Outside every adapter's capabilities here.
    "valid": make_case(dict(filters=2, kernel_size=(3, 3), padding="valid"), seed=8),
    "strides": make_case(dict(filters=2, kernel_size=(3, 3), strides=(2, 2)), seed=9),
    "dilation": make_case(dict(filters=2, kernel_size=(3, 3), dilation_rate=(2, 1)), seed=10),
    "relu": make_case(dict(filters=2, kernel_size=(3, 3), activation="relu"), seed=11),
}
GRID["mask"] = make_case(dict(filters=2, kernel_size=(3, 3)), seed=12)
GRID["mask"].mask = np.array([[True, True, False], [True, False, True]])

_ORACLE: dict[str, oracle.Result] = {}


def _oracle(name: str) -> oracle.Result:
    if name not in _ORACLE:
        _ORACLE[name] = oracle.forward(GRID[name])
    return _ORACLE[name]


def _describe(adapter, name, case):
    return f"{adapter.name} on {name} ({case.dtype}, {case.config})"


@pytest.mark.parametrize("name", sorted(GRID))
def test_conforms_or_refuses(adapter, name):
    case = GRID[name]
    caps = adapter.capabilities()
    outcome = adapter.run(case)
    where = _describe(adapter, name, case)
    if not caps.covers(case):
        assert outcome.status == "refused", (
            f"{where}: outside capabilities {caps.missing(required_features(case))}, "
            f"expected a refusal, got {outcome.summary()}")
        assert outcome.detail, f"{where}: refusal without a reason"
        return
    assert outcome.status == "ok", f"{where}: expected ok, got {outcome.summary()}"
    verdict = judge(case, outcome, _oracle(name))
    assert verdict.passed, f"{where}: differs from the oracle:\n{verdict.describe()}"
    n = 3 if case.config.get("return_state") else 1
    assert outcome.structure == ("list" if n == 3 else "tensor"), (
        f"{where}: structure {outcome.structure!r}")
    assert outcome.dtypes == [case.dtype] * n, (
        f"{where}: output dtypes {outcome.dtypes}, expected {[case.dtype] * n}")
    assert all(a.dtype == np.float64 for a in outcome.outputs), f"{where}: outputs not float64"


def test_grid_exercises_each_adapter(adapter):
    covered = [n for n, c in GRID.items() if adapter.capabilities().covers(c)]
    assert len(covered) >= 4, f"{adapter.name}: only {covered} of the grid inside capabilities"


# -- gradients -----------------------------------------------------------------

GRAD_CASE = make_case(dict(filters=2, kernel_size=(3, 3), return_sequences=True,
                           return_state=True, go_backwards=True),
                      dtype="float64", shape=(2, 3, 4, 5, 2), cotangent=True, seed=20)
GRAD_CASE_INIT = make_case(dict(filters=2, kernel_size=(3, 2), data_format="channels_first",
                                return_state=True),
                           dtype="float64", shape=(1, 3, 4, 4, 2), initial_state=True,
                           cotangent=True, seed=21)


def _with(case: Case, name: str, value: np.ndarray) -> Case:
    arrays = {"inputs": case.inputs, "kernel": case.kernel,
              "recurrent_kernel": case.recurrent_kernel, "bias": case.bias}
    state = list(case.initial_state) if case.initial_state is not None else None
    if name in arrays:
        arrays[name] = value
    else:
        state[0 if name == "initial_h" else 1] = value
    return Case(config=case.config, inputs=arrays["inputs"], kernel=arrays["kernel"],
                recurrent_kernel=arrays["recurrent_kernel"], bias=arrays["bias"],
                initial_state=tuple(state) if state else None, dtype=case.dtype)


def _directional_fd(case: Case, name: str, direction: np.ndarray, eps=1e-6) -> float:
    """d/de sum(oracle_output(arg + e * direction) * cotangent), central differences."""
    base = case.arrays()[name]
    plus = oracle.forward(_with(case, name, base + eps * direction)).output
    minus = oracle.forward(_with(case, name, base - eps * direction)).output
    return float(np.sum((plus - minus) * case.cotangent) / (2 * eps))


@pytest.mark.parametrize("case", [GRAD_CASE, GRAD_CASE_INIT], ids=["zero-state", "init-state"])
def test_gradients_match_finite_differences(adapter, case):
    caps = adapter.capabilities()
    if not caps.covers(case):
        outcome = adapter.run(case)
        assert outcome.status == "refused", f"{adapter.name}: {outcome.summary()}"
        return
    outcome = adapter.run(case)
    assert outcome.status == "ok", f"{adapter.name}: {outcome.summary()}"
    expected = {"inputs", "kernel", "recurrent_kernel", "bias"}
    if case.initial_state is not None:
        expected |= {"initial_h", "initial_c"}
    assert set(outcome.grads) == expected, f"{adapter.name}: grads for {sorted(outcome.grads)}"
    rng = np.random.default_rng(30)
    for name, grad in outcome.grads.items():
        arg = case.arrays()[name]
        assert grad.shape == arg.shape, f"{adapter.name}: d/d{name} shape {grad.shape}"
        direction = rng.normal(size=arg.shape)
        want = _directional_fd(case, name, direction)
        got = float(np.sum(grad * direction))
        assert abs(got - want) <= 1e-6 * max(1.0, abs(want)), (
            f"{adapter.name}: d/d{name} along a random direction: {got}, "
            f"finite differences of the oracle: {want}")


# -- mutants: a wrong weight mapping must fail ----------------------------------

def _swap_blocks(blocks, j, k):
    blocks = list(blocks)
    blocks[j], blocks[k] = blocks[k], blocks[j]
    return blocks


def _jax_mutants(key_in, key_w, key_b):
    """Mutations of a flax/haiku parameter dict (library gate order i, g, f, o)."""
    import jax.numpy as jnp

    def gate_order(p):   # Keras order left as is: candidate and forget swapped
        return {k: {n: jnp.concatenate(_swap_blocks(jnp.split(v, 4, axis=-1), 1, 2), axis=-1)
                    for n, v in d.items()} for k, d in p.items()}

    def offset(p):       # forget-gate +1 not compensated
        p = {k: dict(d) for k, d in p.items()}
        b = p[key_in][key_b]
        F = b.size // 4
        p[key_in][key_b] = b.at[2 * F:3 * F].add(1.0)
        return p

    def transpose(p):    # kernel rows and columns swapped
        p = {k: dict(d) for k, d in p.items()}
        p[key_in][key_w] = jnp.swapaxes(p[key_in][key_w], 0, 1)
        return p

    return {"gate-order": gate_order, "forget-offset": offset, "transpose": transpose}


def _torch_mutants():
    """Mutations of conv_lstm's {name: tensor} (library gate order i, f, o, g)."""
    import torch

    def gate_order(p):
        return {n: torch.cat(_swap_blocks(torch.chunk(v, 4, dim=0), 2, 3), dim=0)
                for n, v in p.items()}

    def transpose(p):
        return {n: (v.transpose(2, 3) if v.dim() == 4 else v) for n, v in p.items()}

    def drop_bias(p):
        return {n: (v * 0 if v.dim() == 1 else v) for n, v in p.items()}

    return {"gate-order": gate_order, "transpose": transpose, "drop-bias": drop_bias}


MUTANT_CASE = make_case(dict(filters=2, kernel_size=(3, 3), return_sequences=True,
                             return_state=True), shape=(2, 3, 5, 5, 3), seed=40)


def _mutable(adapter):
    """(module, mapping attribute, mutants, jit cache to clear or None)."""
    import importlib
    module = importlib.import_module(MODULES[adapter.name][0])
    if adapter.name == "flax":
        return (module, "keras_to_flax_params", _jax_mutants("ih", "kernel", "bias"),
                module._compiled)
    if adapter.name == "haiku":
        m = module.MODULE
        return (module, "keras_to_haiku_params",
                _jax_mutants(f"{m}/input_to_hidden", "w", "b"), module._compiled)
    return module, "keras_to_conv_lstm_params", _torch_mutants(), None


def test_wrong_mappings_are_caught(adapter):
    module, attr, mutants, cache = _mutable(adapter)
    original = getattr(module, attr)
    expected = oracle.forward(MUTANT_CASE)
    assert judge(MUTANT_CASE, adapter.run(MUTANT_CASE), expected).passed, "unmutated run fails"
    for label, mutate in mutants.items():
        setattr(module, attr, lambda *a, _m=mutate: _m(original(*a)))
        if cache:
            cache.cache_clear()
        try:
            outcome = adapter.run(MUTANT_CASE)
        finally:
            setattr(module, attr, original)
            if cache:
                cache.cache_clear()
        verdict = judge(MUTANT_CASE, outcome, expected)
        assert outcome.status == "ok", f"{adapter.name}: mutant {label}: {outcome.summary()}"
        assert not verdict.passed and verdict.worst > 10, (
            f"{adapter.name}: mutant {label} of {attr} was not caught:\n{verdict.describe()}")


# -- protocol ------------------------------------------------------------------

def test_library_errors_become_outcomes(adapter):
    case = make_case(dict(filters=2, kernel_size=(3, 3)), seed=50)
    case.kernel = case.kernel[:, :, :2]     # C_in 2 in the kernel, 3 in the inputs
    outcome = adapter.run(case)
    assert outcome.status == "raised", f"{adapter.name}: {outcome.summary()}"
    assert outcome.error is not None and outcome.error.phase == "call", (
        f"{adapter.name}: {outcome.error}")


def test_missing_weights_are_refused(adapter):
    case = make_case(dict(filters=2, kernel_size=(3, 3)), seed=51)
    case.kernel = None
    outcome = adapter.run(case)
    assert outcome.status == "refused", f"{adapter.name}: {outcome.summary()}"


def test_versions_and_capabilities_serialise(adapter):
    versions = adapter.versions()
    assert versions and all(isinstance(v, str) and v for v in versions.values()), versions
    caps = adapter.capabilities()
    assert Capabilities.from_json(caps.to_json()) == caps
    assert caps.activation == {"tanh"} and caps.recurrent_activation == {"sigmoid"}
    assert not caps.argument_validation and not caps.strides and not caps.dilation


def test_modules_import_no_framework():
    code = ("import sys, convlstm_conformance.adapters.flax_linen, "
            "convlstm_conformance.adapters.haiku_conv2dlstm, "
            "convlstm_conformance.adapters.conv_lstm_pypi;"
            "print(sorted(m for m in ('jax', 'flax', 'haiku', 'torch', 'conv_lstm')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]", f"frameworks imported eagerly: {out.stdout}{out.stderr}"
