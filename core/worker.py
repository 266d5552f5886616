"""Run an adapter in a persistent worker process.

Why: Keras 3 picks its backend once per process, frameworks are slow to import,
and an implementation under test may crash, hang or eat all memory.  The worker
is started once and reused; a crash, a hang or an out-of-memory kill becomes an
:class:`Outcome` for the case that caused it (with the tail of the worker's
stderr), and the next case starts a fresh worker.

Protocol (language-neutral, so out-of-process third-party implementations can
speak it too; see ``docs/worker-protocol.md``): one JSON object per line.
The parent writes requests on the worker's stdin; the worker answers on its
stdout, one line per request.  Arrays travel in ``.npz`` files (loaded with
``allow_pickle=False``) named in the request; docs/worker-protocol.md gives the
file layouts:

* first line from the worker: ``{"ok": true, "op": "hello", "pid": N}``
* ``{"op": "run", "case": PATH, "result": PATH}`` -> ``{"ok": true}``, outcome in PATH
* ``{"op": "capabilities"}`` -> ``{"ok": true, "capabilities": {...}}`` (Capabilities.to_json)
* ``{"op": "versions"}`` -> ``{"ok": true, "versions": {...}}``
* ``{"op": "reset"}`` -> ``{"ok": true}`` (stateful layers forget their state)
* ``{"op": "close"}`` -> ``{"ok": true}`` and the worker exits
* any failure to serve a request -> ``{"ok": false, "error": TEXT}``
"""
from __future__ import annotations

import collections
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from convlstm_conformance.features import Capabilities
from convlstm_conformance.model import (ADAPTER_ERROR, CRASHED, TIMEOUT, Adapter, Case,
                                        CaseFileError, Outcome)
from convlstm_conformance.registry import instantiate

STDERR_TAIL_LINES = 40


