"""Dropout: clauses of kind dropout, checked statistically.

The layer is given weights that make the candidate gate's dropout mask
visible in the cell state: input, forget and output gates saturate open
(bias 30, zero kernels), the candidate is the linear image of one input
channel, recurrent kernels are zero.  Then with all-ones inputs the state
after step t is t * m, m the candidate gate's mask (0 or 1/(1-rate)), and
every output position is one Bernoulli sample.  Recurrent dropout shows the
same way through an all-ones initial state at the first step.

What is checked, for every rate in the clause's focus:
* inference (training=False) drops nothing;
* the dropped fraction is within 5 standard errors of the rate (a correct
  layer fails this less than once in a million runs);
* kept units are scaled by exactly 1/(1-rate) (inverted dropout);
* one mask serves every step of a call;
* a second call draws a fresh mask;
* with ``seed`` in the focus: the seeded layer drops its rate (as above), and
  two layers built with that seed drop the same units.
"""
import math

import numpy as np
import pytest

from convlstm_conformance.model import Call, Case
from convlstm_conformance import harness

CLAUSE_KINDS = ("dropout",)
B, T, H, W = 4, 3, 24, 24          # 2304 Bernoulli samples per call


def _case(rate: float, recurrent: bool, training: bool, seed=None) -> Case:
    F, C = 1, 1
    kernel = np.zeros((1, 1, C, 4 * F))
    rkernel = np.zeros((1, 1, F, 4 * F))
    bias = np.array([30.0, 30.0, 0.0, 30.0])     # i, f, o open; candidate linear
    if recurrent:
        rkernel[0, 0, 0, 2] = 1.0                 # candidate = h_prev * mask
    else:
        kernel[0, 0, 0, 2] = 1.0                  # candidate = x * mask
    cfg = {"filters": 1, "kernel_size": 1, "activation": "linear",
           "recurrent_activation": "sigmoid", "return_sequences": True, "return_state": True,
           ("recurrent_dropout" if recurrent else "dropout"): rate}
    if seed is not None:
        cfg["seed"] = seed
    steps = 1 if recurrent else T
    case = Case(config=cfg, inputs=np.ones((B, steps, H, W, C)), kernel=kernel,
                recurrent_kernel=rkernel, bias=bias, training=training)
    if recurrent:
        case.initial_state = (np.ones((B, H, W, F)), np.zeros((B, H, W, F)))
    case.followups = [Call(case.inputs.copy(), initial_state=case.initial_state)]
    return case


def _masks(outcome, steps):
    """Per-call masks read off the output sequence: out[:, t] = (t + 1) * m."""
    calls = [outcome.outputs] + outcome.followup_outputs
    assert len(calls) == 2, (f"the adapter returned results for {len(calls)} call(s) of a case "
                             f"with one follow-up call")
    return [np.asarray(c[0])[..., 0] for c in calls]


def _check(rate, seq, recurrent, record):
    steps = seq.shape[1]
    m = seq[:, 0]
    n = m.size
    # A kept unit is scaled to at least 1; a dropped one is 0 up to the
    # rounding of the implementation's arithmetic (an FFT convolution leaves
    # ~1e-7 where a direct one leaves exactly 0).
    off = np.abs(m) < 0.5
    dropped = float(off.mean())
    se = math.sqrt(rate * (1 - rate) / n)
    what = "recurrent_dropout" if recurrent else "dropout"
    record.setdefault("measured", []).append({"what": what, "rate": rate, "dropped": dropped,
                                              "standard_error": se, "samples": n})
    assert abs(dropped - rate) <= 5 * se, (
        f"{what}={rate}: dropped fraction {dropped:.4f} over {n} units is more than 5 standard "
        f"errors ({se:.4f}) from the rate")
    kept = m[~off]
    np.testing.assert_allclose(kept, 1.0 / (1.0 - rate), rtol=1e-5, err_msg=(
        f"{what}={rate}: kept units are not scaled by 1/(1-rate) = {1 / (1 - rate):.6f}"))
    for t in range(1, steps):
        np.testing.assert_allclose(seq[:, t], (t + 1) * m, rtol=1e-5, atol=1e-6, err_msg=(
            f"{what}={rate}: the mask at step {t + 1} is not the mask of step 1"))


def test_dropout(adapter_name, clause_id, adapters, spec, record):
    try:
        _test_dropout(adapter_name, clause_id, adapters, spec, record)
    except AssertionError as exc:
        harness.xfail_if_expected(spec, adapter_name, clause_id, str(exc), None, record)
        record["message"] = str(exc)[:4000]
        raise


def _test_dropout(adapter_name, clause_id, adapters, spec, record):
    adapter = adapters.get(adapter_name)
    caps = adapter.capabilities()
    clause = spec.clause(clause_id)
    record["clause"] = clause_id
    if not caps.dropout:
        pytest.skip(f"{adapter_name} does not claim dropout")
    seed = (clause.focus.get("seed") or [None])[0]
    for rate in clause.focus.get("dropout", ()):
        for recurrent in (False, True):
            where = f"[{clause_id}] {adapter_name}, {'recurrent_' if recurrent else ''}dropout={rate}"
            off = adapter.run(_case(rate, recurrent, training=False))
            assert off.status == "ok", f"{where}: {off.summary()}"
            ones = np.asarray(off.outputs[0])[..., 0]
            expected = np.arange(1, ones.shape[1] + 1)[None, :, None, None] * np.ones_like(ones)
            np.testing.assert_allclose(ones, expected, rtol=1e-6, err_msg=(
                f"{where}: dropout acted at inference (training=False)"))
            out = adapter.run(_case(rate, recurrent, training=True, seed=seed))
            assert out.status == "ok", f"{where}: {out.summary()}"
            first, second = _masks(out, ones.shape[1])
            if seed is None:
                _check(rate, first, recurrent, record)
                _check(rate, second, recurrent, record)
                differ = float(((np.abs(first[:, 0]) < 0.5)
                                != (np.abs(second[:, 0]) < 0.5)).mean())
                expected_differ = 2 * rate * (1 - rate)
                assert differ > expected_differ / 2, (
                    f"{where}: the second call reused the first call's mask "
                    f"({differ:.3f} of units differ, expected about {expected_differ:.3f})")
            else:
                # Equal masks prove nothing if nothing is dropped: the seeded
                # layer's mask must be a dropout mask of its rate first.
                _check(rate, first, recurrent, record)
                again = adapter.run(_case(rate, recurrent, training=True, seed=seed))
                assert again.status == "ok", f"{where}: {again.summary()}"
                np.testing.assert_array_equal(
                    _masks(again, ones.shape[1])[0], first,
                    err_msg=f"{where}: two layers built with seed={seed} dropped different units")
