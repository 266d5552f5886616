"""The worker boundary: a crash, a hang or an out-of-memory in an adapter is a
recorded outcome for that case, and the next case gets a fresh worker."""
import json

import numpy as np

from convlstm_conformance.model import CRASHED, Case, OK, TIMEOUT
from convlstm_conformance.worker import WorkerAdapter


def _case(fault: bool) -> Case:
    rng = np.random.default_rng(0)
    cfg = {"filters": 2, "kernel_size": 3, "return_state": True}
    if fault:
        cfg["fault"] = True
    return Case(config=cfg, inputs=rng.uniform(-1, 1, (1, 2, 5, 5, 2)),
                kernel=rng.uniform(-.3, .3, (3, 3, 2, 8)),
                recurrent_kernel=rng.uniform(-.3, .3, (3, 3, 2, 8)), bias=np.zeros(8))


def _adapter(cls: str, **kw) -> WorkerAdapter:
    return WorkerAdapter(cls.lower(), f"tests.faulty_adapters:{cls}", start_timeout_s=60, **kw)


def _survives(adapter: WorkerAdapter, status: str, needle: str) -> None:
    try:
        first = adapter.run(_case(False))
        assert first.status == OK, first.summary()
        bad = adapter.run(_case(True))
        assert bad.status == status, f"expected {status}, got {bad.summary()}"
        assert needle in bad.detail, f"{needle!r} not in the recorded detail:\n{bad.detail}"
        again = adapter.run(_case(False))
        assert again.status == OK, f"the worker was not restarted: {again.summary()}"
        np.testing.assert_array_equal(again.outputs[0], first.outputs[0])
        assert adapter.process.starts == 2
    finally:
        adapter.close()


def test_crash_is_recorded_with_stderr_tail_and_worker_restarts():
    _survives(_adapter("Crashes"), CRASHED, "simulated fault in native code")


def test_crash_names_the_signal():
    adapter = _adapter("Crashes")
    try:
        assert "SIGSEGV" in adapter.run(_case(True)).detail
    finally:
        adapter.close()


def test_hang_times_out_and_worker_restarts():
    _survives(_adapter("Hangs", timeout_s=3), TIMEOUT, "entering an endless loop")


def test_out_of_memory_is_recorded_and_worker_restarts():
    _survives(_adapter("EatsMemory", memory_limit_mb=600), CRASHED, "out of memory")


def test_stdout_noise_does_not_break_the_protocol():
    adapter = _adapter("Prints")
    try:
        out = adapter.run(_case(True))
        assert out.status == OK, out.summary()
        assert adapter.process.starts == 1
    finally:
        adapter.close()


def test_adapter_that_cannot_start_is_reported_not_fatal():
    adapter = _adapter("FailsToStart")
    try:
        out = adapter.run(_case(False))
        assert out.status == CRASHED, out.summary()
        assert "simulated missing library" in out.detail
    finally:
        adapter.close()


def test_unknown_target_is_a_clear_error():
    adapter = WorkerAdapter("nope", "tests.faulty_adapters:DoesNotExist", start_timeout_s=30)
    try:
        out = adapter.run(_case(False))
        assert out.status == CRASHED and "DoesNotExist" in out.detail, out.summary()
    finally:
        adapter.close()


# --------------------------------------------------------------------------
# A worker that breaks the protocol: the case it breaks is recorded as such,
# and the channel is synchronised again for the next (tests/hostile_worker.py).

import os  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from convlstm_conformance import registry  # noqa: E402
from convlstm_conformance.model import ADAPTER_ERROR, REFUSED  # noqa: E402
from convlstm_conformance.worker import (ProtocolError, WorkerError, parse_reply,  # noqa: E402
                                         parse_request)

HOSTILE = Path(__file__).with_name("hostile_worker.py")
ROOT = HOSTILE.parent.parent


