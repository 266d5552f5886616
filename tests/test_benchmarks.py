"""The case source of benchmarks/throughput.py draws what its README says."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import throughput  # noqa: E402


def _signature(case):
    return (repr(sorted(case.config.items())), case.inputs.shape, case.dtype)


def test_cases_stay_fuzzer_sized():
    source = throughput.CaseSource(seed=1)
    for _ in range(30):
        B, T = source.next().inputs.shape[:2]
        assert B <= throughput.LIMITS["batch"] and T <= throughput.LIMITS["timesteps"], (
            f"a throughput case of batch {B}, timesteps {T} exceeds {throughput.LIMITS}")


def test_data_per_config_repeats_the_configuration_with_fresh_data():
    source = throughput.CaseSource(seed=2, data_per_config=3)
    cases = [source.next() for _ in range(9)]
    for k in range(0, 9, 3):
        group = cases[k:k + 3]
        assert len({_signature(c) for c in group}) == 1, (
            f"cases {k}..{k + 2} should share configuration, shape and dtype")
        assert not np.array_equal(group[0].inputs, group[1].inputs), (
            "cases of one configuration must get fresh inputs")
        assert not np.array_equal(group[0].kernel, group[1].kernel), (
            "cases of one configuration must get fresh weights")
    assert len({_signature(cases[k]) for k in (0, 3, 6)}) > 1, (
        "after data_per_config cases a new configuration must be drawn")


def test_reference_breakdown_splits_the_time(capsys):
    """The split of benchmarks/README.md: convolutions and the rest add up."""
    import importlib.util
    import re
    if importlib.util.find_spec("torch") is None:
        import pytest
        pytest.skip("torch is not installed")
    import reference_breakdown
    assert reference_breakdown.main(["--size", "S", "--repeats", "1"]) == 0
    line = capsys.readouterr().out
    full, rest, conv = (float(v) for v in re.search(
        r"forward ([\d.]+) ms; without the convolutions ([\d.]+) ms.*convolutions ([\d.]+) ms",
        line).groups())
    assert 0 < rest < full and abs(full - rest - conv) < 0.2, line
