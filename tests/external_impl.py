#!/usr/bin/env python3
"""A third-party ConvLSTM2D speaking the worker protocol, standalone.

It imports nothing from this project: only the standard library and NumPy,
as an implementation in another language would use only its own npz and JSON
readers.  It implements the float32 forward pass for valid/same padding,
stride 1, no dilation, odd kernels, tanh/sigmoid, channels_last,
return_sequences/return_state and go_backwards, claims exactly that, and
refuses every case that needs more (``refusal``): a correct starting point.
``--wrong-forget-bias`` makes it add 0.01 to the forget-gate bias;
``--no-refusals`` makes it compute every case, claimed or not (what the
suite's CAPABILITY-CLAIMS check exists to catch).
"""
import json
import sys

import numpy as np

CAPABILITIES = {
    "padding": ["same", "valid"], "data_format": ["channels_last"],
    "activation": ["tanh"], "recurrent_activation": ["sigmoid"], "dtype": ["float32"],
    "device": ["cpu"], "kernel_parity": ["odd"], "strides": False, "dilation": False,
    "no_bias": True, "return_state": True, "return_sequences": True, "non_square": True,
    "go_backwards": True,
}


def pair(value):
    return tuple(value) if isinstance(value, (list, tuple)) else (value, value)


def refusal(meta, arrays):
    """Why this implementation cannot run the case, or None: whatever it
    does not claim above is refused, never computed wrongly."""
    cfg = meta["config"]
    checks = {
        "dtype": meta.get("dtype") not in CAPABILITIES["dtype"],
        "activation": (cfg.get("activation", "tanh") or "linear") not in CAPABILITIES["activation"],
        "recurrent_activation": (cfg.get("recurrent_activation", "sigmoid") or "linear")
        not in CAPABILITIES["recurrent_activation"],
        "data_format": (cfg.get("data_format") or "channels_last") != "channels_last",
        "padding": str(cfg.get("padding", "valid")).lower() not in CAPABILITIES["padding"],
        "device": cfg.get("device", "cpu") != "cpu",
        "kernel_parity": any(k % 2 == 0 for k in pair(cfg["kernel_size"])),
        "strides": max(pair(cfg.get("strides", 1))) > 1,
        "dilation": max(pair(cfg.get("dilation_rate", 1))) > 1,
        "stateful": bool(cfg.get("stateful")) or bool(meta.get("followups")),
        "dropout": bool(meta.get("training")) and (cfg.get("dropout", 0) or 0) + (
            cfg.get("recurrent_dropout", 0) or 0) > 0,
        "mask": "mask" in arrays, "initial_state": "initial_h" in arrays,
        "gradients": "cotangent" in arrays,
        "dropout_injection": "dropout_mask" in arrays or "recurrent_dropout_mask" in arrays,
        "masking_layer": meta.get("masking_value") is not None,
        "serialization": bool(meta.get("roundtrip")),
        "symbolic_shapes": bool(meta.get("unknown_dims")),
    }
    missing = [name for name, needed in checks.items() if needed]
    if missing:
        return "outside capabilities: " + ", ".join(missing)
    if "kernel" not in arrays or "recurrent_kernel" not in arrays:
        return "the case carries no weights to map (no initializers here)"
    if cfg.get("use_bias", True) and "bias" not in arrays:
        return "use_bias is set but the case carries no bias"
    return None


def conv(x, w, padding):
    n, h, wd, c = x.shape
    kh, kw, _, o = w.shape
    if padding == "same":
        x = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    oh, ow = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    out = np.zeros((n, oh, ow, o), np.float32)
    for a in range(kh):
        for b in range(kw):
            out += x[:, a:a + oh, b:b + ow, :] @ w[a, b]
    return out


def run(meta, arrays, wrong):
    cfg = meta["config"]
    f = int(cfg["filters"])
    if arrays["inputs"].ndim != 5:
        raise ValueError(f"expected 5-D inputs, got shape {arrays['inputs'].shape}")
    x = arrays["inputs"].astype(np.float32)
    k = arrays["kernel"].astype(np.float32)
    u = arrays["recurrent_kernel"].astype(np.float32)
    b = arrays["bias"].astype(np.float32) if cfg.get("use_bias", True) else np.zeros(4 * f, np.float32)
    if wrong:
        b[f:2 * f] += np.float32(0.01)
    sig = lambda z: 1 / (1 + np.exp(-z))
    pad = str(cfg.get("padding", "valid")).lower()
    h = c = None
    outs = []
    steps = range(x.shape[1] - 1, -1, -1) if cfg.get("go_backwards") else range(x.shape[1])
    for t in steps:
        z = conv(x[:, t], k, pad) + b
        if h is None:
            h = c = np.zeros(z.shape[:3] + (f,), np.float32)
        z += conv(h, u, "same")
        i, fg, g, o = sig(z[..., :f]), sig(z[..., f:2 * f]), np.tanh(z[..., 2 * f:3 * f]), sig(z[..., 3 * f:])
        c = fg * c + i * g
        h = o * np.tanh(c)
        outs.append(h)
    out = np.stack(outs, 1) if cfg.get("return_sequences") else outs[-1]
    return [out, h, c] if cfg.get("return_state") else [out]


def answer(meta, arrays, wrong):
    """The result file's metadata and arrays for one case."""
    reason = None if "--no-refusals" in sys.argv else refusal(meta, arrays)
    if reason:
        return {"status": "refused", "detail": reason, "n_outputs": 0}, {}
    try:
        outs = run(meta, arrays, wrong)
    except Exception as exc:     # the layer rejects the case, as a library raises
        return {"status": "raised", "n_outputs": 0,
                "error": {"type": type(exc).__name__, "message": str(exc), "phase": "call",
                          "mro": [c.__name__ for c in type(exc).__mro__]}}, {}
    result = {"status": "ok", "structure": "list" if len(outs) > 1 else "tensor",
              "dtypes": ["float32"] * len(outs), "n_outputs": len(outs)}
    return result, {f"out{i}": o.astype(np.float64) for i, o in enumerate(outs)}


def meta_array(obj):
    return np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8)


def main():
    wrong = "--wrong-forget-bias" in sys.argv
    proto = sys.stdout
    sys.stdout = sys.stderr
    proto.write(json.dumps({"ok": True, "op": "hello", "protocol": 2}) + "\n")
    proto.flush()
    for line in sys.stdin:
        msg = json.loads(line)
        op = msg.get("op")
        if op == "capabilities":
            reply = {"ok": True, "capabilities": CAPABILITIES}
        elif op == "versions":
            reply = {"ok": True, "versions": {"external-impl": "1.0", "numpy": np.__version__}}
        elif op in ("reset", "close"):
            reply = {"ok": True}
        elif op == "run":
            with np.load(msg["case"], allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
            meta = json.loads(arrays.pop("__meta__").tobytes())
            result, files = answer(meta, arrays, wrong)
            np.savez(msg["result"], __meta__=meta_array(result), **files)
            reply = {"ok": True}
        else:
            reply = {"ok": False, "error": f"unknown op {op!r}"}
        reply["id"] = msg.get("id")    # protocol 2: echo the request's id
        proto.write(json.dumps(reply) + "\n")
        proto.flush()
        if op == "close":
            return


if __name__ == "__main__":
    main()