def hostile(mode: str, wrapper: bool = False, **kw) -> WorkerAdapter:
    command = f"{sys.executable} {HOSTILE} {mode}"
    argv = ["bash", "-c", command] if wrapper else command.split()
    kw.setdefault("start_timeout_s", 30)
    kw.setdefault("timeout_s", 30)
    return WorkerAdapter(f"hostile-{mode}", argv=argv, **kw)


def served(outcome, n: int) -> bool:
    return outcome.status == REFUSED and outcome.detail == f"served {n}"


@pytest.mark.parametrize("mode, needle", [
    ("junk-once", r"1 stray line\(s\) on stdout.*progress: 50% done"),
    ("junk-json-once", r"broke the protocol: 1 stray line.*\{\"ok\": true\}"),
    ("stale-id", r"broke the protocol: 1 stray line.*\"id\": "),
    ("not-object", r"broke the protocol.*\[1, 2\]"),
    ("ok-not-bool", r"broke the protocol.*\"ok\": \"yes\""),
    ("deep-json", r"broke the protocol: 1 stray line"),
    ("binary", r"broke the protocol.*garbage"),
    ("many-junk", r"1000 stray line\(s\).*and 995 more"),
])
def test_stray_output_is_recorded_and_the_channel_resynchronises(mode, needle):
    adapter = hostile(mode)
    try:
        assert served(adapter.run(_case(False)), 1)
        bad = adapter.run(_case(False))
        assert bad.status == ADAPTER_ERROR, bad.summary()
        assert re.search(needle, bad.detail, re.S), bad.detail[:600]
        again = adapter.run(_case(False))
        assert served(again, 3), f"the channel is out of step: {again.summary()}"
        assert adapter.process.starts == 1, "a protocol-2 worker is resynchronised, not restarted"
    finally:
        adapter.close()


def test_a_protocol_1_worker_is_restarted_after_stray_output():
    adapter = hostile("v1-junk-once")
    try:
        assert served(adapter.run(_case(False)), 1)
        bad = adapter.run(_case(False))
        assert bad.status == ADAPTER_ERROR and "progress: 50% done" in bad.detail, bad.summary()
        again = adapter.run(_case(False))
        assert served(again, 1) and adapter.process.starts == 2, again.summary()
    finally:
        adapter.close()


def test_an_unrequested_answer_is_taken_as_stray_before_the_next_request():
    # Without ids, {"ok": true} written after an answer would pass for the
    # answer to the next request: it is drained before that request is sent.
    adapter = hostile("v1-json-after")
    try:
        assert served(adapter.run(_case(False)), 1)
        assert served(adapter.run(_case(False)), 2)
        time.sleep(0.3)
        bad = adapter.run(_case(False))
        assert bad.status == ADAPTER_ERROR and "1 stray line(s)" in bad.detail, bad.summary()
        assert served(adapter.run(_case(False)), 1) and adapter.process.starts == 2
    finally:
        adapter.close()


def test_a_banner_before_hello_is_recorded_on_the_first_case():
    adapter = hostile("banner")
    try:
        first = adapter.run(_case(False))
        assert first.status == ADAPTER_ERROR and "Loading model weights" in first.detail
        assert served(adapter.run(_case(False)), 2)
    finally:
        adapter.close()


@pytest.mark.parametrize("mode, status, needle", [
    ("huge-line", ADAPTER_ERROR, r"more than 1048576 bytes on stdout without a newline"),
    ("close-stdout", CRASHED, r"closed its stdout during run and went on running"),
    ("exit-on-run", CRASHED, r"worker died during run \(exit code 3\)"),
    ("negative-outputs", ADAPTER_ERROR, r"unreadable result: .*'n_outputs' is -1"),
    ("string-outputs", ADAPTER_ERROR, r"unreadable result: .*out0: dtype <U1"),
])
def test_a_broken_run_is_recorded_and_the_next_case_runs(mode, status, needle):
    adapter = hostile(mode)
    try:
        assert served(adapter.run(_case(False)), 1)
        bad = adapter.run(_case(False))
        assert bad.status == status and re.search(needle, bad.detail), bad.summary()
        assert adapter.run(_case(False)).status == REFUSED
    finally:
        adapter.close()


