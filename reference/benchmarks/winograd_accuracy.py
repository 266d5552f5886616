#!/usr/bin/env python
"""How the reference's Winograd convolution's error compares with the
tolerance model's pre-activation bound, by channel count and kind of data.

    .venv/bin/python reference/benchmarks/winograd_accuracy.py

For each input-channel count and data kind it convolves with
``torch_plan.conv3x3_in_c`` (F(2x2, 3x3), float32) and prints the worst
element's error against a float64 convolution as a fraction of the bound
SAFETY * gamma_K * sum |w| |x| of core/tolerance.py (item 1), the
bound a direct convolution in any summation order meets.  Dense data is what
the strategies draw; the structured kinds show where Winograd's rounding,
which scales with products the direct convolution never forms, leaves that
bound behind.  The figures decide WINOGRAD_MIN_CHANNELS.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from convlstm_conformance.reference import torch_plan as tp  # noqa: E402


def _kinds(rng, x, w):
    """(name, inputs, weights) for each kind of data."""
    centre = np.zeros_like(w)
    centre[1, 1] = w[1, 1]
    corner = np.zeros_like(w)
    corner[0, 0] = w[0, 0]
    wide = x * 10.0 ** rng.uniform(-3, 3, x.shape)
    return [("dense uniform", x, w),
            ("95% zero inputs", x * (rng.random(x.shape) < 0.05), w),
            ("centre tap only", x, centre),
            ("corner tap only", x, corner),
            ("inputs over 1e-3..1e3", wide, w)]


def direct(xp, w):
    """The float64 'valid' convolution of the bordered input xp (B, H, W, K)
    by w (3, 3, K, N), and the same of their magnitudes (the M of the bound)."""
    import torch.nn.functional as tf
    x64, w64 = xp.double().permute(0, 3, 1, 2), w.double().permute(3, 2, 0, 1)
    return (tf.conv2d(x64, w64).permute(0, 2, 3, 1),
            tf.conv2d(x64.abs(), w64.abs()).permute(0, 2, 3, 1))


def bound_ratio(got, exact, magnitude, K: int) -> float:
    """The worst element's |got - exact| as a fraction of SAFETY * gamma_9K *
    magnitude (float32): at most 1 is inside the bound; an error where the
    bound is 0 is infinitely outside it."""
    import torch
    from convlstm_conformance.tolerance import SAFETY, gamma
    bound = SAFETY * gamma(9 * K, 2.0 ** -24) * magnitude
    err = (got.double() - exact).abs()
    ratio = torch.where(bound > 0, err / bound, torch.where(err > 0, np.inf, 0.0))
    return float(ratio.max())


def worst_ratio(lib, x: np.ndarray, w: np.ndarray) -> float:
    import torch
    import torch.nn.functional as tf
    xp = tf.pad(torch.from_numpy(x.astype(np.float32)), (0, 0, 1, 1, 1, 1)).contiguous()
    w32 = torch.from_numpy(w.astype(np.float32))
    out = torch.empty(x.shape[:3] + (w.shape[3],), dtype=torch.float32)
    tp.conv3x3_in_c(lib, xp, tp.winograd_weights(w32), out)
    return bound_ratio(out, *direct(xp, w32), x.shape[3])


def main(argv=None) -> int:
    from convlstm_conformance.reference import native
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", default="1,2,8,40")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    lib = native.library()
    if lib is None:
        print(f"no native kernel: {native.status()}")
        return 1
    rng = np.random.default_rng(args.seed)
    print("worst |error| / bound (at most 1 is inside the tolerance model), "
          "B=2, 16x16, 8 output channels")
    for K in (int(k) for k in args.channels.split(",")):
        x = rng.uniform(-1, 1, (2, 16, 16, K))
        w = rng.uniform(-1, 1, (3, 3, K, 8))
        for name, xs, ws in _kinds(rng, x, w):
            print(f"  K={K:3d}  {name:24s} {worst_ratio(lib, xs, ws):.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
