"""Strategy properties: valid draws satisfy every clause, invalid draws break
exactly the named one, by construction (rejection rate measured)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from convlstm_conformance.features import Capabilities, required_features
from convlstm_conformance.spec import load_cached
from convlstm_conformance.strategies import (BIG, Chooser, configs, draw_config, focus_for,
                                    make_case, rejection_rate)

SPEC = load_cached()
FORBIDDING = [c.id for c in SPEC.forbidding()]


# The construction itself, driven by Hypothesis with nothing filtered: these
# properties are what configs() and invalid_configs() promise.

@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_valid_draws_break_no_clause(data):
    drawn = draw_config(Chooser(draw=data.draw), SPEC)
    assert SPEC.violations(drawn.config, drawn.dims) == [], drawn


@pytest.mark.parametrize("clause_id", FORBIDDING)
def test_invalid_draws_break_exactly_their_clause(clause_id):
    clause = SPEC.clause(clause_id)

    @settings(max_examples=40, deadline=None)
    @given(data=st.data())
    def check(data):
        drawn = draw_config(Chooser(draw=data.draw), SPEC, breaking=clause)
        assert SPEC.violations(drawn.config, drawn.dims, drawn.input_rank,
                               drawn.probes) == [clause_id], drawn

    check()


def test_the_strategy_varies():
    """configs() as the suite draws it: many distinct configurations, every
    value the spec lists for drawing among them."""
    seen = []

    @settings(max_examples=300, deadline=None, derandomize=True, database=None)
    @given(drawn=configs(SPEC))
    def collect(drawn):
        seen.append(drawn)

    collect()
    keys = {d.key() for d in seen}
    assert len(keys) >= 150, f"only {len(keys)} distinct configurations in {len(seen)} draws"
    for arg in SPEC.arguments.values():
        if arg.draw is not None and arg.draw.values is not None:
            drawn = {repr(d.config.get(arg.name)) for d in seen}
            missing = {repr(v) for v in arg.draw.values} - drawn
            assert not missing, f"{arg.name}: configs() never drew {missing}"
    for dim in ("batch", "timesteps", "rows", "cols", "channels"):
        assert len({d.dims[dim] for d in seen}) >= 3, f"{dim} hardly varies"


def test_a_broken_construction_is_an_error_not_a_thinner_draw(monkeypatch):
    """A draw the construction promised valid but is not raises (no filter)."""
    from convlstm_conformance import strategies
    real = strategies.draw_config

    def filters_zero(*a, **k):
        drawn = real(*a, **k)
        drawn.config["filters"] = 0
        return drawn
    monkeypatch.setattr(strategies, "draw_config", filters_zero)

    @settings(max_examples=5, deadline=None, database=None)
    @given(drawn=configs(SPEC))
    def use(drawn):
        pass

    with pytest.raises(strategies.ConstructionError, match=r"breaks \['ARG-FILTERS'\]"):
        use()


def test_rejection_rate_is_zero_for_valid_draws():
    stats = rejection_rate(SPEC, n=1500, seed=11)
    assert stats.rate == 0.0, f"{stats.drawn - stats.kept} of {stats.drawn} valid draws rejected"
    assert rejection_rate(SPEC, n=300, seed=12, size=BIG).rate == 0.0


@pytest.mark.parametrize("clause_id", FORBIDDING)
def test_rejection_rate_is_zero_for_invalid_draws(clause_id):
    stats = rejection_rate(SPEC, n=300, seed=13, breaking=SPEC.clause(clause_id))
    assert stats.rate == 0.0, f"{clause_id}: {stats.drawn - stats.kept} of {stats.drawn} rejected"


def test_draws_cover_the_drawn_values():
    """Every value listed for drawing shows up: nothing is silently unreachable."""
    rng = np.random.default_rng(5)
    seen = {}
    for _ in range(600):
        d = draw_config(Chooser(rng=rng), SPEC)
        for k, v in d.config.items():
            seen.setdefault(k, set()).add(repr(v))
    for arg in SPEC.arguments.values():
        if arg.draw is not None and arg.draw.values is not None:
            missing = {repr(v) for v in arg.draw.values} - seen.get(arg.name, set())
            assert not missing, f"{arg.name}: never drew {missing}"


def test_capabilities_restrict_draws():
    caps = Capabilities(padding=frozenset({"same"}), data_format=frozenset({"channels_last"}),
                        activation=frozenset({"tanh"}), recurrent_activation=frozenset({"sigmoid"}),
                        strides=False, dilation=False, no_bias=False, go_backwards=False,
                        kernel_parity=frozenset({"odd"}), non_square=False)
    rng = np.random.default_rng(2)
    for k in range(300):
        drawn = draw_config(Chooser(rng=rng), SPEC, caps=caps)
        case = make_case(SPEC, drawn, k)
        assert caps.covers(case), (drawn.config, caps.missing(required_features(case)))


def test_focus_for_structure_clauses():
    focus = focus_for(SPEC, SPEC.clause("STRUCT-SEQUENCE-STATE"))
    assert focus == {"return_sequences": [True], "return_state": [True]}
    focus = focus_for(SPEC, SPEC.clause("SHAPE-SAME"))
    assert {p.lower() for p in focus["padding"]} == {"same"}


def test_big_draws_are_bigger():
    rng = np.random.default_rng(3)
    small = [draw_config(Chooser(rng=rng), SPEC).dims["rows"] for _ in range(200)]
    big = [draw_config(Chooser(rng=rng), SPEC, size=BIG).dims["rows"] for _ in range(200)]
    assert max(big) > max(small)


def test_arrays_are_exactly_representable_in_the_case_dtype():
    rng = np.random.default_rng(4)
    drawn = draw_config(Chooser(rng=rng), SPEC)
    for dtype in ("float16", "float32", "bfloat16"):
        case = make_case(SPEC, drawn, 0, dtype=dtype)
        from convlstm_conformance.strategies import round_to
        for name, arr in case.arrays().items():
            if arr.dtype.kind == "f":
                np.testing.assert_array_equal(round_to(arr, dtype), arr, err_msg=f"{name} {dtype}")


# The scale knobs (strategies.Scales): read from the environment, refused
# when they are not positive numbers, and honoured by make_case.

@pytest.fixture
def knobs(monkeypatch):
    from convlstm_conformance import strategies

    def set_(**env):
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        strategies.scales.cache_clear()
        return strategies.scales()
    yield set_
    monkeypatch.undo()
    strategies.scales.cache_clear()


def test_scale_knobs_are_read_from_the_environment(knobs):
    s = knobs(CONVLSTM_WEIGHT_SCALES="0.25,3", CONVLSTM_INPUT_SCALE="2",
              CONVLSTM_BOUNDARY_SCALE="5", CONVLSTM_LONG_TIMESTEPS="9")
    assert (s.weights, s.inputs, s.boundary_weights, s.long_timesteps) == ((0.25, 3.0), 2.0, 5.0, 9)


@pytest.mark.parametrize("name,value", [("CONVLSTM_WEIGHT_SCALES", "0.5,0"),
                                        ("CONVLSTM_WEIGHT_SCALES", "big"),
                                        ("CONVLSTM_INPUT_SCALE", "1,2"),
                                        ("CONVLSTM_BOUNDARY_SCALE", "nan"),
                                        ("CONVLSTM_LONG_TIMESTEPS", "-3")])
def test_a_bad_scale_knob_is_refused_naming_it(knobs, name, value):
    from convlstm_conformance.strategies import ScaleError
    with pytest.raises(ScaleError, match=name):
        knobs(**{name: value})


def test_input_scale_sets_the_amplitude_of_inputs_and_states(knobs):
    knobs(CONVLSTM_INPUT_SCALE="3")
    drawn = draw_config(Chooser(rng=np.random.default_rng(4)), SPEC)
    case = make_case(SPEC, drawn, 4, initial_state=True, dtype="float64")
    for name, a in (("inputs", case.inputs), ("initial h", case.initial_state[0])):
        assert 1.0 < np.abs(a).max() <= 3.0, f"{name} span {np.abs(a).max():.3g}, not (1, 3]"


def test_a_bad_scale_knob_stops_the_suite_with_a_usage_error(tmp_path):
    import os
    import subprocess
    import sys
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "pytest", "conformance/test_numerics.py", "-q",
                           "-p", "no:cacheprovider", "--adapters", "oracle",
                           "--results-dir", str(tmp_path)], cwd=root, capture_output=True,
                          text=True, timeout=300,
                          env=dict(os.environ, CONVLSTM_INPUT_SCALE="-1"))
    assert proc.returncode == 4, proc.stdout[-2000:]
    assert "CONVLSTM_INPUT_SCALE='-1'" in proc.stderr, proc.stderr[-2000:]
