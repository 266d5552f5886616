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

* first line from the worker: ``{"ok": true, "op": "hello", "protocol": 2, "pid": N}``
* ``{"op": "run", "id": N, "case": PATH, "result": PATH}`` -> ``{"ok": true, "id": N}``
* ``{"op": "capabilities", "id": N}`` -> ``{"ok": true, "id": N, "capabilities": {...}}``
* ``{"op": "versions", "id": N}`` -> ``{"ok": true, "id": N, "versions": {...}}``
* ``{"op": "reset", "id": N}`` -> ``{"ok": true, "id": N}`` (stateful layers forget their state)
* ``{"op": "close", "id": N}`` -> ``{"ok": true, "id": N}`` and the worker exits
* any failure to serve a request -> ``{"ok": false, "id": N, "error": TEXT}``

Every request carries an ``id`` that a protocol-2 worker echoes, so a stray
line on stdout is recognised and skipped: the case it came with is recorded
as a protocol break and the next case runs on a synchronised channel.  A
worker that does not echo ids (protocol 1) is restarted after a stray line
instead.  The memory limit covers the worker's whole process tree, and a
watchdog process (``worker_watchdog.py``) kills the tree and removes the
temporary directory if the suite itself dies.
"""
from __future__ import annotations

import collections
import json
import os
import resource
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convlstm_conformance.features import Capabilities
from convlstm_conformance.model import (ADAPTER_ERROR, CRASHED, TIMEOUT, Adapter, Case,
                                        CaseFileError, Outcome)
from convlstm_conformance.registry import instantiate
from convlstm_conformance.worker_watchdog import kill_tree, process_tree

PROTOCOL = 2
STDERR_TAIL_LINES = 40
MAX_LINE_BYTES = 1 << 20        # one protocol line; a longer one is junk and the worker is killed
MAX_JUNK_SHOWN = 5              # stray lines quoted in a protocol-break message
MEMORY_POLL_S = 0.2             # how often the process tree's memory is read while waiting
DEFAULT_TIMEOUT_S = 120.0
DEFAULT_START_TIMEOUT_S = 300.0
DEFAULT_MEMORY_LIMIT_MB = 8192.0


class WorkerError(RuntimeError):
    """The worker could not serve a request; ``status`` says how it failed."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


class ProtocolError(ValueError):
    """A protocol line that cannot be read as one."""


# --------------------------------------------------------------------------
# The line parsers: pure functions, fuzzed by tests/test_fuzz_loaders.py


def parse_request(line: bytes | str) -> dict[str, Any]:
    """A request line as the worker reads it; ProtocolError when it is not
    a JSON object with a string ``op``."""
    if isinstance(line, bytes):
        if len(line) > MAX_LINE_BYTES:
            raise ProtocolError(f"request line of {len(line)} bytes (limit {MAX_LINE_BYTES})")
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"request is not UTF-8 ({exc.reason})") from None
    elif len(line) > MAX_LINE_BYTES:
        raise ProtocolError(f"request line of {len(line)} characters (limit {MAX_LINE_BYTES})")
    try:
        msg = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"request is not JSON ({str(exc)[:100]})") from None
    if not isinstance(msg, dict):
        raise ProtocolError(f"request is a JSON {type(msg).__name__}, not an object")
    if not isinstance(msg.get("op"), str):
        raise ProtocolError("request has no string 'op'")
    if not _valid_id(msg.get("id")):
        raise ProtocolError("request 'id' must be an integer")
    return msg


def parse_reply(line: bytes, want_id: int | None, strict_ids: bool) -> dict[str, Any] | None:
    """The reply to request ``want_id`` in ``line``, or None when the line is
    not that reply (not JSON, not an object, no boolean ``ok``, another id,
    or no id from a worker that echoes them): a stray line to skip."""
    if len(line) > MAX_LINE_BYTES:
        return None
    try:
        reply = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        return None
    if "id" in reply:
        same = _valid_id(reply["id"]) and reply["id"] is not None and reply["id"] == want_id
        return reply if same else None
    return None if strict_ids else reply


