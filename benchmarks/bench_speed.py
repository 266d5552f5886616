#!/usr/bin/env python
"""Speed of the fast references against the frameworks' own ConvLSTM2D.

One command runs the whole matrix; every (path, size, mode) runs in a fresh
subprocess, so frameworks never share a process (Keras 3 fixes its backend at
import) and the peak-memory figure of one path is not inflated by another:

    .venv/bin/python benchmarks/bench_speed.py            # full run (tens of minutes)
    .venv/bin/python benchmarks/bench_speed.py --quick    # smoke run (a few minutes)

Paths: the references (``ref-torch``, ``ref-jax``, and for the fuzzer size the
adapters' end-to-end ``run()``), Keras 3 on TensorFlow (tf.function, with and
without XLA), on JAX (jit of ``stateless_call``) and on torch (eager), tf-keras
(tf.function), and Flax linen's ConvLSTMCell under ``nn.scan`` + ``jit``.

Modes: ``fwd`` is inference (no gradient tape); ``fwdbwd`` is forward plus the
gradients of sum(output) with respect to the input and every weight.

Per measurement: the first ("cold") call, which includes tracing and
compilation, is reported separately; then timed repeats after a warm-up, with
median, interquartile range and min/max; GFLOP/s from the layer's multiply-add
count (forward+backward counted as 3x forward); the peak resident-memory growth
of the measuring process from just before its first call (Linux VmHWM, reset
through /proc/self/clear_refs); and the ratio to the fastest framework path of
the same size and mode in the same run.  The machine's float32 GEMM rate
(torch and NumPy, 2048^3) is measured in the same run as the ceiling.

Machines shared with other work are noisy: compare ratios measured side by
side, and look at the load average recorded with every measurement.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from convlstm_conformance.reference import (
    config as rc, torch_infer as ti, torch_plan as tp, torch_train as tt)

REPO = Path(__file__).resolve().parent.parent

SIZES = {
    "S": dict(B=8, T=10, H=64, W=64, C=8, F=32, k=3, padding="same"),
    "L": dict(B=16, T=16, H=64, W=64, C=32, F=64, k=3, padding="same"),
    "fuzzer": dict(B=2, T=4, H=12, W=12, C=3, F=4, k=3, padding="valid"),
}
QUICK_SIZES = {
    "S-quick": dict(B=2, T=4, H=32, W=32, C=8, F=16, k=3, padding="same"),
    "fuzzer": SIZES["fuzzer"],
}
REFERENCE_PATHS = ("ref-torch", "ref-jax")
ADAPTER_PATHS = ("ref-torch adapter.run", "ref-jax adapter.run")
FRAMEWORK_PATHS = ("keras3-tf", "keras3-tf-xla", "keras3-jax", "keras3-torch", "tf-keras",
                   "flax")
PATHS = REFERENCE_PATHS + ADAPTER_PATHS + FRAMEWORK_PATHS
MODES = ("fwd", "fwdbwd")
# Targets: reference median / fastest framework median, and memory.
TARGETS = {("S", "fwd"): 0.67, ("fuzzer", "fwd"): 0.2, ("S", "fwdbwd"): 0.5}


def flops(size: dict) -> float:
    """Multiply-adds x2 of one forward pass (input and recurrent convolutions)."""
    Ho, Wo = out_hw(size)
    return (2.0 * size["B"] * size["T"] * Ho * Wo * 4 * size["F"] * size["k"] ** 2
            * (size["C"] + size["F"]))


def out_hw(size: dict) -> tuple[int, int]:
    if size["padding"] == "same":
        return size["H"], size["W"]
    return size["H"] - size["k"] + 1, size["W"] - size["k"] + 1


def canonical_arrays(size: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs and Keras-layout weights, float32, the same for every path."""
    rng = np.random.default_rng(seed)
    B, T, H, W, C, F, k = (size[n] for n in "BTHWCFk")
    scale_k = 1.0 / np.sqrt(k * k * C)
    scale_u = 1.0 / np.sqrt(k * k * F)
    return {
        "x": rng.standard_normal((B, T, H, W, C)).astype(np.float32),
        "kernel": (rng.standard_normal((k, k, C, 4 * F)) * scale_k).astype(np.float32),
        "recurrent_kernel": (rng.standard_normal((k, k, F, 4 * F)) * scale_u).astype(np.float32),
        "bias": (rng.standard_normal(4 * F) * 0.1).astype(np.float32),
    }