@pytest.mark.parametrize("mode, status", [("no-hello", TIMEOUT), ("hello-garbage", ADAPTER_ERROR)])
def test_a_worker_that_never_says_hello_times_out_at_start(mode, status):
    # Garbage instead of a hello is a protocol break first, a timeout second.
    adapter = hostile(mode, start_timeout_s=2)
    try:
        out = adapter.run(_case(False))
        assert out.status == status and "start-up within 2 s" in out.detail, out.summary()
    finally:
        adapter.close()


def test_garbage_capabilities_are_a_worker_error():
    adapter = hostile("bad-capabilities")
    try:
        with pytest.raises(WorkerError, match="no capabilities in"):
            adapter.capabilities()
    finally:
        adapter.close()


def test_the_memory_limit_covers_a_wrapped_workers_whole_tree():
    # bash -c starts the worker, which starts the process that eats memory:
    # two levels below the process the suite started.
    adapter = hostile("eat-in-child", wrapper=True, memory_limit_mb=400)
    try:
        assert served(adapter.run(_case(False)), 1)
        out = adapter.run(_case(False))
        assert out.status == CRASHED and "out of memory" in out.detail, out.summary()
        assert "process tree exceeded 400 MB" in out.detail
    finally:
        adapter.close()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_timeout_kills_the_workers_grandchildren_too():
    adapter = hostile("orphan-and-hang", timeout_s=3)
    try:
        assert served(adapter.run(_case(False)), 1)
        out = adapter.run(_case(False))
        assert out.status == TIMEOUT, out.summary()
        pid = int(re.search(r"grandchild (\d+)", out.detail).group(1))
        deadline = time.monotonic() + 5
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pid), "the grandchild in its own session outlived the timeout"
    finally:
        adapter.close()


CONTROLLER = """
import sys, numpy as np
sys.path.insert(0, {root!r})
from tests.test_worker import _case
from convlstm_conformance.worker import WorkerAdapter
adapter = WorkerAdapter("hang", "tests.faulty_adapters:Hangs", start_timeout_s=60, timeout_s=600)
assert adapter.run(_case(False)).status == "ok"
print(adapter.process.proc.pid, adapter._tmp.name, flush=True)
adapter.run(_case(True))
"""


