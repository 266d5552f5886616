"""The tolerance model's calibration, pinned: how far below their budgets
known correct implementations land, measured on fixed cases.

A model made looser (a bigger safety factor, a dropped term inverted) moves
these ratios down, one made tighter moves them up towards false alarms: both
fail here.  The bands are the figures of benchmarks/README.md (tolerance
calibration) with a factor of four either way; the cases are seeded, so the
measurement repeats exactly for a given NumPy and torch.
"""
from __future__ import annotations

import numpy as np
import pytest

from convlstm_conformance import tolerance
from convlstm_conformance.spec import load_cached
from convlstm_conformance.strategies import Chooser, draw_config, make_case, scales
from tests.mutants import Float32ConvLSTM

SPEC = load_cached()


def _ratios(adapter, n: int, seed: int, gradients: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    caps = adapter.capabilities()
    judge = tolerance.judge_gradients if gradients else tolerance.judge
    out = []
    for k in range(n):
        drawn = draw_config(Chooser(rng=rng), SPEC, caps=caps)
        case = make_case(SPEC, drawn, k, dtype="float32",
                         scale=scales().weights[k % len(scales().weights)], cotangent=gradients)
        verdict = judge(case, adapter.run(case))
        if not verdict.unjudged:
            out.append(verdict.worst)
    return np.array(out)


def _assert_band(name, ratios, median_band, max_below=1.0):
    med = float(np.median(ratios))
    lo, hi = median_band
    assert ratios.max() <= max_below, f"{name}: a correct implementation exceeds its budget " \
                                      f"(max ratio {ratios.max():.3g}): the model is too tight"
    assert med >= lo, (f"{name}: median error/budget {med:.3g} below {lo}: the budgets grew "
                       f"looser than calibrated")
    assert med <= hi, (f"{name}: median error/budget {med:.3g} above {hi}: the budgets grew "
                       f"tighter than calibrated")


def test_float32_numpy_outputs_sit_where_calibrated():
    ratios = _ratios(Float32ConvLSTM(), 200, seed=7)
    assert len(ratios) >= 190
    _assert_band("float32 NumPy outputs", ratios, (0.003, 0.05))


def test_forget_bias_mutant_stays_far_above_budget():
    """The other side: the smallest error a calibrated model must flag."""
    ratios = _ratios(Float32ConvLSTM("forget_bias_plus_0.01"), 200, seed=7)
    live = ratios[ratios > 0.1]
    assert len(live) > 50 and float(np.median(live)) > 50, np.median(live)


def test_torch_reference_gradients_sit_where_calibrated():
    pytest.importorskip("torch")
    from convlstm_conformance.adapters.ref_torch import TorchReferenceAdapter
    ratios = _ratios(TorchReferenceAdapter("cpu"), 100, seed=8, gradients=True)
    _assert_band("ref-torch-cpu float32 gradients", ratios, (0.002, 0.04))