def _valid_id(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


# --------------------------------------------------------------------------
# The suite's side


class WorkerProcess:
    """One child process speaking the line protocol."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None,
                 start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
                 memory_limit_mb: float | None = None, directory: str | None = None,
                 cwd: str | None = None):
        """``directory``: removed with the worker's tree if the suite dies;
        ``cwd``: where the program runs (default: the current directory)."""
        self.argv = argv
        self.cwd = cwd
        self.env = env or {}
        self.start_timeout_s = start_timeout_s
        self.memory_limit_mb = memory_limit_mb
        self.directory = directory
        self.proc: subprocess.Popen | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self.hello: dict[str, Any] = {}
        self.starts = 0
        self.junk: list[bytes] = []
        self.junk_count = 0
        self._buf = b""
        self._oom = False
        self._next_id = 0
        self._watchdog: subprocess.Popen | None = None
        self._stderr_done = threading.Event()

    @property
    def echoes_ids(self) -> bool:
        """Whether the worker speaks protocol 2 (echoes request ids)."""
        version = self.hello.get("protocol", 1)
        return isinstance(version, int) and not isinstance(version, bool) and version >= 2

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
        self.hello = {}
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, env=env, start_new_session=True,
                                         cwd=self.cwd)
        except OSError as exc:
            where = f" (in {self.cwd})" if self.cwd else ""
            raise WorkerError(CRASHED, f"cannot start the worker {self.argv[0]!r}{where}: "
                                       f"{exc.strerror or exc}") from None
        self.starts += 1
        self._watch(f"watch {self.proc.pid}")
        self._stderr_done = threading.Event()
        threading.Thread(target=self._drain_stderr, args=(self.proc, self._stderr_done),
                         daemon=True).start()
        self.hello = self._read_reply(self.start_timeout_s, "start-up", None, hello=True)
        if not self.hello.get("ok"):
            error = self.hello.get("error", "")
            raise WorkerError(CRASHED, f"worker failed to start: {str(error)[:2000]}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.returncode is None:
            try:
                proc.stdin.write(json.dumps({"op": "close", "id": self._new_id()}).encode() + b"\n")
                proc.stdin.flush()
            except (OSError, ValueError):
                pass
            _wait_unreaped(proc, 5.0)
        # Whatever the worker left behind in its session or below it goes too.
        self._kill(proc)
        self._watch(f"forget {proc.pid}")
        self._stderr_done.set()         # its thread closes stderr
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except OSError:
                pass

    def release(self) -> None:
        """Stop the worker and the watchdog (the adapter is closed)."""
        self.stop()
        dog, self._watchdog = self._watchdog, None
        if dog is not None:
            try:
                dog.stdin.write(b"exit\n")
                dog.stdin.close()
                dog.wait(timeout=5)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                dog.kill()

    def _watch(self, command: str) -> None:
        """Tell the watchdog (started on first use) about a worker."""
        if self._watchdog is None or self._watchdog.poll() is not None:
            script = Path(__file__).with_name("worker_watchdog.py")
            try:
                self._watchdog = subprocess.Popen(
                    [sys.executable, "-I", "-S", str(script), self.directory or ""],
                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    start_new_session=True)
            except OSError:
                self._watchdog = None
                return
        try:
            self._watchdog.stdin.write(command.encode() + b"\n")
            self._watchdog.stdin.flush()
        except (OSError, ValueError):
            pass

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        # Only an unreaped process: once reaped, its id may belong to another.
        if proc.returncode is None:
            kill_tree(proc.pid)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    # -- requests ------------------------------------------------------
    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def request(self, message: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        if not self.alive():
            self.start()
        assert self.proc is not None
        self._take_pending()
        rid = self._new_id()
        what = str(message.get("op", "request"))
        try:
            self.proc.stdin.write((json.dumps({**message, "id": rid}) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            self._read_reply(5.0, what, rid)  # reports the death
        return self._read_reply(timeout_s, what, rid)

    def take_junk(self) -> tuple[int, list[bytes]]:
        """Stray stdout lines seen since the last call: (count, the first few)."""
        out = (self.junk_count, self.junk)
        self.junk, self.junk_count = [], 0
        return out

    def _note_junk(self, line: bytes) -> None:
        self.junk_count += 1
        if len(self.junk) < MAX_JUNK_SHOWN:
            self.junk.append(line[:200])

    def _take_pending(self) -> None:
        """Lines the worker wrote without being asked (after its last answer)."""
        proc = self.proc
        if proc is None:
            return
        fd = proc.stdout.fileno()
        while True:
            ready, _, _ = select.select([fd], [], [], 0)
            if not ready:
                break
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            self._buf += chunk
            if len(self._buf) > MAX_LINE_BYTES and b"\n" not in self._buf:
                break
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            self._note_junk(line)

    def _read_reply(self, timeout_s: float, what: str, want_id: int | None,
                    hello: bool = False) -> dict[str, Any]:
        proc = self.proc
        assert proc is not None
        deadline = time.monotonic() + timeout_s
        next_memory_check = time.monotonic() + MEMORY_POLL_S
        fd = proc.stdout.fileno()
        while True:
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                reply = parse_reply(line.rstrip(b"\r"), want_id,
                                    strict_ids=self.echoes_ids and not hello)
                if reply is not None and (not hello or reply.get("op") == "hello"):
                    return reply
                self._note_junk(line)
            if len(self._buf) > MAX_LINE_BYTES:
                self._note_junk(self._buf)
                self._kill(proc)
                self._buf = b""
                raise WorkerError(ADAPTER_ERROR, f"worker broke the protocol: more than "
                                                 f"{MAX_LINE_BYTES} bytes on stdout without a "
                                                 f"newline during {what}; killed it."
                                                 f"\n{self.stderr_tail()}")
            now = time.monotonic()
            if now >= deadline:
                self._kill(proc)
                raise WorkerError(TIMEOUT, f"worker gave no answer to {what} within "
                                           f"{timeout_s:g} s; killed it.\n{self.stderr_tail()}")
            if self.memory_limit_mb and now >= next_memory_check:
                next_memory_check = now + MEMORY_POLL_S
                if tree_rss_mb(proc.pid) > self.memory_limit_mb:
                    self._oom = True
                    self._kill(proc)
            ready, _, _ = select.select([fd], [], [], min(MEMORY_POLL_S, max(deadline - now, 0)))
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                # Stdout closed: the worker exits, or closed it and lives on.
                exited = _wait_unreaped(proc, 1.0)
                self._kill(proc)       # and whatever it left running below it
                code = proc.returncode if proc.returncode is not None else -signal.SIGKILL
                time.sleep(0.05)  # let the stderr thread catch the last lines
                if not exited and not self._oom:
                    raise WorkerError(CRASHED, f"worker closed its stdout during {what} and "
                                               f"went on running; killed it."
                                               f"\n{self.stderr_tail()}")
                if self._oom:
                    raise WorkerError(CRASHED, f"out of memory: worker's process tree exceeded "
                                               f"{self.memory_limit_mb:g} MB resident and was "
                                               f"killed during {what}.\n{self.stderr_tail()}")
                raise WorkerError(CRASHED, f"worker died during {what} ({_describe_exit(code)})."
                                           f"\n{self.stderr_tail()}")
            self._buf += chunk

    def _drain_stderr(self, proc: subprocess.Popen, done: threading.Event) -> None:
        """Keep the tail of the worker's stderr until it ends or ``done`` is
        set: a process that escaped the kill may hold the pipe open for ever,
        and a blocked read would hold the stream's lock against closing it."""
        fd = proc.stderr.fileno()
        pending = b""
        try:
            while not done.is_set():
                ready, _, _ = select.select([fd], [], [], 0.2)
                if not ready:
                    continue
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                pending = pending[-(1 << 16):]       # a line without end is cut
                for raw in lines:
                    self.tail.append(raw.decode("utf-8", "replace").rstrip()[:2000])
            if pending:
                self.tail.append(pending.decode("utf-8", "replace").rstrip()[:2000])
        except (OSError, ValueError):
            pass
        finally:
            try:
                proc.stderr.close()
            except OSError:
                pass

    def stderr_tail(self) -> str:
        lines = list(self.tail)
        return "stderr tail:\n" + "\n".join(lines) if lines else "(no stderr)"


def _wait_unreaped(proc: subprocess.Popen, timeout_s: float) -> bool:
    """Wait until ``proc`` exits, without reaping it (its id stays its own
    while its tree is killed); whether it exited within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
        except ChildProcessError:
            return True           # already reaped
        if info is not None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid``'s whole process tree (session and
    descendants), in MB: a worker behind a wrapper (``bash -c ...``) or one
    that forks is measured whole."""
    page = resource.getpagesize()
    total = 0
    for p in process_tree(pid) or [pid]:
        try:
            with open(f"/proc/{p}/statm") as fh:
                total += int(fh.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            pass
    return total / (1 << 20)


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        hint = " (the kernel's out-of-memory killer sends SIGKILL)" if -code == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exit code {code}"


def _describe_junk(count: int, lines: list[bytes]) -> str:
    shown = "\n".join(f"  {line!r}" for line in lines)
    more = f"\n  ... and {count - len(lines)} more" if count > len(lines) else ""
    return (f"worker broke the protocol: {count} stray line(s) on stdout, the protocol's "
            f"channel (print to stderr instead):\n{shown}{more}")


@dataclass(frozen=True)
class WorkerOptions:
    """Limits of one worker: per-request timeout, start-up timeout and the
    resident memory of its process tree (None or 0: no limit)."""

    timeout_s: float = DEFAULT_TIMEOUT_S
    start_timeout_s: float = DEFAULT_START_TIMEOUT_S
    memory_limit_mb: float | None = DEFAULT_MEMORY_LIMIT_MB


class WorkerAdapter(Adapter):
    """An adapter whose implementation runs in a worker process."""

    def __init__(self, name: str, target: str | None = None, kwargs: dict[str, Any] | None = None,
                 env: dict[str, str] | None = None, capabilities: Capabilities | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S,
                 start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
                 memory_limit_mb: float | None = DEFAULT_MEMORY_LIMIT_MB,
                 argv: list[str] | None = None, cwd: str | None = None):
        """``target`` ("module:Class") runs one of our adapter classes in
        ``python -m convlstm_conformance.worker``; ``argv`` runs any program that speaks the
        protocol (a third-party implementation in any language), in ``cwd``."""
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
        self._tmp = tempfile.TemporaryDirectory(prefix=f"convlstm-{_safe(name)}-")
        self.process = WorkerProcess(argv, env=env, start_timeout_s=start_timeout_s,
                                     memory_limit_mb=memory_limit_mb or None,
                                     directory=self._tmp.name, cwd=cwd)
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
                caps = reply.get("capabilities")
                if not reply.get("ok") or not isinstance(caps, dict):
                    raise WorkerError(ADAPTER_ERROR, f"{self.name}: no capabilities in "
                                                     f"{reply!r:.300}")
                try:
                    self._caps = Capabilities.from_json(caps)
                except Exception as exc:   # a third party's capabilities, checked there
                    raise WorkerError(ADAPTER_ERROR, f"{self.name}: unreadable capabilities "
                                                     f"{caps!r:.300}: {exc}") from None
        return self._caps

    def versions(self) -> dict[str, str]:
        if self._versions is None:
            reply = self.process.request({"op": "versions"}, self.timeout_s)
            versions = reply.get("versions")
            if not isinstance(versions, dict):
                raise WorkerError(ADAPTER_ERROR, f"{self.name}: no versions in {reply!r:.300}")
            self._versions = {str(k)[:200]: str(v)[:200] for k, v in list(versions.items())[:100]}
        return self._versions

    def run(self, case: Case) -> Outcome:
        start = time.perf_counter()
        self._n += 1
        case_path = Path(self._tmp.name) / f"case-{self._n}.npz"
        result_path = Path(self._tmp.name) / f"result-{self._n}.npz"
        try:
            outcome = self._run(case, case_path, result_path)
        finally:
            for p in (case_path, result_path):
                p.unlink(missing_ok=True)
        count, junk = self.process.take_junk()
        if count:
            if not self.process.echoes_ids:
                self.process.stop()     # no ids to resynchronise on: a fresh worker
            detail = _describe_junk(count, junk)
            if outcome.status != "ok":
                detail += f"\nthe case itself ended as {outcome.summary()}"
            outcome = Outcome(status=ADAPTER_ERROR, detail=detail)
        outcome.duration_s = time.perf_counter() - start
        return outcome

    def _run(self, case: Case, case_path: Path, result_path: Path) -> Outcome:
        try:
            case.save(case_path)
            reply = self.process.request({"op": "run", "case": str(case_path),
                                          "result": str(result_path)}, self.timeout_s)
            if not reply.get("ok"):
                return Outcome(status=ADAPTER_ERROR,
                               detail=str(reply.get("error", reply))[:8000])
            return Outcome.load(result_path)
        except WorkerError as exc:
            return Outcome(status=exc.status, detail=str(exc))
        except CaseFileError as exc:
            return Outcome(status=ADAPTER_ERROR, detail=f"unreadable result: {exc}")

    def reset(self) -> None:
        if self.process.alive():
            try:
                self.process.request({"op": "reset"}, self.timeout_s)
            except WorkerError:
                pass            # the next request starts a fresh worker

    def close(self) -> None:
        self.process.release()
        self._tmp.cleanup()


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:40]


# --------------------------------------------------------------------------
# The worker's side


def serve(target: str, kwargs_json: str) -> int:
    """The worker side: serve requests on stdin until told to close."""
    # Keep the protocol channel private: anything the framework prints, from
    # Python or from C, goes to stderr instead of corrupting the replies.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def reply(obj: dict[str, Any], rid: Any = None) -> None:
        proto.write(json.dumps({**obj, "id": rid} if rid is not None else obj) + "\n")
        proto.flush()

    try:
        adapter = instantiate(target, json.loads(kwargs_json))
    except Exception as exc:
        import traceback
        traceback.print_exc()
        reply({"ok": False, "op": "hello", "error": f"{type(exc).__name__}: {exc}"})
        return 1
    reply({"ok": True, "op": "hello", "protocol": PROTOCOL, "pid": os.getpid(),
           "name": adapter.name})
    for line in sys.stdin.buffer:
        rid = None
        try:
            msg = parse_request(line)
            rid = msg.get("id")
            op = msg["op"]
            if op == "run":
                if not isinstance(msg.get("case"), str) or not isinstance(msg.get("result"), str):
                    raise ProtocolError("run needs 'case' and 'result' paths")
                outcome = adapter.run(Case.load(msg["case"]))
                outcome.save(msg["result"])
                reply({"ok": True}, rid)
            elif op == "versions":
                reply({"ok": True, "versions": adapter.versions()}, rid)
            elif op == "capabilities":
                reply({"ok": True, "capabilities": adapter.capabilities().to_json()}, rid)
            elif op == "reset":
                getattr(adapter, "reset", lambda: None)()
                reply({"ok": True}, rid)
            elif op == "close":
                reply({"ok": True}, rid)
                adapter.close()
                return 0
            else:
                reply({"ok": False, "error": f"unknown op {op[:80]!r}"}, rid)
        except Exception as exc:  # keep serving: one bad request is not the end
            import traceback
            reply({"ok": False, "error": f"{type(exc).__name__}: {exc}\n"
                                         f"{traceback.format_exc()[-3000:]}"}, rid)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.stderr.write("usage: python -m convlstm_conformance.worker module:Class KWARGS_JSON\n")
        sys.exit(2)
    sys.exit(serve(sys.argv[1], sys.argv[2]))
