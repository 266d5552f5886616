"""The convlstm-mlx adapter (adapters/convlstm_mlx.py): its weight mapping is
exact, and the library's own result is handed over unrepaired.

The library (0.1.1) reshapes its time-major buffer of hidden states to
batch-major without a transpose, then squeezes every axis of extent one; the
mapping is judged on the result with that reshape undone.  Runs where the
``[mlx]`` extra is installed (MLX's CPU build runs on Linux x86).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from convlstm_conformance import oracle
from convlstm_conformance.model import Case

ROOT = Path(__file__).resolve().parents[1]


def make_case(B=2, T=3, H=4, W=5, C=2, F=3, k=3, seed=0, **config) -> Case:
    rng = np.random.default_rng(seed)
    f32 = lambda a: a.astype(np.float32).astype(np.float64)     # noqa: E731
    return Case(config=dict(filters=F, kernel_size=k, padding="same", return_sequences=True,
                            **config),
                inputs=f32(rng.standard_normal((B, T, H, W, C))),
                kernel=f32(rng.standard_normal((k, k, C, 4 * F)) * 0.3),
                recurrent_kernel=f32(rng.standard_normal((k, k, F, 4 * F)) * 0.3),
                bias=f32(rng.standard_normal(4 * F) * 0.3), dtype="float32")


def test_the_mapping_matches_the_oracle_once_the_librarys_reshape_is_undone():
    pytest.importorskip("convlstm_mlx")
    import mlx.core as mx
    from convlstm_mlx import ConvLSTM
    from convlstm_conformance.adapters.convlstm_mlx import keras_to_mlx_params
    case = make_case()
    B, T, H, W, _ = case.inputs.shape
    model = ConvLSTM(2, 3, kernel_size=3)
    model.update(keras_to_mlx_params(*(mx.array(a.astype(np.float32)) for a in
                                       (case.kernel, case.recurrent_kernel, case.bias))))
    got = np.asarray(model(mx.array(case.inputs.astype(np.float32))), np.float64)
    expected = oracle.forward(case).output
    assert np.abs(got - expected).max() > 0.1       # the library's reshape scrambles B and T
    undone = got.reshape(T, B, H, W, 3).transpose(1, 0, 2, 3, 4)
    assert np.abs(undone - expected).max() < 1e-5


def test_the_adapter_hands_over_the_squeezed_result():
    pytest.importorskip("convlstm_mlx")
    from convlstm_conformance.adapters.convlstm_mlx import ConvLstmMLX
    outcome = ConvLstmMLX().run(make_case(B=1, F=1))
    assert outcome.status == "ok", outcome.summary()
    assert outcome.outputs[0].shape == (3, 4, 5)     # (1, 3, 4, 5, 1) squeezed


def test_the_module_imports_no_framework():
    code = ("import sys, convlstm_conformance.adapters.convlstm_mlx;"
            "print(sorted(m for m in ('mlx', 'convlstm_mlx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
