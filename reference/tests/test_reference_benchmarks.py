"""The reference's own benchmarks (reference/benchmarks) report what their
README figures are read from."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from convlstm_conformance.reference import torch_plan as tp  # noqa: E402
# The native kernels' fixture: skips without a C compiler, fails if one is
# present but the kernels do not build.
from reference.tests.test_native_kernel import lib  # noqa: E402, F401


def test_reference_breakdown_splits_the_time(capsys):
    """The split of benchmarks/README.md: convolutions and the rest add up."""
    pytest.importorskip("torch")
    import reference_breakdown
    assert reference_breakdown.main(["--size", "S", "--repeats", "1"]) == 0
    line = capsys.readouterr().out
    full, rest, conv = (float(v) for v in re.search(
        r"forward ([\d.]+) ms; without the convolutions ([\d.]+) ms.*convolutions ([\d.]+) ms",
        line).groups())
    assert 0 < rest < full and abs(full - rest - conv) < 0.2, line
    # The gate arithmetic and the floor it implies are reported beside the split.
    gate, sigmoid, five = (float(v) for v in re.search(
        r"gate arithmetic alone: ([\d.]+) ns.*sigmoid ([\d.]+) ns, five per cell element "
        r"([\d.]+) ns", line).groups())
    assert gate > 0 and sigmoid > 0 and abs(five - 5 * sigmoid) < 0.05, line
    floor = float(re.search(r"floor by direct convolution: ([\d.]+) ms", line).group(1))
    work, gemm = (float(v) for v in re.search(
        r"([\d.]+) GFLOP = .*GEMM 2048\^3 here: ([\d.]+) GFLOP/s", line).groups())
    cells, cores = (float(v) for v in re.search(
        r"([\d.]+) M cell elements on (\d+) core", line).groups())
    # Rebuilt from the printed (rounded) figures: the convolutions' work at the
    # GEMM rate plus five sigmoids per cell element on every core.
    expected = 1e3 * work / gemm + cells * five / cores
    assert abs(floor - expected) < 0.01 * expected, (floor, expected, line)


def test_reference_breakdown_profiles_forward_backward(capsys):
    """The forward+backward profile: every part reported and seen, the GEMM
    parts with their rate, and torch's thread count restored afterwards."""
    pytest.importorskip("torch")
    import torch
    import reference_breakdown
    threads = torch.get_num_threads()
    assert reference_breakdown.main(["--mode", "fwdbwd", "--repeats", "1"]) == 0
    assert torch.get_num_threads() == threads, "the profile left torch on one thread"
    out = capsys.readouterr().out
    assert re.search(r"profiled [\d.]+ ms of CPU time", out), out
    parts = {name: float(ms) for name, ms in re.findall(r"^  ([^:]+): ([\d.]+) ms", out, re.M)}
    expected = set(reference_breakdown.PROFILE_PARTS.values()) | {"other"}
    assert set(parts) == expected, out
    for name in reference_breakdown.PROFILE_PARTS.values():
        # A renamed operator or Function would fall into "other" unnoticed.
        assert parts[name] > 0, f"{name}: the profile saw no such operator\n{out}"
    for name in reference_breakdown.GEMM_PARTS:
        assert re.search(re.escape(name) + r": [\d.]+ ms, [\d.]+ GFLOP = \d+ GFLOP/s", out), out


def test_winograd_accuracy_reports_each_kind(capsys, lib):
    """The figures behind WINOGRAD_MIN_CHANNELS: every kind of data at the
    channel counts asked for, and dense data inside the bound where the
    reference uses the path."""
    pytest.importorskip("torch")
    import winograd_accuracy
    K = tp.WINOGRAD_MIN_CHANNELS
    assert winograd_accuracy.main(["--channels", f"1,{K}"]) == 0
    rows = re.findall(r"K=\s*(\d+)\s+(.+?)\s+([\d.e+-]+|inf)$", capsys.readouterr().out, re.M)
    kinds = {name for _, name, _ in rows}
    assert len(kinds) == 5 and len(rows) == 10, rows
    dense = {int(k): float(v) for k, name, v in rows if name == "dense uniform"}
    assert dense[K] <= 1, f"dense data at {K} channels outside the bound: {dense}"
