#!/usr/bin/env python
"""The fast references on a CUDA GPU: speed against Flax on the same GPU.

    python benchmarks/cuda_speed.py [--sizes S,L] [--json out.json]

Run by ``scripts/gpu_check.sh`` on a machine with an NVIDIA GPU (CPU speed is
``bench_speed.py``'s).  Per size of ``bench_speed.SIZES`` and mode (forward,
forward+backward): ref-torch on cuda (TF32 off, as the reference runs), ref-jax
on the GPU, and Flax's ConvLSTMCell under ``nn.scan`` + ``jit`` as the
framework baseline; medians of timed calls after warm-up, each call
synchronised (torch.cuda.synchronize, block_until_ready).  Paths whose
framework is missing are reported as such.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_speed as bs  # noqa: E402

REPEATS = 20


def _median_s(call, repeats: int = REPEATS) -> float:
    for _ in range(3):
        call()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def ref_torch(size: dict, grads: bool):
    from convlstm_conformance.reference import config as rc, torch_infer, torch_plan, torch_train
    from convlstm_conformance.reference.torch_ref import import_torch
    torch = import_torch()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    arrays = bs.canonical_arrays(size)
    spec = rc.parse_config(dict(filters=size["F"], kernel_size=size["k"], padding=size["padding"]))
    geo = rc.geometry(spec, arrays["x"].shape)
    dev = torch.device("cuda")
    plan = torch_plan.make_plan(spec, geo, torch.float32, dev)
    t = {k: torch.from_numpy(v).to(dev) for k, v in arrays.items()}
    Ho, Wo = bs.out_hw(size)
    cot = torch.ones((size["B"], Ho, Wo, size["F"]), device=dev)

    def call():
        if grads:
            torch_train.forward_backward(plan, t["x"], t["kernel"], t["recurrent_kernel"],
                                         t["bias"], None, None, None, cot)
        else:
            with torch.no_grad():
                torch_infer.forward_infer(plan, t["x"], t["kernel"], t["recurrent_kernel"],
                                          t["bias"], None, None, None)
        torch.cuda.synchronize()
    return call


def ref_jax(size: dict, grads: bool):
    import jax
    import jax.numpy as jnp
    from convlstm_conformance.adapters.ref_jax import JaxReferenceAdapter
    from convlstm_conformance.reference import config as rc, jax_ref
    arrays = bs.canonical_arrays(size)
    spec = rc.parse_config(dict(filters=size["F"], kernel_size=size["k"], padding=size["padding"]))
    geo = rc.geometry(spec, arrays["x"].shape)
    ref = JaxReferenceAdapter("cuda")
    fn = ref.program(jax_ref.CallKey(spec, geo, "float32", False, False, False, False, grads),
                     optimized=True)
    dev = jax.devices("gpu")[0]
    a = [jax.device_put(jnp.asarray(arrays[n]), dev) for n in ("x", "kernel", "recurrent_kernel",
                                                              "bias")]
    Ho, Wo = bs.out_hw(size)
    cot = jax.device_put(jnp.ones((size["B"], Ho, Wo, size["F"]), jnp.float32), dev)
    if grads:
        return lambda: jax.block_until_ready(fn(*a, None, None, None, None, None, cot))
    return lambda: jax.block_until_ready(fn(*a, None, None, None, None, None))


def flax(size: dict, grads: bool):
    import jax
    jax.devices("gpu")          # raises where JAX sees no GPU
    return bs._setup("flax", size, "fwdbwd" if grads else "fwd")


PATHS = {"ref-torch": ref_torch, "ref-jax": ref_jax, "flax": flax}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="S,L")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    rows = []
    for size_name in args.sizes.split(","):
        size = bs.SIZES[size_name]
        for mode in ("fwd", "fwdbwd"):
            for name, make in PATHS.items():
                try:
                    call = make(size, mode == "fwdbwd")
                    seconds = _median_s(call)
                    rows.append({"size": size_name, "mode": mode, "path": name,
                                 "median_s": seconds,
                                 "gflops": bs.flops(size) * (3 if mode == "fwdbwd" else 1)
                                 / seconds / 1e9})
                except Exception as exc:     # a missing framework or GPU: say so, go on
                    rows.append({"size": size_name, "mode": mode, "path": name,
                                 "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
                r = rows[-1]
                print(f"{size_name:3s} {mode:6s} {name:10s} "
                      + (f"{r['median_s'] * 1e3:9.2f} ms  {r['gflops']:8.1f} GFLOP/s"
                         if "median_s" in r else r["error"]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0 if any("median_s" in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