# ==========================================================================
# Worker side: one path, one size, one mode, in this process.


def _setup(path: str, size: dict, mode: str):
    """Build the path; return a zero-argument callable doing one synchronised call."""
    arrays = canonical_arrays(size)
    config = dict(filters=size["F"], kernel_size=size["k"], padding=size["padding"])
    grads = mode == "fwdbwd"

    if path == "ref-torch":
        import torch
        spec = rc.parse_config(config)
        geo = rc.geometry(spec, arrays["x"].shape)
        plan = tp.make_plan(spec, geo, torch.float32, torch.device("cpu"))
        t = {k: torch.from_numpy(v) for k, v in arrays.items()}
        if not grads:
            def call():
                with torch.no_grad():
                    ti.forward_infer(plan, t["x"], t["kernel"], t["recurrent_kernel"],
                                     t["bias"], None, None, None)
            return call
        Ho, Wo = out_hw(size)
        cot = torch.ones((size["B"], Ho, Wo, size["F"]))

        def call():
            tt.forward_backward(plan, t["x"], t["kernel"], t["recurrent_kernel"], t["bias"],
                                None, None, None, cot)
        return call

    if path == "ref-jax":
        import jax
        import jax.numpy as jnp
        from convlstm_conformance.adapters.ref_jax import JaxReferenceAdapter
        from convlstm_conformance.reference import jax_ref as rj
        spec = rc.parse_config(config)
        geo = rc.geometry(spec, arrays["x"].shape)
        ref = JaxReferenceAdapter("cpu")
        fn = ref.program(rj.CallKey(spec, geo, "float32", False, False, False, False, grads),
                         optimized=True)
        a = [jnp.asarray(arrays[n]) for n in ("x", "kernel", "recurrent_kernel", "bias")]
        if not grads:
            return lambda: fn(*a, None, None, None, None, None)[0].block_until_ready()
        Ho, Wo = out_hw(size)
        cot = jnp.ones((size["B"], Ho, Wo, size["F"]), jnp.float32)
        return lambda: jax.block_until_ready(fn(*a, None, None, None, None, None, cot))

    if path in ADAPTER_PATHS:
        from convlstm_conformance.model import Case
        if path.startswith("ref-torch"):
            from convlstm_conformance.adapters.ref_torch import TorchReferenceAdapter as Ref
        else:
            from convlstm_conformance.adapters.ref_jax import JaxReferenceAdapter as Ref
        ref = Ref("cpu")
        case = Case(config=config, inputs=arrays["x"].astype(np.float64),
                    kernel=arrays["kernel"].astype(np.float64),
                    recurrent_kernel=arrays["recurrent_kernel"].astype(np.float64),
                    bias=arrays["bias"].astype(np.float64), dtype="float32")
        if grads:
            Ho, Wo = out_hw(size)
            case.cotangent = np.ones((size["B"], Ho, Wo, size["F"]))

        def call():
            out = ref.run(case)
            if out.status != "ok":
                raise RuntimeError(out.summary())
        return call

    if path in ("keras3-tf", "keras3-tf-xla", "tf-keras"):
        import tensorflow as tf
        if path == "tf-keras":
            import tf_keras as keras
        else:
            import keras
        layer = keras.layers.ConvLSTM2D(size["F"], size["k"], padding=size["padding"])
        layer.build(arrays["x"].shape)
        layer.set_weights([arrays["kernel"], arrays["recurrent_kernel"], arrays["bias"]])
        x = tf.constant(arrays["x"])
        xla = path == "keras3-tf-xla"
        if not grads:
            f = tf.function(lambda x: layer(x), jit_compile=xla)
            return lambda: f(x).numpy()

        def fb(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(layer(x))
            return tape.gradient(loss, [x] + list(layer.trainable_variables))
        f = tf.function(fb, jit_compile=xla)
        return lambda: [g.numpy() for g in f(x)]

    if path == "keras3-jax":
        import jax
        import keras
        layer = keras.layers.ConvLSTM2D(size["F"], size["k"], padding=size["padding"])
        layer.build(arrays["x"].shape)
        layer.set_weights([arrays["kernel"], arrays["recurrent_kernel"], arrays["bias"]])
        tv = [v.value for v in layer.trainable_variables]
        ntv = [v.value for v in layer.non_trainable_variables]
        x = jax.numpy.asarray(arrays["x"])
        if not grads:
            f = jax.jit(lambda tv, x: layer.stateless_call(tv, ntv, x)[0])
            return lambda: f(tv, x).block_until_ready()
        g = jax.jit(jax.grad(lambda tv, x: layer.stateless_call(tv, ntv, x)[0].sum(),
                             argnums=(0, 1)))
        return lambda: jax.block_until_ready(g(tv, x))

    if path == "keras3-torch":
        import keras
        import torch
        layer = keras.layers.ConvLSTM2D(size["F"], size["k"], padding=size["padding"])
        layer.build(arrays["x"].shape)
        layer.set_weights([arrays["kernel"], arrays["recurrent_kernel"], arrays["bias"]])
        x = torch.from_numpy(arrays["x"])
        if not grads:
            def call():
                with torch.no_grad():
                    layer(x)
            return call
        xg = x.clone().requires_grad_(True)
        params = [v.value for v in layer.trainable_variables]

        def call():
            torch.autograd.grad(layer(xg).sum(), [xg] + params)
        return call

    if path == "flax":
        import flax.linen as nn
        import jax
        import jax.numpy as jnp
        # ConvLSTMCell applies one padding to both of its convolutions, so a
        # 'valid' layer is not expressible: it runs 'same' (slightly more work).
        Ho, Wo = size["H"], size["W"]
        B, F = size["B"], size["F"]

        class Layer(nn.Module):
            @nn.compact
            def __call__(self, x):
                cell = nn.scan(nn.ConvLSTMCell, variable_broadcast="params",
                               split_rngs={"params": False}, in_axes=1, out_axes=1)(
                    features=F, kernel_size=(size["k"], size["k"]), padding="SAME")
                carry = (jnp.zeros((B, Ho, Wo, F)), jnp.zeros((B, Ho, Wo, F)))
                (c, h), _ = cell(carry, x)
                return h

        x = jnp.asarray(arrays["x"])
        model = Layer()
        params = model.init(jax.random.PRNGKey(0), x)
        if not grads:
            f = jax.jit(model.apply)
            return lambda: f(params, x).block_until_ready()
        g = jax.jit(jax.grad(lambda p, x: model.apply(p, x).sum(), argnums=(0, 1)))
        return lambda: jax.block_until_ready(g(params, x))

    raise SystemExit(f"unknown path {path!r}")


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _import_frameworks(path: str) -> None:
    """Import what ``path`` needs, so the memory baseline excludes the imports."""
    import importlib
    if path.startswith("ref-torch"):
        # The reference's own import: torch with OpenMP's passive wait policy.
        from convlstm_conformance.reference.torch_ref import import_torch
        import_torch()
    mods = {"ref-torch": ["convlstm_conformance.reference.torch_ref", "torch"],
            "ref-jax": ["convlstm_conformance.reference.jax_ref", "jax"],
            "ref-torch adapter.run": ["convlstm_conformance.adapters.ref_torch", "torch"],
            "ref-jax adapter.run": ["convlstm_conformance.adapters.ref_jax", "jax"],
            "keras3-tf": ["tensorflow", "keras"], "keras3-tf-xla": ["tensorflow", "keras"],
            "keras3-jax": ["jax", "keras"], "keras3-torch": ["torch", "keras"],
            "tf-keras": ["tensorflow", "tf_keras"], "flax": ["jax", "flax.linen"]}[path]
    for m in mods:
        importlib.import_module(m)


def worker(path: str, size_name: str, size: dict, mode: str, repeats: int,
           budget_s: float) -> dict:
    # Peak memory counts everything after the imports: building the layer,
    # the inputs, tracing and compiling, and the calls themselves.
    _import_frameworks(path)
    rss0 = _status_kb("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as fh:   # restart the peak (VmHWM) here
            fh.write("5")
        hwm_reset = True
    except OSError:
        hwm_reset = False
    call = _setup(path, size, mode)
    t0 = time.perf_counter()
    call()
    cold = time.perf_counter() - t0
    # Calls shorter than 20 ms are timed in batches (one sample = batch mean).
    t0 = time.perf_counter()
    call()
    warm = time.perf_counter() - t0
    inner = max(1, int(0.02 / max(warm, 1e-6)))
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < repeats:
        t0 = time.perf_counter()
        for _ in range(inner):
            call()
        samples.append((time.perf_counter() - t0) / inner)
        if time.perf_counter() - start > budget_s and len(samples) >= 3:
            break
        if warm > budget_s and samples:   # one warm sample is all a slow path gets
            break
    peak_kb = _status_kb("VmHWM")
    import resource
    if not hwm_reset:
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"samples": samples, "cold_s": cold, "inner": inner,
           "peak_mb": max(peak_kb - rss0, 0) / 1024.0, "hwm_reset": hwm_reset}
    if path == "ref-torch" and warm < 0.005:
        out["aten_ops"] = _count_ops(call)
    return out


def _count_ops(call) -> int:
    """Operator calls of one call: with the per-call dispatch cost, a floor."""
    from torch.profiler import profile
    with profile() as prof:
        call()
    # Top-level operators only: nested ones run inside their parent's call.
    events = [e for e in prof.events() if e.cpu_parent is None and e.name.startswith("aten::")]
    return len(events)


def gemm_worker() -> dict:
    import torch
    n = 2048
    out = {}
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    an, bn = a.numpy(), b.numpy()
    for name, f in (("torch", lambda: a @ b), ("numpy", lambda: an @ bn)):
        for _ in range(2):
            f()
        ts = []
        for _ in range(9):
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
        out[name] = 2.0 * n ** 3 / float(np.median(ts)) / 1e9
        out[name + "_best"] = 2.0 * n ** 3 / min(ts) / 1e9
    out["torch_threads"] = torch.get_num_threads()
    # Dispatch floors: one tiny eager torch operator, one trivial jitted call.
    a, b2, c = torch.ones(16), torch.ones(16), torch.empty(16)
    torch.set_num_threads(1)
    out["torch_op_us"] = _per_call_us(lambda: torch.add(a, b2, out=c))
    import jax
    import jax.numpy as jnp
    f = jax.jit(lambda x: x + 1.0)
    x = jnp.ones(16)
    out["jax_jit_call_us"] = _per_call_us(lambda: f(x).block_until_ready())
    return out


def _per_call_us(f, n: int = 2000) -> float:
    for _ in range(200):
        f()
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            f()
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


# ==========================================================================
# Driver side


def _env_for(path: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    backend = {"keras3-tf": "tensorflow", "keras3-tf-xla": "tensorflow",
               "keras3-jax": "jax", "keras3-torch": "torch"}.get(path)
    if backend:
        env["KERAS_BACKEND"] = backend
    return env


def _load() -> float:
    try:
        return float(open("/proc/loadavg").read().split()[0])
    except OSError:
        return float("nan")


def run_one(args, path: str, size_name: str, size: dict, mode: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", path, size_name, mode,
           "--size-json", json.dumps(size), "--repeats", str(args.repeats[size_name]),
           "--budget", str(args.budget[size_name])]
    load0 = _load()
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=_env_for(path),
                              timeout=args.timeout, cwd=str(REPO))
    except subprocess.TimeoutExpired:
        return {"error": f"timeout (> {args.timeout:.0f} s)", "load": [load0, _load()]}
    res = {"load": [load0, _load()], "wall_s": time.time() - t0}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        res["error"] = f"exit {proc.returncode}: " + " | ".join(tail)[-300:]
        return res
    res.update(json.loads(lines[-1]))
    return res


def _gemm() -> dict:
    g = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--gemm-worker"],
                       capture_output=True, text=True, env=_env_for("ref-torch"), cwd=str(REPO))
    return json.loads(g.stdout.strip().splitlines()[-1])


