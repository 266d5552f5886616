"""The ci profile's draws reach every piece of every activation, both ends of
the forget gate, both signs of the cell state, and long and short sequences
(issue targets measured by benchmarks/coverage.py, here as a gate).

A mutant that differs only where the draws never go survives the suite; these
checks fail when a change to the strategies or the scale knobs
(strategies.Scales) stops the ci profile from going there.
"""
from __future__ import annotations

import pytest

# benchmarks/coverage.py, by its package path: a bare ``import coverage``
# could be coverage.py's own package.
from benchmarks import coverage
from convlstm_conformance.features import activations
from convlstm_conformance.strategies import Scales


@pytest.fixture(scope="module")
def ci(tmp_path_factory):
    return coverage.measure(coverage.ci_cases(tmp_path_factory.mktemp("coverage")))


def test_every_activation_is_drawn_in_ci(ci):
    missing = sorted(a for a in activations() if a not in ci["activations"])
    assert not missing, f"activations the ci profile never draws: {missing}"


def test_every_piece_of_every_activation_is_reached_in_ci(ci):
    unreached = [f"{name} as {role}: {piece}"
                 for name, roles in ci["activations"].items()
                 for role, r in roles.items()
                 for piece, cases in r["cases_reaching"].items() if cases == 0]
    assert not unreached, ("pieces of an activation's definition no ci case reaches "
                           "(coverage.BREAKS): " + "; ".join(unreached))


def test_forget_gate_is_shut_and_wide_open_in_ci(ci):
    shares = ci["forget"]
    for piece in ("closed (|f| < 0.01)", "open (f > 0.99)"):
        assert shares.get(piece, 0.0) >= 0.01, (
            f"forget gate {piece}: {shares.get(piece, 0.0):.2%} of the ci elements, "
            f"under 1%: a forget bias off by 0.01 and a lost state both hide there")


def test_cell_state_takes_both_signs_in_ci(ci):
    both = ci["cell_cases"].get("both signs", 0)
    assert both >= ci["cases"] // 4, (
        f"only {both} of {ci['cases']} ci cases hold a cell state of both signs")


def test_short_and_long_sequences_are_drawn_in_ci(ci):
    lengths = set(ci["timesteps"])
    long = Scales().long_timesteps    # the documented default, whatever the knob says
    assert 1 in lengths and max(lengths) >= long, (
        f"ci draws sequence lengths {sorted(lengths)}; one step and {long} steps are both due")
