#!/usr/bin/env python3
"""A worker that breaks the protocol in one chosen way (``argv[1]``), to show
the suite's side survives each.  Standalone: the standard library and NumPy.

Every run it serves well is answered with a valid result file, status
"refused" and detail "served N", N counting the runs; the misbehaviour hits
the second run (the first shows the worker was healthy before).
"""
import json
import os
import subprocess
import sys
import time

import numpy as np

MODE = sys.argv[1] if len(sys.argv) > 1 else "good"
PROTOCOL = 1 if MODE.startswith("v1-") else 2


def write(proto, obj_or_text):
    text = obj_or_text if isinstance(obj_or_text, str) else json.dumps(obj_or_text)
    proto.write(text + "\n")
    proto.flush()


def result(path, meta):
    np.savez(path, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8))


def served(path, n):
    result(path, {"status": "refused", "n_outputs": 0, "detail": f"served {n}"})


def eat_memory():
    hog = []
    while True:
        hog.append(bytearray(64 << 20))
        for i in range(0, len(hog[-1]), 4096):
            hog[-1][i] = 1


def misbehave(proto, msg, rid):
    """The second run: misbehave, and say whether the reply is still due."""
    if MODE in ("junk-once", "v1-junk-once"):
        write(proto, "progress: 50% done")
    elif MODE in ("junk-json-once", "v1-json-junk-once"):
        write(proto, {"ok": True})
    elif MODE == "stale-id":
        write(proto, {"ok": True, "id": rid - 1})
    elif MODE == "not-object":
        write(proto, "[1, 2]")
    elif MODE == "ok-not-bool":
        write(proto, {"ok": "yes", "id": rid})
    elif MODE == "deep-json":
        write(proto, "[" * 100_000 + "]" * 100_000)
    elif MODE == "binary":
        os.write(proto.fileno(), b"\xff\xfe\x00garbage\x00\n")
    elif MODE == "many-junk":
        for k in range(1000):
            write(proto, f"noise {k}")
    elif MODE == "huge-line":
        os.write(proto.fileno(), b"x" * (2 << 20))
        time.sleep(60)
    elif MODE == "close-stdout":
        proto.close()
        os.close(1)
        time.sleep(60)
    elif MODE == "exit-on-run":
        sys.exit(3)
    elif MODE == "eat-in-child":
        # The memory is in a child: only a limit on the whole tree sees it.
        subprocess.run([sys.executable, "-c", "import tests.hostile_worker as h; h.eat_memory()"],
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    elif MODE == "orphan-and-hang":
        # A grandchild in a session of its own, then a hang.
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                                 start_new_session=True)
        sys.stderr.write(f"grandchild {child.pid}\n")
        sys.stderr.flush()
        time.sleep(600)
    elif MODE == "negative-outputs":
        result(msg["result"], {"status": "ok", "n_outputs": -1})
        return True
    elif MODE == "string-outputs":
        np.savez(msg["result"], __meta__=np.frombuffer(json.dumps(
            {"status": "ok", "n_outputs": 1}).encode(), np.uint8), out0=np.array(["a", "b"]))
        return True
    served(msg["result"], 2)
    return True


def main():
    proto = sys.stdout
    sys.stdout = sys.stderr
    if MODE == "banner":
        write(proto, "Loading model weights...")
    if MODE == "no-hello":
        time.sleep(600)
    if MODE == "hello-garbage":
        while True:
            write(proto, "not a hello")
            time.sleep(0.01)
    hello = {"ok": True, "op": "hello"}
    if PROTOCOL == 2:
        hello["protocol"] = 2
    write(proto, hello)
    runs = 0
    for line in sys.stdin:
        msg = json.loads(line)
        rid = msg.get("id")
        op = msg.get("op")
        reply = {"ok": True}
        if op == "run":
            runs += 1
            if runs == 2:
                misbehave(proto, msg, rid)
            else:
                served(msg["result"], runs)
        elif op == "capabilities":
            reply["capabilities"] = "everything" if MODE == "bad-capabilities" else {}
        elif op == "versions":
            reply["versions"] = {"hostile": "1"}
        if PROTOCOL == 2:
            reply["id"] = rid
        write(proto, reply)
        if MODE == "v1-json-after" and op == "run" and runs == 2:
            write(proto, {"ok": True})      # an answer nobody asked for
        if op == "close":
            return


if __name__ == "__main__":
    main()