class WorkerError(RuntimeError):
    """The worker could not serve a request; ``status`` says how it failed."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


class WorkerProcess:
    """One child process speaking the line protocol."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None,
                 start_timeout_s: float = 300.0, memory_limit_mb: float | None = None):
        self.argv = argv
        self.env = env or {}
        self.start_timeout_s = start_timeout_s
        self.memory_limit_mb = memory_limit_mb
        self.proc: subprocess.Popen | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self.hello: dict[str, Any] = {}
        self.starts = 0
        self._buf = b""
        self._oom = False

    # -- lifecycle -----------------------------------------------------
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        env = {**os.environ, **self.env}
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        env["PYTHONUNBUFFERED"] = "1"
        self.tail.clear()
        self._buf = b""
        self._oom = False
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env, start_new_session=True)
        self.starts += 1
        threading.Thread(target=self._drain_stderr, args=(self.proc,), daemon=True).start()
        self.hello = self._read_reply(self.start_timeout_s, "start-up")
        if not self.hello.get("ok"):
            raise WorkerError(CRASHED, f"worker failed to start: {self.hello.get('error', '')}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                proc.stdin.write(b'{"op": "close"}\n')
                proc.stdin.flush()
                proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                self._kill(proc)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            try:
                stream.close()
            except OSError:
                pass

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    # -- requests ------------------------------------------------------
    def request(self, message: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        if not self.alive():
            self.start()
        assert self.proc is not None
        try:
            self.proc.stdin.write((json.dumps(message) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self._read_reply(5.0, message.get("op", "request"))  # reports the death
        return self._read_reply(timeout_s, message.get("op", "request"))

    def _read_reply(self, timeout_s: float, what: str) -> dict[str, Any]:
        proc = self.proc
        assert proc is not None
        deadline = time.monotonic() + timeout_s
        fd = proc.stdout.fileno()
        while b"\n" not in self._buf:
            now = time.monotonic()
            if now >= deadline:
                self._kill(proc)
                raise WorkerError(TIMEOUT, f"worker gave no answer to {what} within "
                                           f"{timeout_s:.0f} s; killed it.\n{self.stderr_tail()}")
            if self.memory_limit_mb and _rss_mb(proc.pid) > self.memory_limit_mb:
                self._oom = True
                self._kill(proc)
            ready, _, _ = select.select([fd], [], [], min(0.2, deadline - now))
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                code = proc.wait()
                time.sleep(0.05)  # let the stderr thread catch the last lines
                if self._oom:
                    raise WorkerError(CRASHED, f"out of memory: worker exceeded "
                                               f"{self.memory_limit_mb:.0f} MB resident and was "
                                               f"killed during {what}.\n{self.stderr_tail()}")
                raise WorkerError(CRASHED, f"worker died during {what} ({_describe_exit(code)})."
                                           f"\n{self.stderr_tail()}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            reply = json.loads(line)
        except json.JSONDecodeError:
            raise WorkerError(ADAPTER_ERROR, f"worker broke the protocol: {line[:200]!r}") from None
        if not isinstance(reply, dict):
            raise WorkerError(ADAPTER_ERROR, f"worker broke the protocol: {line[:200]!r}")
        return reply

    def _drain_stderr(self, proc: subprocess.Popen) -> None:
        for raw in iter(proc.stderr.readline, b""):
            self.tail.append(raw.decode("utf-8", "replace").rstrip())

    def stderr_tail(self) -> str:
        lines = list(self.tail)
        return "stderr tail:\n" + "\n".join(lines) if lines else "(no stderr)"


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        hint = " (the kernel's out-of-memory killer sends SIGKILL)" if -code == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exit code {code}"


class WorkerAdapter(Adapter):
    """An adapter whose implementation runs in a worker process."""

    def __init__(self, name: str, target: str | None = None, kwargs: dict[str, Any] | None = None,
                 env: dict[str, str] | None = None, capabilities: Capabilities | None = None,
                 timeout_s: float = 120.0, start_timeout_s: float = 300.0,
                 memory_limit_mb: float | None = 8192.0, argv: list[str] | None = None):
        """``target`` ("module:Class") runs one of our adapter classes in
        ``python -m convlstm_conformance.worker``; ``argv`` runs any program that speaks the
        protocol (a third-party implementation in any language)."""
        if (target is None) == (argv is None):
            raise ValueError("give exactly one of target and argv")
        self.name = name
        self.target = target
        self.kwargs = kwargs or {}
        self._caps = capabilities
        self.timeout_s = timeout_s
        if argv is None:
            argv = [sys.executable, "-m", "convlstm_conformance.worker", target,
                    json.dumps(self.kwargs)]
        self.process = WorkerProcess(argv, env=env, start_timeout_s=start_timeout_s,
                                     memory_limit_mb=memory_limit_mb)
        self._tmp = tempfile.TemporaryDirectory(prefix=f"convlstm-{name}-")
        self._n = 0
        self._versions: dict[str, str] | None = None

    def capabilities(self) -> Capabilities:
        if self._caps is None:
            if self.target is not None:
                # Adapter modules import their frameworks lazily, so asking the
                # class here is cheap and needs no worker.
                self._caps = instantiate(self.target, self.kwargs).capabilities()
            else:
                reply = self.process.request({"op": "capabilities"}, self.timeout_s)
                if not reply.get("ok") or not isinstance(reply.get("capabilities"), dict):
                    raise WorkerError(ADAPTER_ERROR, f"{self.name}: no capabilities in {reply!r:.300}")
                self._caps = Capabilities.from_json(reply["capabilities"])
        return self._caps

    def versions(self) -> dict[str, str]:
        if self._versions is None:
            reply = self.process.request({"op": "versions"}, self.timeout_s)
            self._versions = dict(reply.get("versions", {}))
        return self._versions

    def run(self, case: Case) -> Outcome:
        start = time.perf_counter()
        self._n += 1
        case_path = Path(self._tmp.name) / f"case-{self._n}.npz"
        result_path = Path(self._tmp.name) / f"result-{self._n}.npz"
        try:
            case.save(case_path)
            reply = self.process.request({"op": "run", "case": str(case_path),
                                          "result": str(result_path)}, self.timeout_s)
            if not reply.get("ok"):
                return Outcome(status=ADAPTER_ERROR, detail=str(reply.get("error", reply)),
                               duration_s=time.perf_counter() - start)
            return Outcome.load(result_path)
        except WorkerError as exc:
            return Outcome(status=exc.status, detail=str(exc),
                           duration_s=time.perf_counter() - start)
        except CaseFileError as exc:
            return Outcome(status=ADAPTER_ERROR, detail=f"unreadable result: {exc}",
                           duration_s=time.perf_counter() - start)
        finally:
            for p in (case_path, result_path):
                p.unlink(missing_ok=True)

    def reset(self) -> None:
        if self.process.alive():
            self.process.request({"op": "reset"}, self.timeout_s)

    def close(self) -> None:
        self.process.stop()
        self._tmp.cleanup()


def serve(target: str, kwargs_json: str) -> int:
    """The worker side: serve requests on stdin until told to close."""
    # Keep the protocol channel private: anything the framework prints, from
    # Python or from C, goes to stderr instead of corrupting the replies.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def reply(obj: dict[str, Any]) -> None:
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    try:
        adapter = instantiate(target, json.loads(kwargs_json))
    except Exception as exc:
        import traceback
        traceback.print_exc()
        reply({"ok": False, "op": "hello", "error": f"{type(exc).__name__}: {exc}"})
        return 1
    reply({"ok": True, "op": "hello", "pid": os.getpid(), "name": adapter.name})
    for line in sys.stdin:
        try:
            msg = json.loads(line)
            op = msg.get("op")
            if op == "run":
                outcome = adapter.run(Case.load(msg["case"]))
                outcome.save(msg["result"])
                reply({"ok": True})
            elif op == "versions":
                reply({"ok": True, "versions": adapter.versions()})
            elif op == "capabilities":
                reply({"ok": True, "capabilities": adapter.capabilities().to_json()})
            elif op == "reset":
                getattr(adapter, "reset", lambda: None)()
                reply({"ok": True})
            elif op == "close":
                reply({"ok": True})
                adapter.close()
                return 0
            else:
                reply({"ok": False, "error": f"unknown op {op!r}"})
        except Exception as exc:  # keep serving: one bad request is not the end
            import traceback
            reply({"ok": False, "error": f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"})
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.stderr.write("usage: python -m convlstm_conformance.worker module:Class KWARGS_JSON\n")
        sys.exit(2)
    sys.exit(serve(sys.argv[1], sys.argv[2]))