def _maybe_skip(results, path, size_name, size, mode, args) -> dict | None:
    """Skip L for paths whose S measurement extrapolates past the timeout."""
    prior = results.get((path, "S", mode))
    if size_name != "L" or not prior or not prior.get("samples"):
        return None
    est = float(np.median(prior["samples"])) * flops(size) / flops(SIZES["S"])
    if est <= args.timeout / 3:
        return None
    # (XLA's CPU convolution backward takes a minute or more per S call.)
    return {"error": f"skipped: S took {np.median(prior['samples']):.0f} s per call, "
                     f"L extrapolates to ~{est:.0f} s", "load": [_load(), _load()]}


def _merge(prev: dict | None, res: dict) -> dict:
    """Pool the samples of several rounds of one (path, size, mode)."""
    if prev is None:
        out = dict(res)
        out["colds"] = [res["cold_s"]] if "cold_s" in res else []
        return out
    if "error" in res:
        return prev
    out = dict(prev)
    out["samples"] = prev["samples"] + res["samples"]
    out["colds"] = prev["colds"] + [res["cold_s"]]
    out["cold_s"] = float(np.median(out["colds"]))
    out["peak_mb"] = max(prev["peak_mb"], res["peak_mb"])
    out["load"] = prev["load"] + res["load"]
    out["inner"] = min(prev["inner"], res["inner"])
    return out


