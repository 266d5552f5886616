"""Capability claims checked the other way: outside its claims an adapter must
refuse cleanly, and a feature that works without being claimed is reported.

For every feature an adapter does not claim, a case is drawn that needs that
feature and nothing else outside the claims.  Acceptable answers:
* ``refused`` by the adapter, or ``raised`` by the library (it knows it cannot);
* ``ok`` with results the oracle accepts: the feature works; the test passes
  and its record says the claim could be widened.
Anything else fails: results the oracle rejects (silently wrong instead of
refusing), a crash, a hang, an adapter error.
"""
import numpy as np
import pytest

from adapters.base import REFUSED, RAISED, OK, required_features
from conformance import tolerance
from conformance.strategies import Chooser, Unsatisfiable, draw_config, make_case

CLAUSE = "CAPABILITY-CLAIMS"

# Feature -> how to ask for it: (focus, make_case options, dtype).
PROBES = {
    "padding=valid": ({"padding": ["valid"]}, {}, None),
    "padding=same": ({"padding": ["same"]}, {}, None),
    "strides": ({"strides": [2, [2, 1]], "dilation_rate": [1]}, {}, None),
    "dilation": ({"dilation_rate": [2, [1, 2]], "strides": [1]}, {}, None),
    "kernel_parity=even": ({"kernel_size": [2, [2, 2]]}, {}, None),
    "non_square": ({"kernel_size": [[1, 3], [3, 1]]}, {}, None),
    "data_format=channels_first": ({"data_format": ["channels_first"]}, {}, None),
    "activation=relu": ({"activation": ["relu"]}, {}, None),
    "activation=hard_sigmoid": ({"activation": ["hard_sigmoid"]}, {}, None),
    "recurrent_activation=hard_sigmoid": ({"recurrent_activation": ["hard_sigmoid"]}, {}, None),
    "no_bias": ({"use_bias": [False]}, {}, None),
    "go_backwards": ({"go_backwards": [True]}, {}, None),
    "return_state": ({"return_state": [True]}, {}, None),
    "mask": ({}, {"mask": "random"}, None),
    "initial_state": ({}, {"initial_state": True}, None),
    "dtype=float64": ({}, {}, "float64"),
    "dtype=float16": ({}, {}, "float16"),
}


def _unclaimed(adapter):
    caps = adapter.capabilities()
    out = []
    for feature, (focus, options, dtype) in PROBES.items():
        name, _, value = feature.partition("=")
        claimed = getattr(caps, name)
        if value:
            if value not in claimed:
                out.append(feature)
        elif not claimed:
            out.append(feature)
    return out


def test_outside_claims_refuses_or_works(adapter_name, adapters, spec, record):
    adapter = adapters.get(adapter_name)
    caps = adapter.capabilities()
    record.update({"clause": CLAUSE, "adapter": adapter_name})
    features = _unclaimed(adapter)
    if not features:
        pytest.skip(f"{adapter_name} claims every probed feature")
    works, refused, failures = [], [], []
    for feature in features:
        focus, options, dtype = PROBES[feature]
        name, _, value = feature.partition("=")
        # Draw inside the claims except for the probed feature.
        probe_caps = _widened(caps, name, value)
        try:
            drawn = draw_config(Chooser(rng=np.random.default_rng(len(feature))), spec,
                                focus=focus, caps=probe_caps, sizes={"timesteps": 2})
        except Unsatisfiable:
            continue
        case = make_case(spec, drawn, 0, dtype=dtype or _a_claimed_dtype(caps), **options)
        gaps = caps.missing(required_features(case))
        outcome = adapter.run(case)
        if outcome.status in (REFUSED, RAISED):
            refused.append(f"{feature}: {outcome.status}")
        elif outcome.status == OK:
            verdict = tolerance.judge(case, outcome)
            if verdict.unjudged:
                record.setdefault("not_judged", []).append(f"{feature}: {verdict.unjudged}")
            elif verdict.passed:
                works.append(feature)
            else:
                failures.append(f"{feature} (case needs {gaps}): returned results the oracle "
                                f"rejects instead of refusing:\n    "
                                + verdict.describe().replace("\n", "\n    "))
        else:
            failures.append(f"{feature}: {outcome.summary()}")
    record["unclaimed_but_working"] = works
    record["refused"] = refused
    if works:
        record["message"] = (f"{adapter_name} does not claim {', '.join(works)}, but cases needing "
                             f"them match the oracle: the claims could be widened")
    assert not failures, (f"[{CLAUSE}] {adapter_name}: outside its claims it must refuse:\n  "
                          + "\n  ".join(failures))


def _a_claimed_dtype(caps):
    return "float32" if "float32" in caps.dtype else sorted(caps.dtype)[0]


def _widened(caps, name, value):
    import dataclasses
    if value:
        current = getattr(caps, name)
        return dataclasses.replace(caps, **{name: frozenset(current) | {value}})
    if name in ("mask", "initial_state"):
        return caps
    return dataclasses.replace(caps, **{name: True})
