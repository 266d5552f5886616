#!/usr/bin/env python3
"""A third-party ConvLSTM2D speaking the worker protocol, standalone.

It imports nothing from this project: only the standard library and NumPy,
as an implementation in another language would use only its own npz and JSON
readers.  It implements the float32 forward pass for valid/same padding,
stride 1, no dilation, tanh/sigmoid, channels_last, and claims exactly that.
``--wrong-forget-bias`` makes it add 0.01 to the forget-gate bias.
"""
import json
import sys

import numpy as np

CAPABILITIES = {
    "padding": ["same", "valid"], "data_format": ["channels_last"],
    "activation": ["tanh"], "recurrent_activation": ["sigmoid"], "dtype": ["float32"],
    "device": ["cpu"], "kernel_parity": ["odd"], "strides": False, "dilation": False,
    "no_bias": True, "return_state": True, "return_sequences": True, "non_square": True,
}


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
            try:
                outs = run(meta, arrays, wrong)
                result = {"status": "ok", "structure": "list" if len(outs) > 1 else "tensor",
                          "dtypes": ["float32"] * len(outs), "n_outputs": len(outs)}
                files = {f"out{i}": o.astype(np.float64) for i, o in enumerate(outs)}
            except Exception as exc:
                result = {"status": "raised", "n_outputs": 0,
                          "error": {"type": type(exc).__name__, "message": str(exc), "phase": "call",
                                    "mro": [c.__name__ for c in type(exc).__mro__]}}
                files = {}
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