def summarise(res: dict, size: dict, mode: str) -> dict:
    s = np.asarray(res.get("samples") or [np.nan])
    med = float(np.median(s))
    q1, q3 = (float(v) for v in np.percentile(s, [25, 75]))
    fl = flops(size) * (3.0 if mode == "fwdbwd" else 1.0)
    return {"median_s": med, "q1_s": q1, "q3_s": q3, "min_s": float(s.min()),
            "max_s": float(s.max()), "n": int(len(res.get("samples") or [])),
            "gflops": fl / med / 1e9 if med > 0 else float("nan")}


def _fmt_t(t: float) -> str:
    if not np.isfinite(t):
        return "n/a"
    if t >= 1:
        return f"{t:.2f} s"
    if t >= 1e-3:
        return f"{t * 1e3:.1f} ms"
    return f"{t * 1e6:.0f} us"


def report(results: dict, sizes: dict, paths, modes, gemm: dict) -> str:
    ceiling = max(gemm.get("torch", 0), gemm.get("numpy", 0))
    lines = []
    verdicts = []
    for size_name, size in sizes.items():
        for mode in modes:
            rows = {p: results.get((p, size_name, mode)) for p in paths}
            rows = {p: r for p, r in rows.items() if r is not None}
            if not rows:
                continue
            stats = {p: summarise(r, size, mode) for p, r in rows.items() if "error" not in r}
            fw = {p: s for p, s in stats.items() if p in FRAMEWORK_PATHS}
            fastest = min(fw, key=lambda p: fw[p]["median_s"]) if fw else None
            best_t = fw[fastest]["median_s"] if fastest else float("nan")
            best_mem = rows[fastest]["peak_mb"] if fastest else float("nan")
            Ho, Wo = out_hw(size)
            lines.append(f"\n#### {size_name} {mode}: B={size['B']} T={size['T']} "
                         f"{size['H']}x{size['W']} C_in={size['C']} F={size['F']} "
                         f"k{size['k']} {size['padding']} float32, "
                         f"{flops(size) * (3 if mode == 'fwdbwd' else 1) / 1e9:.3g} GFLOP\n")
            lines.append("| path | median | IQR | min - max | n | GFLOP/s | % GEMM ceiling "
                         "| / fastest framework | peak MB | cold first call | load |")
            lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
            for p, r in rows.items():
                ld = r.get("load", [])
                load = f"{min(ld):.1f}-{max(ld):.1f}" if ld else ""
                if "error" in r:
                    lines.append(f"| {p} | {r['error']} | | | | | | | | | {load} |")
                    continue
                s = stats[p]
                ratio = s["median_s"] / best_t if fastest else float("nan")
                mark = " (fastest)" if p == fastest else ""
                note = " *" if p == "flax" and size["padding"] != "same" else ""
                lines.append(
                    f"| {p}{note}{mark} | {_fmt_t(s['median_s'])} | {_fmt_t(s['q1_s'])} - "
                    f"{_fmt_t(s['q3_s'])} | {_fmt_t(s['min_s'])} - {_fmt_t(s['max_s'])} | "
                    f"{s['n']}x{r['inner']} | {s['gflops']:.1f} | "
                    f"{100 * s['gflops'] / ceiling:.0f}% | {ratio:.3g} | {r['peak_mb']:.0f} | "
                    f"{_fmt_t(r['cold_s'])} | {load} |")
            ops = rows.get("ref-torch", {}).get("aten_ops")
            if ops and fastest and "torch_op_us" in gemm:
                floor = ops * gemm["torch_op_us"] * 1e-6
                lines.append(f"\nDispatch floor of ref-torch here: {ops} operator calls x "
                             f"{gemm['torch_op_us']:.1f} us (one tiny eager torch operator) = "
                             f"{_fmt_t(floor)}, {floor / best_t:.2f}x the fastest framework "
                             f"path; one trivial jitted JAX call costs "
                             f"{gemm['jax_jit_call_us']:.0f} us.")
            refs = {p: stats[p] for p in REFERENCE_PATHS if p in stats}
            if fastest and refs:
                best_ref = min(refs, key=lambda p: refs[p]["median_s"])
                ratio = refs[best_ref]["median_s"] / best_t
                base = size_name.split("-")[0]
                target = TARGETS.get((base, mode))
                mem = rows[best_ref]["peak_mb"]
                if target is not None:
                    verdicts.append(
                        f"- {size_name} {mode}: best reference {best_ref} at {ratio:.2f}x the "
                        f"fastest framework path ({fastest}); target <= {target}: "
                        f"{'met' if ratio <= target else 'NOT met'}.  Peak memory {mem:.0f} MB "
                        f"vs {best_mem:.0f} MB: {'met' if mem <= best_mem else 'NOT met'}.")
    if any(s.get("padding") != "same" for s in sizes.values()) and "flax" in paths:
        lines.append("\n\\* Flax's ConvLSTMCell pads both convolutions alike, so a 'valid' "
                     "layer is not expressible; it runs 'same' (a little more work).")
    return "\n".join(lines), verdicts


