"""Case and outcome files are data: no pickle, clear errors when corrupt."""
import zipfile

import numpy as np
import pytest

from convlstm_conformance.model import Case, CaseFileError, ErrorInfo, Outcome


def _case():
    rng = np.random.default_rng(1)
    return Case(config={"filters": 2, "kernel_size": [3, 3], "padding": "same"},
                inputs=rng.random((1, 2, 4, 4, 3)), kernel=rng.random((3, 3, 3, 8)),
                recurrent_kernel=rng.random((3, 3, 2, 8)), bias=rng.random(8),
                initial_state=(rng.random((1, 4, 4, 2)), rng.random((1, 4, 4, 2))),
                mask=np.array([[True, False]]), training=True, dtype="float16", case_id="x-1")


def test_case_round_trip(tmp_path):
    case = _case()
    path = case.save(tmp_path / "c.npz")
    back = Case.load(path)
    assert back.config == case.config and back.dtype == "float16" and back.training
    for name, arr in case.arrays().items():
        np.testing.assert_array_equal(back.arrays()[name], arr, err_msg=name)


def test_outcome_round_trip(tmp_path):
    out = Outcome(status="raised", error=ErrorInfo("ValueError", "bad <b>", "construct", ["ValueError"]),
                  detail="d", grads={"kernel": np.ones(3)})
    out.save(tmp_path / "o.npz")
    back = Outcome.load(tmp_path / "o.npz")
    assert back.error.message == "bad <b>" and back.error.phase == "construct"
    np.testing.assert_array_equal(back.grads["kernel"], np.ones(3))


@pytest.mark.parametrize("content, needle", [
    (b"", "unreadable"),
    (b"not a zip at all", "unreadable"),
    (b"PK\x03\x04garbage", "unreadable"),
])
def test_corrupt_files_are_refused(tmp_path, content, needle):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(CaseFileError, match=needle):
        Case.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(CaseFileError, match="no such file"):
        Case.load(tmp_path / "absent.npz")


def test_pickled_arrays_are_refused(tmp_path):
    path = tmp_path / "pickle.npz"
    np.savez(path, inputs=np.array([{"evil": 1}], dtype=object),
             __meta__=np.frombuffer(b'{"config": {}}', dtype=np.uint8))
    with pytest.raises(CaseFileError, match="unreadable"):
        Case.load(path)


def test_metadata_must_be_json(tmp_path):
    path = tmp_path / "meta.npz"
    np.savez(path, inputs=np.zeros(1), __meta__=np.frombuffer(b"\xff\xfe", dtype=np.uint8))
    with pytest.raises(CaseFileError, match="corrupt metadata"):
        Case.load(path)
    np.savez(path, inputs=np.zeros(1))
    with pytest.raises(CaseFileError, match="no metadata"):
        Case.load(path)
    np.savez(path, inputs=np.zeros(1), __meta__=np.frombuffer(b'{"nothing": 1}', dtype=np.uint8))
    with pytest.raises(CaseFileError, match="not a case file"):
        Case.load(path)


def test_truncated_archive(tmp_path):
    path = _case().save(tmp_path / "t.npz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CaseFileError):
        Case.load(path)


def test_outcome_with_unknown_status_is_refused(tmp_path):
    Outcome(status="ok").save(tmp_path / "o.npz")
    with zipfile.ZipFile(tmp_path / "o.npz") as z:
        names = z.namelist()
    assert "__meta__.npy" in names
    np.savez(tmp_path / "o2.npz", __meta__=np.frombuffer(
        b'{"status": "exploded", "n_outputs": 0}', dtype=np.uint8))
    with pytest.raises(CaseFileError, match="unknown status"):
        Outcome.load(tmp_path / "o2.npz")
