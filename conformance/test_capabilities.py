"""Capability claims checked the other way: outside its claims an adapter must
refuse cleanly, and a feature that works without being claimed is reported.

For every feature an adapter does not claim, a case is drawn that needs that
feature and nothing else outside the claims (the feature table's probes,
``convlstm_conformance/features.py``).  Acceptable answers:
* ``refused`` by the adapter, or ``raised`` by the library (it knows it cannot);
* ``ok`` with results the oracle accepts: the feature works; the test passes
  and its record says the claim could be widened.
Anything else fails: results the oracle rejects (silently wrong instead of
refusing), a crash, a hang, an adapter error.
"""
import numpy as np
import pytest

from convlstm_conformance import features, harness, records
from convlstm_conformance.model import REFUSED, RAISED, OK
from convlstm_conformance.strategies import Chooser, Unsatisfiable, draw_config, make_case

CLAUSE = "CAPABILITY-CLAIMS"


def test_outside_claims_refuses_or_works(adapter_name, adapters, spec, record):
    adapter = adapters.get(adapter_name)
    caps = adapter.capabilities()
    record["clause"] = CLAUSE
    probes = list(features.probes(caps))
    if not probes:
        pytest.skip(f"{adapter_name} claims every probed feature")
    works, refused, failures = [], [], []
    for label, feature, value, probe in probes:
        # Draw inside the claims except for the probed feature.
        probe_caps = features.widened(caps, feature, value)
        try:
            drawn = draw_config(Chooser(rng=np.random.default_rng(len(label))), spec,
                                focus=probe.focus, caps=probe_caps, sizes={"timesteps": 2})
        except Unsatisfiable as exc:
            # Claims that leave nothing to draw cannot be checked either way.
            failures.append(f"{label}: no case can be drawn inside the claims plus this "
                            f"feature ({exc}): the claims themselves are incoherent")
            continue
        case = make_case(spec, drawn, 0, dtype=probe.dtype or _a_claimed_dtype(caps),
                         **probe.options)
        gaps = caps.missing(features.required_features(case))
        outcome = adapter.run(case)
        if outcome.status in (REFUSED, RAISED):
            refused.append(f"{label}: {outcome.status}")
        elif outcome.status == OK:
            verdict = harness.judge_for(adapter)(case, outcome)
            if verdict.unjudged:
                records.note_not_judged(record, f"{label}: {verdict.unjudged}")
            elif verdict.passed:
                works.append(label)
            else:
                failures.append(f"{label} (case needs {gaps}): returned results the oracle "
                                f"rejects instead of refusing:\n    "
                                + verdict.describe().replace("\n", "\n    "))
        else:
            failures.append(f"{label}: {outcome.summary()}")
    record["unclaimed_but_working"] = works
    record["refused"] = refused
    record["examples"] = len(works) + len(refused)
    if works and not failures:    # a failure's message is the failure
        record["message"] = (f"{adapter_name} does not claim {', '.join(works)}, but cases needing "
                             f"them match the oracle: the claims could be widened")
    assert not failures, (f"[{CLAUSE}] {adapter_name}: outside its claims it must refuse:\n  "
                          + "\n  ".join(failures))


def _a_claimed_dtype(caps):
    return "float32" if "float32" in caps.dtype else sorted(caps.dtype)[0]
