"""The feature table (core/features.py): one declaration from which
Capabilities, required features, draw restrictions, call needs and capability
probes all follow, and whose names agree with the spec."""
from __future__ import annotations

import numpy as np
import pytest

from convlstm_conformance import features, oracle, tolerance
from convlstm_conformance.features import (BOOL, FEATURES, SET, Capabilities, required_features)
from convlstm_conformance.spec import load_cached
from convlstm_conformance.strategies import Chooser, Unsatisfiable, draw_config, make_case

SPEC = load_cached()


def everything() -> Capabilities:
    """A claim of every value the spec and the table know."""
    values = {"padding": {"valid", "same"}, "data_format": {"channels_last", "channels_first"},
              "activation": features.activations() | {None},
              "recurrent_activation": features.activations() | {None},
              "dtype": set(features.dtypes()), "device": {"cpu"},
              "kernel_parity": {"odd", "even"}}
    return Capabilities(**{f.name: (values[f.name] if f.kind == SET else True) for f in FEATURES})


def test_capabilities_round_trip_through_json():
    caps = everything().replace(mask=False, padding=frozenset({"same"}))
    assert Capabilities.from_json(caps.to_json()) == caps
    assert caps.to_json()["padding"] == ["same"] and caps.to_json()["mask"] is False


def test_unknown_or_mistyped_claims_are_refused():
    with pytest.raises(ValueError, match=r"unknown capability names: \['gradient'\]; known: "):
        Capabilities(gradient=True)
    with pytest.raises(ValueError, match="capability 'padding' must be a list"):
        Capabilities.from_json({"padding": "same"})
    with pytest.raises(ValueError, match="capability 'mask' must be true or false"):
        Capabilities.from_json({"mask": "yes"})


def test_defaults_are_those_of_the_table():
    caps = Capabilities()
    for f in FEATURES:
        want = frozenset(f.default) if f.kind == SET else bool(f.default)
        assert getattr(caps, f.name) == want, f.name


def test_every_feature_covers_spec_arguments():
    for f in FEATURES:
        unknown = [a for a in f.covers if a not in SPEC.arguments]
        assert not unknown, f"feature {f.name} covers {unknown}, which the spec does not have"
        if f.admits is not None:
            assert f.covers, f"feature {f.name} restricts draws but covers no argument"


def test_every_call_option_of_the_spec_has_a_feature_or_needs_none():
    """A clause's ``call:`` option that needs a capability must name one in the
    table; the options that need none are these, and only these."""
    options = {o for c in SPEC.clauses.values() for o in c.call}
    without = {o for o in options if features.feature_for_call(o) is None}
    assert without == {"training", "reset", "followup_state"}, without


def test_activation_and_dtype_names_are_the_spec_s():
    assert features.activations() == frozenset(SPEC.values("activation"))
    assert set(oracle.ACTIVATIONS) == features.activations(), (
        "the oracle must implement exactly the activations the spec documents")
    assert set(features.dtypes()) == set(SPEC.dtypes)
    for dtype in SPEC.dtypes:
        assert dtype in tolerance.UNIT_ROUNDOFF and dtype in tolerance.FORMAT_MAX, dtype
        assert features.compute_format(dtype) in features.formats()


@pytest.mark.parametrize("label, feature, value, probe",
                         list(features.probes(Capabilities(**{
                             f.name: (frozenset() if f.kind == SET else False)
                             for f in FEATURES}))),
                         ids=lambda v: v if isinstance(v, str) else None)
def test_each_probe_needs_its_feature_and_nothing_else(label, feature, value, probe):
    """Drawn inside every claim but one, a probe's case needs exactly that one."""
    full = everything()
    if feature.kind == SET:
        caps = full.replace(**{feature.name: getattr(full, feature.name) - {value}})
    else:
        caps = full.replace(**{feature.name: False})
    try:
        drawn = draw_config(Chooser(rng=np.random.default_rng(1)), SPEC, focus=probe.focus,
                            caps=features.widened(caps, feature, value))
    except Unsatisfiable as exc:
        pytest.fail(f"probe {label} cannot be drawn: {exc}")
    case = make_case(SPEC, drawn, 0, dtype=probe.dtype or "float32", **probe.options)
    assert caps.missing(required_features(case)) == [label]


def test_restrictions_are_the_conjunction_of_the_features_covering_an_argument():
    caps = Capabilities(kernel_parity=frozenset({"odd"}), non_square=False)
    admit = features.restrictions(caps)["kernel_size"]
    assert admit(3) and admit((1, 1))
    assert not admit((1, 3)), "non_square is not claimed"
    assert not admit(2), "even kernels are not claimed"
    assert features.restrictions(None) == {}


def test_feature_kinds_and_names_are_unique():
    names = [f.name for f in FEATURES]
    assert len(names) == len(set(names))
    assert {f.kind for f in FEATURES} == {SET, BOOL}
