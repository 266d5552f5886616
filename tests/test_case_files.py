"""Case and outcome files are data: no pickle, clear errors when corrupt."""
import json
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
    with pytest.raises(CaseFileError, match=r"inputs: dtype object not allowed"):
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


# --------------------------------------------------------------------------
# What the loaders hold to: the protocol's own facts, checked against the spec

from convlstm_conformance import model  # noqa: E402
from convlstm_conformance.spec import load as load_spec  # noqa: E402


def test_dtype_names_are_the_specs():
    spec = load_spec()
    assert set(model.DTYPES) == set(spec.dtypes), "model.DTYPES and the spec's dtypes drifted"


def test_required_config_keys_are_the_specs_required_arguments():
    spec = load_spec()
    required = {a.name for a in spec.constructor_arguments() if a.required}
    assert set(model.REQUIRED_CONFIG) == required


def _write_npz(path, meta: dict, **arrays):
    np.savez(path, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    return path


def test_big_endian_and_fortran_order_arrays_load_as_native(tmp_path):
    case = _case()
    arrays = case.arrays()
    arrays["inputs"] = np.asfortranarray(arrays["inputs"]).astype(">f8")
    path = _write_npz(tmp_path / "c.npz", case.meta(), **arrays)
    back = Case.load(path)
    assert back.inputs.dtype == np.float64 and back.inputs.dtype.isnative
    np.testing.assert_array_equal(back.inputs, case.inputs)


def test_a_compressed_archive_loads(tmp_path):
    case = _case()
    np.savez_compressed(tmp_path / "c.npz", __meta__=model._json_bytes(case.meta()),
                        **case.arrays())
    np.testing.assert_array_equal(Case.load(tmp_path / "c.npz").kernel, case.kernel)


def test_loaded_arrays_are_writable(tmp_path):
    # Strategies and adapters modify case arrays in place.
    back = Case.load(_case().save(tmp_path / "c.npz"))
    back.inputs[0, 0, 0, 0, 0] = 1.0


def test_a_zip_bomb_is_refused_before_it_is_inflated(tmp_path):
    import tracemalloc
    from tests.hostile_corpus import deflate_bomb, zip_bytes
    path = tmp_path / "bomb.npz"
    size = 1200 << 20                          # 1.2 GiB of zeros, a few kilobytes on disk
    path.write_bytes(zip_bytes([("__meta__.npy", b"", 0),
                                ("inputs.npy", deflate_bomb(size), 8, size)]))
    assert path.stat().st_size < 8 << 20
    with zipfile.ZipFile(path) as z:           # a genuine bomb: it inflates to its size
        with z.open("inputs.npy") as member:
            assert len(member.read(64 << 20)) == 64 << 20
    tracemalloc.start()
    try:
        with pytest.raises(CaseFileError, match=r"more than the limit MAX_TOTAL_BYTES"):
            Case.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"refusing the bomb allocated {peak} bytes"


def test_outcome_round_trip_keeps_followups_weights_and_error(tmp_path):
    out = Outcome(status="ok", outputs=[np.ones((1, 2))], structure="tensor", dtypes=["float32"],
                  weights={"kernel": np.zeros((1, 1, 1, 4))},
                  followup_outputs=[[np.ones((1, 2))], []], detail="x", duration_s=0.5)
    out.save(tmp_path / "o.npz")
    back = Outcome.load(tmp_path / "o.npz")
    assert [len(f) for f in back.followup_outputs] == [1, 0]
    assert back.weights["kernel"].shape == (1, 1, 1, 4) and back.duration_s == 0.5
