"""--adapter-command with a relative program path (``./mylstm-worker``) means
the caller's directory: the worker starts from there whatever the current
directory is when it starts, and the reproduction command of a failure
names the program absolutely, so it reproduces from any directory."""
import json
import shlex
import subprocess
import sys
from pathlib import Path

from convlstm_conformance import registry

ROOT = Path(__file__).resolve().parent.parent
IMPL = ROOT / "tests" / "external_impl.py"


def wrapper(directory: Path) -> Path:
    """An executable ``mylstm-worker`` in ``directory`` running the example
    implementation, as an author's build leaves one in their own directory."""
    path = directory / "mylstm-worker"
    path.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(IMPL))} \"$@\"\n")
    path.chmod(0o755)
    return path


def test_relative_program_resolved_where_it_was_named(tmp_path, monkeypatch):
    (tmp_path / "mine").mkdir()
    (tmp_path / "elsewhere").mkdir()
    wrapper(tmp_path / "mine")
    monkeypatch.chdir(tmp_path / "mine")
    adapter = registry.from_command("mylstm=./mylstm-worker")
    # The worker starts on the first request, after the directory changed.
    monkeypatch.chdir(tmp_path / "elsewhere")
    try:
        assert adapter.versions()["external-impl"] == "1.0"
    finally:
        adapter.close()


def test_absolute_command_keeps_what_needs_no_resolving(tmp_path):
    here = str(tmp_path)
    assert registry.absolute_command("m=./w --x 'a b'", here) == f"m={here}/w --x 'a b'"
    assert registry.absolute_command("m=bin/w", here) == f"m={here}/bin/w"
    for spec in ("m=/opt/w --x", "m=python3 impl.py", "no-equals-sign"):
        assert registry.absolute_command(spec, here) == spec


def test_suite_run_from_the_authors_directory_reproduces_from_anywhere(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    worker = wrapper(mine)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", str(ROOT / "conformance" / "test_numerics.py"), "-q",
         "-p", "no:cacheprovider", "--profile", "ci", "--adapters", "", "-k", "SEM-STEP",
         "--no-report", "--results-dir", "out",
         "--adapter-command", "mylstm=./mylstm-worker --wrong-forget-bias"],
        cwd=mine, capture_output=True, text=True, timeout=600)
    assert run.returncode == 1, run.stdout[-3000:]
    rec = [json.loads(line) for p in (mine / "out").glob("results-*.jsonl")
           for line in p.read_text().splitlines()][0]
    assert rec["outcome"] == "failed" and str(worker) in rec["repro"], rec.get("repro")
    # The reproduction, run from another directory, runs the same program
    # and reproduces the failure (exit 1), not "cannot create adapter" (2).
    argv = shlex.split(rec["repro"])
    assert argv[:4] == ["python", "-m", "convlstm_conformance", "repro"]
    argv[4] = str(mine / argv[4])        # the case file, under the relative --results-dir
    again = subprocess.run([sys.executable] + argv[1:], cwd=tmp_path, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 1, again.stdout[-2000:] + again.stderr[-2000:]