def machine_info() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count()}
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for mod in ("torch", "jax", "tensorflow", "keras", "tf_keras", "flax", "numpy"):
        try:
            from importlib.metadata import version
            versions[mod] = version(mod.replace("_", "-") if mod == "tf_keras" else mod)
        except Exception:
            pass
    info["versions"] = versions
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    ap.add_argument("--sizes", default=None, help="comma-separated subset of sizes")
    ap.add_argument("--paths", default=None, help="comma-separated subset of paths")
    ap.add_argument("--modes", default="fwd,fwdbwd")
    ap.add_argument("--timeout", type=float, default=None, help="per subprocess, seconds")
    ap.add_argument("--rounds", type=int, default=None,
                    help="interleaved rounds (default 3, --quick 1)")
    ap.add_argument("--json", default=None, help="write raw results here")
    ap.add_argument("--markdown", default=None, help="write the report here")
    ap.add_argument("--worker", nargs=3, metavar=("PATH", "SIZE", "MODE"), help=argparse.SUPPRESS)
    ap.add_argument("--gemm-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--size-json", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--repeats", type=int, default=9, help=argparse.SUPPRESS)
    ap.add_argument("--budget", type=float, default=30.0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.gemm_worker:
        print(json.dumps(gemm_worker()))
        return 0
    if args.worker:
        sys.path.insert(0, str(REPO))
        path, size_name, mode = args.worker
        print(json.dumps(worker(path, size_name, json.loads(args.size_json), mode,
                                args.repeats, args.budget)))
        return 0

    sizes = dict(QUICK_SIZES if args.quick else SIZES)
    if args.sizes:
        allsizes = {**SIZES, **QUICK_SIZES}
        sizes = {n: allsizes[n] for n in args.sizes.split(",")}
    paths = tuple(args.paths.split(",")) if args.paths else PATHS
    modes = tuple(args.modes.split(","))
    args.timeout = args.timeout or (180.0 if args.quick else 600.0)
    args.rounds = args.rounds or (1 if args.quick else 3)
    # L's calls take seconds to minutes: one round of it already costs most
    # of the run's time.
    args.size_rounds = {"L": 1}
    total = {n: (7 if args.quick else {"L": 5}.get(n, 12)) for n in sizes}
    args.repeats = {n: max(2, -(-total[n] // args.size_rounds.get(n, args.rounds)))
                    for n in sizes}
    args.budget = {n: (5.0 if args.quick else {"L": 90.0, "S": 40.0}.get(n, 15.0))
                   for n in sizes}

    started = datetime.now(timezone.utc)
    info = machine_info()
    print(f"# bench_speed {started:%Y-%m-%d %H:%M} UTC on {info.get('cpu')} "
          f"({info['cpus']} CPUs), load {_load():.1f}", flush=True)
    gemms = [_gemm()]
    gemm = gemms[0]
    print(f"float32 GEMM 2048^3: torch {gemm['torch']:.0f} GFLOP/s (best "
          f"{gemm['torch_best']:.0f}), numpy {gemm['numpy']:.0f} GFLOP/s (best "
          f"{gemm['numpy_best']:.0f}); one eager torch op {gemm['torch_op_us']:.1f} us, "
          f"one trivial jit call {gemm['jax_jit_call_us']:.0f} us", flush=True)

    # Rounds: every round runs every path once per size and mode, in
    # alternating order, so slow drifts of the machine's load hit all paths
    # alike; samples of all rounds are pooled.  A path slower than the budget
    # per call is measured in the first round only.
    results: dict = {}
    for rnd in range(args.rounds):
        if rnd:
            gemms.append(_gemm())
        for size_name, size in sizes.items():
            for mode in modes:
                order = paths if rnd % 2 == 0 else tuple(reversed(paths))
                for path in order:
                    if path in ADAPTER_PATHS and size_name != "fuzzer":
                        continue   # end-to-end adapter cost matters for fuzzer-sized cases
                    if rnd >= args.size_rounds.get(size_name, args.rounds):
                        continue
                    key = (path, size_name, mode)
                    prev = results.get(key)
                    if prev is not None and ("error" in prev or np.median(
                            prev["samples"]) > args.budget[size_name] / 4):
                        continue
                    res = _maybe_skip(results, path, size_name, size, mode, args)
                    if res is None:
                        res = run_one(args, path, size_name, size, mode)
                    results[key] = _merge(prev, res)
                    if "error" in res:
                        msg = res["error"]
                    else:
                        st = summarise(res, size, mode)
                        msg = (f"median {_fmt_t(st['median_s'])} (n={st['n']}), cold "
                               f"{_fmt_t(res['cold_s'])}, peak {res['peak_mb']:.0f} MB")
                    print(f"  r{rnd} {size_name:8s} {mode:7s} {path:22s} {msg}", flush=True)
    gemm = {k: float(np.median([g[k] for g in gemms])) for k in gemms[0]}
    gemm["rounds"] = gemms

    text, verdicts = report(results, sizes, paths, modes, gemm)
    finished = datetime.now(timezone.utc)
    header = (f"Run {started:%Y-%m-%d %H:%M}-{finished:%H:%M} UTC ({args.rounds} interleaved "
              f"round(s)), {info.get('cpu')}, "
              f"{info['cpus']} CPUs, {info['platform']}; "
              + ", ".join(f"{k} {v}" for k, v in info["versions"].items())
              + f".\nfloat32 GEMM ceiling (2048^3, median): torch {gemm['torch']:.0f} "
              f"GFLOP/s, numpy {gemm['numpy']:.0f} GFLOP/s.  Dispatch: one tiny eager torch "
              f"operator {gemm['torch_op_us']:.1f} us, one trivial jitted JAX call "
              f"{gemm['jax_jit_call_us']:.0f} us.\n")
    out = header + text + "\n\n" + "\n".join(verdicts) + "\n"
    print(out)
    if args.markdown:
        Path(args.markdown).write_text(out)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"machine": info, "gemm": gemm, "started": started.isoformat(),
             "results": [{"path": p, "size": s, "mode": m, **r}
                         for (p, s, m), r in results.items()]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
