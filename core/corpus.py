"""The regression corpus: each finding's minimal case, kept in the repository.

``conformance/corpus/index.yaml`` lists one entry per finding::

    - finding: tf-keras-1a2b3c4d        # the id of findings.json / docs/findings/
      adapter: tf-keras                 # the implementation it was found in
      clause: SEM-STEP                  # the clause that first showed it
      test: numerics                    # numerics or gradients
      case: tf-keras-1a2b3c4d.npz       # the case (no pickle: model.Case.load)
      conditions: "padding in ('same',)"   # triage's necessary conditions, or null

``conformance/test_corpus.py`` replays every case on every selected
implementation that claims its features, in every profile (``ci`` too):
one that conforms passes, a known divergence is an expected failure (its
expectation entry states the triaged conditions), and a fixed bug shows as
"an expected failure no longer fails".  :func:`add` copies a finding of a
campaign's findings.json into the corpus.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

import convlstm_conformance.suite as _suite

CORPUS_DIR = Path(_suite.__file__).resolve().parent / "corpus"
INDEX = "index.yaml"
TESTS = ("numerics", "gradients")


@dataclass(frozen=True)
class Entry:
    finding: str
    adapter: str
    clause: str
    test: str
    case: str
    conditions: str | None = None

    @property
    def path(self) -> Path:
        return CORPUS_DIR / self.case


def load_index(directory: Path = CORPUS_DIR) -> list[Entry]:
    """The corpus's entries; a malformed index is an error naming the entry."""
    path = Path(directory) / INDEX
    if not path.exists():
        return []
    doc = yaml.safe_load(path.read_text()) or []
    if not isinstance(doc, list):
        raise ValueError(f"{path}: expected a list of entries")
    out = []
    for i, item in enumerate(doc):
        if not isinstance(item, dict):
            raise ValueError(f"{path}: entry {i + 1} is not a mapping")
        try:
            entry = Entry(**item)
        except TypeError as exc:
            raise ValueError(f"{path}: entry {i + 1}: {exc}") from None
        if entry.test not in TESTS or "/" in entry.case or not entry.case.endswith(".npz"):
            raise ValueError(f"{path}: entry {i + 1}: test must be one of {TESTS} and case "
                             f"a .npz file name in the corpus folder")
        out.append(entry)
    return out


def add(finding: dict, directory: Path = CORPUS_DIR) -> Entry:
    """Copy a finding (one item of findings.json) into the corpus."""
    rep = next((f for f in finding["failures"] if f.get("case") == finding.get("case")),
               finding["failures"][0])
    triage = finding.get("triage") or {}
    if rep.get("case") is None or rep.get("test") not in TESTS:
        raise ValueError(f"{finding['id']}: no replayable case")
    entry = Entry(finding=finding["id"], adapter=finding["adapter"], clause=rep["clause"],
                  test=rep["test"], case=f"{finding['id']}.npz",
                  conditions=triage.get("when"))
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(rep["case"], directory / entry.case)
    entries = [e for e in load_index(directory) if e.finding != entry.finding] + [entry]
    (directory / INDEX).write_text(yaml.safe_dump(
        [dict(e.__dict__) for e in entries], sort_keys=False))
    return entry
