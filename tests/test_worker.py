"""The worker boundary: a crash, a hang or an out-of-memory in an adapter is a
recorded outcome for that case, and the next case gets a fresh worker."""
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