def test_a_killed_controller_leaves_no_worker_and_no_temp_directory():
    controller = subprocess.Popen([sys.executable, "-c", CONTROLLER.format(root=str(ROOT))],
                                  stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        pid, tmp = controller.stdout.readline().split()
        pid = int(pid)
        time.sleep(0.5)                  # the hanging case is under way
        assert _alive(pid) and os.path.isdir(tmp)
        controller.send_signal(signal.SIGKILL)
        controller.wait(10)
        deadline = time.monotonic() + 10
        while (_alive(pid) or os.path.exists(tmp)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pid), "the worker outlived its controller"
        assert not os.path.exists(tmp), f"{tmp} outlived its controller"
    finally:
        if controller.poll() is None:
            controller.kill()
            controller.wait()


# -- the options the command line sets ---------------------------------------

def test_worker_options_take_arguments_then_environment_then_defaults():
    env = {"CONVLSTM_WORKER_TIMEOUT": "7", "CONVLSTM_WORKER_START_TIMEOUT": "9",
           "CONVLSTM_WORKER_MEMORY_MB": "0"}
    opts = registry.worker_options(environ=env)
    assert (opts.timeout_s, opts.start_timeout_s, opts.memory_limit_mb) == (7.0, 9.0, None)
    opts = registry.worker_options(timeout_s=3, environ=env)
    assert opts.timeout_s == 3.0 and opts.start_timeout_s == 9.0
    opts = registry.worker_options(environ={})
    assert (opts.timeout_s, opts.start_timeout_s, opts.memory_limit_mb) == (120.0, 300.0, 8192.0)


@pytest.mark.parametrize("kwargs, env, message", [
    ({}, {"CONVLSTM_WORKER_TIMEOUT": "soon"}, r"CONVLSTM_WORKER_TIMEOUT='soon' is not a number"),
    ({}, {"CONVLSTM_WORKER_START_TIMEOUT": "0"}, r"CONVLSTM_WORKER_START_TIMEOUT must be a positive"),
    ({}, {"CONVLSTM_WORKER_MEMORY_MB": "-5"}, r"CONVLSTM_WORKER_MEMORY_MB must be a number of MB"),
    ({"timeout_s": float("inf")}, {}, r"timeout_s must be a positive number of seconds"),
    ({"memory_limit_mb": True}, {}, r"memory_limit_mb must be"),
])
def test_bad_worker_options_name_the_option(kwargs, env, message):
    with pytest.raises(ValueError, match=message):
        registry.worker_options(environ=env, **kwargs)


def test_create_passes_worker_options_to_commands_and_isolated_entries(monkeypatch):
    monkeypatch.setenv("CONVLSTM_WORKER_START_TIMEOUT", "11")
    adapter = registry.create(f"command:x={sys.executable} {HOSTILE} good", timeout_s=5,
                              memory_limit_mb=0)
    try:
        assert (adapter.timeout_s, adapter.process.start_timeout_s,
                adapter.process.memory_limit_mb) == (5.0, 11.0, None)
    finally:
        adapter.close()
    entry = registry.AdapterEntry("oracle", "convlstm_conformance.adapters.oracle:NumpyOracle",
                                  isolate=True)
    adapter = entry.create(registry.worker_options(timeout_s=4, memory_limit_mb=100))
    try:
        assert adapter.timeout_s == 4.0 and adapter.process.memory_limit_mb == 100.0
    finally:
        adapter.close()


# -- the line parsers ---------------------------------------------------------

@pytest.mark.parametrize("line, want", [
    (b'{"ok": true, "id": 3}', {"ok": True, "id": 3}),
    (b'{"ok": false, "id": 3, "error": "x"}', {"ok": False, "id": 3, "error": "x"}),
    (b'{"ok": true, "id": 2}', None),          # another request's answer
    (b'{"ok": true, "id": true}', None),       # a boolean is not an id
    (b'{"ok": true}', None),                   # no id from a worker that echoes them
    (b'{"ok": 1, "id": 3}', None),
    (b'[true]', None),
    (b'progress 50%', None),
    (b'\xff\xfe', None),
    (b'[' * 100_000, None),
])
def test_parse_reply(line, want):
    assert parse_reply(line, 3, strict_ids=True) == want


def test_parse_reply_accepts_a_reply_without_id_from_a_protocol_1_worker():
    assert parse_reply(b'{"ok": true}', 3, strict_ids=False) == {"ok": True}


@pytest.mark.parametrize("line, needle", [
    (b"not json", "not JSON"),
    (b"[1]", "JSON list, not an object"),
    (b'{"id": 1}', "no string 'op'"),
    (b'{"op": "run", "id": "1"}', "'id' must be an integer"),
    (b"\xff", "not UTF-8"),
    (b"[" * 100_000, "not JSON"),
    (b" " * (2 << 20), "request line of"),
])
def test_parse_request_refuses_with_a_reason(line, needle):
    with pytest.raises(ProtocolError, match=re.escape(needle)):
        parse_request(line)


def test_the_worker_answers_a_malformed_request_and_keeps_serving():
    proc = subprocess.Popen([sys.executable, "-m", "convlstm_conformance.worker",
                             "convlstm_conformance.adapters.oracle:NumpyOracle", "{}"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT)
    try:
        hello = json.loads(proc.stdout.readline())
        assert hello["protocol"] == 2
        proc.stdin.write(b'not json\n{"op": "versions", "id": 7}\n')
        proc.stdin.flush()
        bad, good = json.loads(proc.stdout.readline()), json.loads(proc.stdout.readline())
        assert bad["ok"] is False and "not JSON" in bad["error"]
        assert good == {"ok": True, "versions": good["versions"], "id": 7}
    finally:
        proc.stdin.close()
        proc.wait(10)
