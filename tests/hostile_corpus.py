"""A corpus of hostile inputs, one per way a user (or an attacker) can hand
the suite something broken: spec files, case files, result files, cases the
judge must refuse, adapters returning garbage, worker protocol lines, history
databases and result records.

Each entry builds its input in a temporary directory and says what must
happen: a documented error whose message matches a pattern (and names the
file, for files), or a clean result.  ``tests/test_hostile_inputs.py`` runs
them all under a time and memory bound; workers that misbehave as whole
processes are in ``tests/test_worker.py`` (they need subprocesses).
"""
from __future__ import annotations

import io
import json
import os
import sqlite3
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tests.test_spec_loader import MINIMAL

#: ``expect`` of an input that must be handled without any error.
CLEAN = None


@dataclass(frozen=True)
class Hostile:
    name: str
    kind: str        # spec, case, result, judge, adapter, reply, request, history, records
    build: Callable[[Path], Any]
    expect: str | None      # a pattern the error message must match, or CLEAN

    @property
    def id(self) -> str:
        return f"{self.kind}-{self.name}"


CORPUS: list[Hostile] = []


def hostile(kind: str, name: str, expect: str | None):
    def register(build):
        CORPUS.append(Hostile(name, kind, build, expect))
        return build
    return register


# --------------------------------------------------------------------------
# Builders


def write(tmp: Path, name: str, data: bytes | str) -> Path:
    path = tmp / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def minimal_with(old: str, new: str) -> str:
    assert MINIMAL.count(old) == 1, old
    return MINIMAL.replace(old, new)


def good_case():
    from convlstm_conformance.model import Case
    rng = np.random.default_rng(5)
    return Case(config={"filters": 2, "kernel_size": [3, 3], "padding": "same",
                        "return_state": True},
                inputs=rng.uniform(-1, 1, (1, 2, 4, 4, 3)), kernel=rng.uniform(-.3, .3, (3, 3, 3, 8)),
                recurrent_kernel=rng.uniform(-.3, .3, (3, 3, 2, 8)), bias=np.zeros(8),
                dtype="float32", case_id="hostile")


def npz(tmp: Path, meta: Any, name: str = "f.npz", **arrays) -> Path:
    """An archive of ``arrays`` and ``meta`` (a dict as JSON, or raw bytes)."""
    raw = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    path = tmp / name
    np.savez(path, __meta__=np.frombuffer(raw, np.uint8), **arrays)
    return path


def case_file(tmp: Path, meta_changes: dict | None = None, drop: tuple = (), **arrays) -> Path:
    """The good case with metadata fields replaced and arrays replaced or added."""
    case = good_case()
    meta = {**case.meta(), **(meta_changes or {})}
    for key in drop:
        meta.pop(key, None)
    files = {k: v for k, v in {**case.arrays(), **arrays}.items() if v is not None}
    return npz(tmp, meta, **files)


def config_with(**changes) -> dict:
    config = dict(good_case().config)
    for key, value in changes.items():
        if value is DROP:
            config.pop(key)
        else:
            config[key] = value
    return {"config": config}


DROP = object()


def result_file(tmp: Path, meta_changes: dict | None = None, **arrays) -> Path:
    meta = {"status": "ok", "n_outputs": 1, "structure": "tensor", "dtypes": ["float32"],
            "error": None, "detail": "", "duration_s": 0.1, "n_followup_outputs": []}
    meta.update(meta_changes or {})
    files = {"out0": np.zeros((1, 4, 4, 2)), **arrays}
    return npz(tmp, meta, **{k: v for k, v in files.items() if v is not None})


def npy_bytes(header: dict | str, data: bytes = b"", version: bytes = b"\x01\x00") -> bytes:
    """A .npy member with any header text (numpy's writer refuses bad ones)."""
    text = header if isinstance(header, str) else repr(header)
    text = text.ljust(118) + "\n"
    return b"\x93NUMPY" + version + struct.pack("<H", len(text)) + text.encode("latin1") + data


def zip_bytes(members: list[tuple], declared: dict | None = None, flags: int = 0) -> bytes:
    """A zip written by hand: ``members`` are (name, data, method), or (name,
    deflated body, 8, size) for a body compressed already; ``declared``
    overrides a member's uncompressed size as the headers state it."""
    out, central = io.BytesIO(), io.BytesIO()
    for name, data, method, *raw_size in members:
        body = data
        if raw_size:
            data = b""           # the CRC of what is never read is left 0
        elif method == 8:
            c = zlib.compressobj(6, zlib.DEFLATED, -15)
            body = c.compress(data) + c.flush()
        size = (declared or {}).get(name, raw_size[0] if raw_size else len(data))
        name_b = name.encode()
        offset = out.tell()
        out.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, flags, method, 0, 0x21,
                              zlib.crc32(data), len(body), size, len(name_b), 0))
        out.write(name_b + body)
        central.write(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, flags, method, 0, 0x21,
                                  zlib.crc32(data), len(body), size, len(name_b), 0, 0, 0, 0, 0,
                                  offset) + name_b)
    cd = central.getvalue()
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members), len(cd),
                      out.tell(), 0)
    return out.getvalue() + cd + end


def meta_member(meta: dict) -> bytes:
    raw = json.dumps(meta).encode()
    return npy_bytes({"descr": "|u1", "fortran_order": False, "shape": (len(raw),)}, raw)


def deflate_bomb(size: int) -> bytes:
    """A raw deflate stream of ``size`` zero bytes, built from one compressed
    megabyte repeated (full flushes make the blocks independent)."""
    block = 1 << 20
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = c.compress(bytes(block)) + c.flush(zlib.Z_FULL_FLUSH)
    return piece * (size // block) + c.flush()


# --------------------------------------------------------------------------
# Spec files


SPEC_MARK = r"SpecError"


def _spec(name: str, expect: str, text: str | bytes):
    hostile("spec", name, expect)(lambda tmp: write(tmp, "spec.yaml", text))


_spec("deep-flow-sequence", r":3: YAML syntax: nesting deeper than 32 levels",
      minimal_with("layer: Tiny\n", "layer: Tiny\nx: " + "[" * 20_000 + "]" * 20_000 + "\n"))
_spec("deep-flow-mapping", r"nesting deeper than 32 levels",
      minimal_with("layer: Tiny\n", "layer: Tiny\nx: " + "{a: " * 5_000 + "1" + "}" * 5_000 + "\n"))
_spec("deep-block-sequence", r"nesting deeper than 32 levels",
      "x:\n" + "".join(" " * i + "-\n" for i in range(600)))
_spec("deep-block-mapping", r"nesting deeper than 32 levels",
      "".join(" " * i + "k:\n" for i in range(600)) + " " * 600 + "k: 1\n")
_spec("deep-compact-sequence", r":1: YAML syntax: nesting deeper than 32 levels",
      "- " * 20_000 + "1\n")
_spec("billion-laughs", r"expands to more than 100000 nodes once its aliases are followed",
      "\n".join(["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
                + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]))
_spec("alias-mapping-laughs", r"expands to more than 100000 nodes",
      "\n".join(["m0: &m0 {a: 1, b: 2, c: 3, d: 4}"]
                + [f"m{i}: &m{i} {{a: *m{i - 1}, b: *m{i - 1}, c: *m{i - 1}, d: *m{i - 1}}}"
                   for i in range(1, 12)]))
_spec("recursive-alias", r"found a recursive alias", "a: &x [1, *x]\n")
_spec("recursive-alias-in-mapping", r"found a recursive alias", "a: &x {k: *x}\n")
_spec("nul-byte", r":2: YAML: unacceptable character NUL",
      minimal_with("layer: Tiny\n", "layer: Ti\0ny\n"))
_spec("bell-character", r"unacceptable character #x0007",
      minimal_with("layer: Tiny\n", "layer: Ti\x07ny\n"))
_spec("escape-character", r"unacceptable character #x001b", "layer: \x1b[31mred\n")
_spec("oversized", r"larger than 1048576 bytes \(limit MAX_SPEC_BYTES\)",
      MINIMAL + "#" * (1 << 20))
_spec("not-utf8", r":2: cannot read: not UTF-8", b"spec_version: 1\nlayer: \xff\xfe\n")
_spec("utf16", r"cannot read: not UTF-8", MINIMAL.encode("utf-16"))
_spec("empty-file", r"the spec must be a mapping at top level", "")
_spec("top-level-list", r"the spec must be a mapping at top level", "- a\n- b\n")
_spec("duplicate-key", r"duplicate key 'layer'", minimal_with("layer: Tiny\n", "layer: Tiny\nlayer: Two\n"))
_spec("unhashable-key", r"unhashable mapping key", "? [a, b]\n: 1\n")
_spec("tab-indentation", r"YAML syntax", "a:\n\tb: 1\n")
_spec("python-object-tag", r"YAML syntax: could not determine a constructor for the tag",
      minimal_with("layer: Tiny\n", "layer: !!python/object/apply:os.system ['touch /tmp/pwned']\n"))
_spec("python-name-tag", r"could not determine a constructor",
      minimal_with("layer: Tiny\n", "layer: !!python/name:os.system\n"))
_spec("binary-title", r"is not of type 'string'",
      minimal_with('title: "padding"', "title: !!binary aGVsbG8="))
_spec("set-in-focus", r"SpecError|not of type",
      minimal_with("focus: {padding: [same]}", "focus: {padding: !!set {same: null}}"))
_spec("huge-unknown-key", r"unknown key: .*\.\.\.\(\d+ characters\)\.\.\.",
      minimal_with("layer: Tiny\n", "layer: Tiny\n" + "k" * 1000 + ": 1\n"))
_spec("huge-title", r"is not of type 'string'",
      minimal_with('title: "padding"', "title: [" + "x" * 200_000 + "]"))
_spec("exponent-tower-forbids", r"expression crosses a bound: .*past 1024 bits",
      minimal_with('forbids: "filters > 8"', 'forbids: "((filters ** 64) ** 64) ** 64 > 8"'))
_spec("exponent-tower-on-dims", r"expression crosses a bound",
      minimal_with('forbids: "filters > 8"', 'forbids: "(((rows ** 64) ** 64) ** 64) ** 64 > 8"'))
_spec("exponent-tower-derived", r"expression crosses a bound",
      minimal_with('pad: "lower(padding)"\n', 'pad: "lower(padding)"\n  big: "filters ** 64"\n'
                   '  bigger: "big ** 64"\n  biggest: "bigger ** 64"\n'))
_spec("product-chain-derived", r"expression crosses a bound: .*product past 1024 bits",
      minimal_with('pad: "lower(padding)"\n', 'pad: "lower(padding)"\n'
                   + "".join(f'  p{i}: "{"p" + str(i - 1) if i else "filters + 1"} * '
                             f'{"p" + str(i - 1) if i else "filters + 1"}"\n' for i in range(14))))
_spec("sequence-growth-derived", r"expression crosses a bound: .*more than 10000 items",
      minimal_with('pad: "lower(padding)"\n', 'pad: "lower(padding)"\n  s0: "(filters,) * 5000"\n'
                   + "".join(f'  s{i}: "s{i - 1} + s{i - 1}"\n' for i in range(1, 20))))
_spec("string-repetition", r"repetition too large",
      minimal_with('forbids: "filters > 8"', "forbids: \"len('x' * 100000 * filters) > 8\""))
_spec("string-formatting", r"bad expression: string formatting with % is not allowed",
      minimal_with('forbids: "filters > 8"', "forbids: \"len('%99999999d' % filters) > 8\""))
_spec("long-expression", r"bad expression: expression of \d+ characters is too long",
      minimal_with('forbids: "filters > 8"', 'forbids: "' + "-" * 5000 + 'filters > 8"'))
_spec("deep-expression", r"bad expression: expression nested \d+ levels deep",
      minimal_with('forbids: "filters > 8"', 'forbids: "' + "not " * 300 + 'filters"'))
_spec("deep-parentheses", r"bad expression: syntax error",
      minimal_with('forbids: "filters > 8"', 'forbids: "' + "(" * 300 + "filters" + ")" * 300 + '"'))
_spec("huge-integer-literal", r"bad expression: integer literal of \d+ bits",
      minimal_with('forbids: "filters > 8"', 'forbids: "filters > ' + "9" * 1000 + '"'))
_spec("complex-literal", r"complex literal not allowed",
      minimal_with('forbids: "filters > 8"', 'forbids: "filters > 8j"'))
_spec("import-call", r"call to \"__import__\('os'\).system\" not allowed",
      minimal_with('forbids: "filters > 8"', "forbids: \"__import__('os').system('id')\""))
_spec("dunder-attribute", r"Attribute not allowed",
      minimal_with('when: "pad == \'valid\'"', 'when: "().__class__.__base__"'))
_spec("lambda", r"call to 'lambda: 1' not allowed", minimal_with('forbids: "filters > 8"', 'forbids: "(lambda: 1)()"'))
_spec("comprehension", r"not allowed",
      minimal_with('forbids: "filters > 8"', 'forbids: "[x for x in range(10**9)]"'))
_spec("catastrophic-pattern", r"has a repetition inside a repetition",
      minimal_with('match: "(?i)filters", phase: construct}', 'match: "(a+)+b", phase: construct}'))
_spec("catastrophic-alternation", r"has an alternation inside a repetition",
      minimal_with('match: "(?i)filters", phase: construct}', 'match: "(a|aa)*b", phase: construct}'))
_spec("overlong-pattern", r"message pattern of 1000 characters is too long",
      minimal_with('match: "(?i)filters", phase: construct}',
                   'match: "' + "a" * 1000 + '", phase: construct}'))
_spec("invalid-pattern", r"bad message pattern",
      minimal_with('match: "(?i)filters", phase: construct}', 'match: "(unclosed", phase: construct}'))
hostile("spec", "directory-as-spec", r"cannot read")(lambda tmp: tmp)
hostile("spec", "missing-file", r"file not found")(lambda tmp: tmp / "absent.yaml")


# --------------------------------------------------------------------------
# Case files (Case.load)


def _case(name: str, expect: str | None):
    return hostile("case", name, expect)


_case("plain-text", r"not a zip archive of \.npy arrays: it starts with b'conv'")(
    lambda tmp: write(tmp, "f.npz", "convlstm case, honest"))
_case("empty-file", r"not a zip archive")(lambda tmp: write(tmp, "f.npz", b""))
_case("random-bytes", r"not a zip archive")(
    lambda tmp: write(tmp, "f.npz", np.random.default_rng(0).bytes(4096)))
_case("pk-then-garbage", r"unreadable npz")(lambda tmp: write(tmp, "f.npz", b"PK\x03\x04" + b"\0" * 64))
_case("bare-npy", r"not a zip archive")(lambda tmp: write(tmp, "f.npz", npy_bytes(
    {"descr": "<f8", "fortran_order": False, "shape": (1,)}, bytes(8))))
_case("pickle-bytes", r"not a zip archive")(
    lambda tmp: write(tmp, "f.npz", b"\x80\x04\x95\x00cos\nsystem\n(S'id'\ntR."))
_case("zip-bomb-declared", r"members decompress to 1288490188 bytes, more than the limit "
                           r"MAX_TOTAL_BYTES")(
    lambda tmp: write(tmp, "f.npz", zip_bytes([("inputs.npy", bytes(1000), 8)],
                                              declared={"inputs.npy": 1_288_490_188})))
_case("zip-bomb-lying", r"unreadable npz \(BadZipFile|header declares")(
    # Declares 4 KiB, inflates to 64 MiB: reading stops at the declared size.
    lambda tmp: write(tmp, "f.npz", _lying_bomb()))


def _lying_bomb() -> bytes:
    header = npy_bytes({"descr": "<f8", "fortran_order": False, "shape": (384,)})
    body = header + bytes((64 << 20) - len(header))
    raw = zip_bytes([("inputs.npy", body, 8)], declared={"inputs.npy": len(header) + 384 * 8})
    return raw


_case("many-members", r"more than the limit MAX_MEMBERS = 256")(
    lambda tmp: write(tmp, "f.npz", zip_bytes([(f"a{i}.npy", b"", 0) for i in range(300)])))
_case("member-not-npy", r"member 'evil.py' is not a \.npy array")(
    lambda tmp: write(tmp, "f.npz", zip_bytes([("evil.py", b"import os", 0)])))
_case("member-directory", r"is not a \.npy array")(
    lambda tmp: write(tmp, "f.npz", zip_bytes([("dir/", b"", 0)])))
_case("member-twice", r"member 'inputs.npy' appears more than once")(
    lambda tmp: write(tmp, "f.npz", zip_bytes([("inputs.npy", b"", 0), ("inputs.npy", b"", 0)])))
_case("unknown-compression", r"unreadable npz \(NotImplementedError")(
    lambda tmp: write(tmp, "f.npz", zip_bytes([("inputs.npy", b"abc", 99)])))
_case("encrypted-member", r"unreadable npz \(RuntimeError")(
    lambda tmp: write(tmp, "f.npz", zip_bytes([("inputs.npy", b"abc", 0)], flags=1)))
_case("header-terabytes", r"inputs: header declares 8000000000000 bytes of data .* more than the "
                          r"limit MAX_ARRAY_BYTES")(
    lambda tmp: write(tmp, "f.npz", zip_bytes([("inputs.npy", npy_bytes(
        {"descr": "<f8", "fortran_order": False, "shape": (1000000, 1000000)}), 0)])))
_case("header-overflowing-shape", r"more than the limit MAX_ARRAY_BYTES")(
    lambda tmp: write(tmp, "f.npz", zip_bytes([("inputs.npy", npy_bytes(
        {"descr": "<f8", "fortran_order": False, "shape": (2 ** 62, 2 ** 62)}), 0)])))
_case("header-negative-shape", r"shape \(-1, 5\) not allowed")(
    lambda tmp: write(tmp, "f.npz", zip_bytes([("inputs.npy", npy_bytes(
        {"descr": "<f8", "fortran_order": False, "shape": (-1, 5)}), 0)])))
_case("header-20-dimensions", r"not allowed \(at most 8 non-negative dimensions\)")(
    lambda tmp: write(tmp, "f.npz", zip_bytes([("inputs.npy", npy_bytes(
        {"descr": "<f8", "fortran_order": False, "shape": (1,) * 20}, bytes(8)), 0)])))
_case("header-object-dtype", r"inputs: dtype object not allowed")(
    lambda tmp: write(tmp, "f.npz", zip_bytes([("inputs.npy", npy_bytes(
        {"descr": "|O", "fortran_order": False, "shape": (1,)}, bytes(8)), 0)])))
_case("header-structured-dtype", r"not allowed")(
    lambda tmp: write(tmp, "f.npz", zip_bytes([("inputs.npy", npy_bytes(
        "{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (1,), }", bytes(8)), 0)])))
_case("header-code", r"not a \.npy array")(
    lambda tmp: write(tmp, "f.npz", zip_bytes([("inputs.npy", npy_bytes(
        "__import__('os').system('id')"), 0)])))
_case("header-deep-nesting", r"not a \.npy array")(
    lambda tmp: write(tmp, "f.npz", zip_bytes([("inputs.npy", npy_bytes(
        "{'descr': '<f8', 'fortran_order': False, 'shape': " + "(" * 3000 + ")" * 3000 + "}"), 0)])))
_case("header-version-3", r"\.npy format version \(3, 0\) is not supported")(
    lambda tmp: write(tmp, "f.npz", zip_bytes([("inputs.npy", npy_bytes(
        {"descr": "<f8", "fortran_order": False, "shape": (1,)}, bytes(8), b"\x03\x00"), 0)])))
_case("data-short-of-header", r"header declares 80 bytes of data .* the member holds 8")(
    lambda tmp: write(tmp, "f.npz", zip_bytes([("inputs.npy", npy_bytes(
        {"descr": "<f8", "fortran_order": False, "shape": (10,)}, bytes(8)), 0)])))
_case("data-past-header", r"header declares 8 bytes of data .* the member holds 800")(
    lambda tmp: write(tmp, "f.npz", zip_bytes([("inputs.npy", npy_bytes(
        {"descr": "<f8", "fortran_order": False, "shape": (1,)}, bytes(800)), 0)])))
_case("truncated-archive", r"unreadable npz")(
    lambda tmp: write(tmp, "f.npz", good_case().save(tmp / "g.npz").read_bytes()[:700]))
_case("no-metadata", r"no metadata record")(lambda tmp: _np_savez(tmp, inputs=np.zeros(1)))
_case("metadata-not-uint8", r"__meta__ must be 1-D uint8")(
    lambda tmp: _np_savez(tmp, __meta__=np.zeros(4)))
_case("metadata-2d", r"__meta__ must be 1-D uint8")(
    lambda tmp: _np_savez(tmp, __meta__=np.zeros((2, 2), np.uint8)))
_case("metadata-not-utf8", r"corrupt metadata")(lambda tmp: npz(tmp, b"\xff\xfe{}"))
_case("metadata-not-json", r"corrupt metadata")(lambda tmp: npz(tmp, b"{config: 1"))
_case("metadata-a-list", r"metadata is not a mapping")(lambda tmp: npz(tmp, b"[1, 2]"))
_case("metadata-deep", r"JSON nested deeper than the limit MAX_JSON_DEPTH|nested \d+ levels")(
    lambda tmp: npz(tmp, b'{"config": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"))
_case("metadata-moderately-deep", r"JSON nested 41 levels, more than the limit MAX_JSON_DEPTH")(
    lambda tmp: npz(tmp, b'{"config": ' + b"[" * 40 + b"]" * 40 + b"}"))
_case("metadata-huge", r"metadata of 2097152 bytes, more than the limit MAX_META_BYTES")(
    lambda tmp: npz(tmp, b" " * (2 << 20)))
_case("metadata-big-integer", r"corrupt metadata")(
    lambda tmp: npz(tmp, b'{"config": {"filters": ' + b"9" * 5000 + b"}}"))
_case("config-missing", r"not a case file \(missing metadata field 'config'\)")(
    lambda tmp: case_file(tmp, drop=("config",)))
_case("config-not-mapping", r"'config' must be dict, got list")(
    lambda tmp: case_file(tmp, {"config": [1, 2]}))
_case("config-missing-filters", r"'config' has no 'filters', a required argument")(
    lambda tmp: case_file(tmp, config_with(filters=DROP)))
_case("config-missing-kernel-size", r"'config' has no 'kernel_size'")(
    lambda tmp: case_file(tmp, config_with(kernel_size=DROP)))
_case("config-value-mapping", r"\['padding'\] is dict")(
    lambda tmp: case_file(tmp, config_with(padding={"evil": 1})))
_case("config-value-huge-integer", r"\['filters'\] is an integer beyond")(
    lambda tmp: case_file(tmp, config_with(filters=10 ** 30)))
_case("config-value-nan", r"\['dropout'\] is nan, not a finite number")(
    lambda tmp: case_file(tmp, config_with(dropout=float("nan"))))
_case("config-value-deep-list", r"nested deeper than 2")(
    lambda tmp: case_file(tmp, config_with(strides=[[[1]]])))
_case("config-value-long-string", r"string over 1000 characters")(
    lambda tmp: case_file(tmp, config_with(padding="s" * 5000)))
_case("training-not-bool", r"'training' must be bool, got str 'yes'")(
    lambda tmp: case_file(tmp, {"training": "yes"}))
_case("dtype-unknown", r"'dtype' is 'float8', not one of")(
    lambda tmp: case_file(tmp, {"dtype": "float8"}))
_case("dtype-not-string", r"'dtype' must be str, got int")(lambda tmp: case_file(tmp, {"dtype": 32}))
_case("case-id-not-string", r"'case_id' must be str")(lambda tmp: case_file(tmp, {"case_id": [1]}))
_case("masking-value-string", r"'masking_value' must be a finite number")(
    lambda tmp: case_file(tmp, {"masking_value": "zero"}))
_case("roundtrip-unknown", r"'roundtrip' is 'pickle', not one of")(
    lambda tmp: case_file(tmp, {"roundtrip": "pickle"}))
_case("unknown-dims-unknown", r"'unknown_dims' holds str 'depth'")(
    lambda tmp: case_file(tmp, {"unknown_dims": ["depth"]}))
_case("unknown-metadata-field", r"unknown metadata field 'exec'")(
    lambda tmp: case_file(tmp, {"exec": "rm -rf /"}))
_case("followups-not-list", r"'followups' must be list")(
    lambda tmp: case_file(tmp, {"followups": {"reset": True}}))
_case("followups-bad-entry", r"'followups' holds .*each entry is")(
    lambda tmp: case_file(tmp, {"followups": [{"reset": "no"}]}))
_case("followups-too-many", r"more than the limit MAX_FOLLOWUPS")(
    lambda tmp: case_file(tmp, {"followups": [{"reset": False}] * 100}))
_case("followup-array-missing", r"followup0_inputs is missing")(
    lambda tmp: case_file(tmp, {"followups": [{"reset": False}]}))
_case("followup-array-unlisted", r"unknown member 'followup0_inputs' \(its follow-up is not listed")(
    lambda tmp: case_file(tmp, followup0_inputs=np.zeros((1, 2, 4, 4, 3))))
_case("unknown-member", r"unknown member 'payload'")(
    lambda tmp: case_file(tmp, payload=np.zeros(3)))
_case("inputs-missing", r"not a case file \(missing array 'inputs'\)")(
    lambda tmp: _np_savez(tmp, __meta__=np.frombuffer(json.dumps(good_case().meta()).encode(),
                                                       np.uint8)))
_case("inputs-complex", r"inputs: dtype complex not allowed")(
    lambda tmp: case_file(tmp, inputs=np.ones((1, 2, 4, 4, 3)) * (1 + 2j)))
_case("inputs-strings", r"inputs: dtype <U1 not allowed")(
    lambda tmp: case_file(tmp, inputs=np.array([["a"]])))
_case("inputs-float32", r"inputs: dtype float32, the protocol says float64")(
    lambda tmp: case_file(tmp, inputs=np.ones((1, 2, 4, 4, 3), np.float32)))
_case("inputs-int64", r"inputs: dtype int64, the protocol says float64")(
    lambda tmp: case_file(tmp, inputs=np.ones((1, 2, 4, 4, 3), np.int64)))
_case("inputs-nan", r"inputs: 1 NaN or infinite value\(s\), the first at \(0, 1, 2, 3, 0\)")(
    lambda tmp: case_file(tmp, inputs=_spoiled(np.nan, (0, 1, 2, 3, 0))))
_case("inputs-inf", r"inputs: 1 NaN or infinite value")(
    lambda tmp: case_file(tmp, inputs=_spoiled(-np.inf, (0, 0, 0, 0, 0))))
_case("kernel-inf", r"kernel: \d+ NaN or infinite")(
    lambda tmp: case_file(tmp, kernel=np.full((3, 3, 3, 8), np.inf)))
_case("zero-time-steps", r"inputs: shape \(1, 0, 4, 4, 3\) has an empty dimension")(
    lambda tmp: case_file(tmp, inputs=np.zeros((1, 0, 4, 4, 3))))
_case("kernel-3d", r"kernel: 3-D array of shape \(3, 3, 24\), the protocol says 4-D")(
    lambda tmp: case_file(tmp, kernel=np.zeros((3, 3, 24))))
_case("mask-float", r"mask: dtype float64, the protocol says bool")(
    lambda tmp: case_file(tmp, mask=np.ones((1, 2))))
_case("half-initial-state", r"initial_h and initial_c come together")(
    lambda tmp: case_file(tmp, initial_h=np.zeros((1, 4, 4, 2))))
_case("nonexistent", r"no such file")(lambda tmp: tmp / "absent.npz")
_case("directory", r"not a regular file")(lambda tmp: tmp)
_case("fifo", r"not a regular file")(lambda tmp: _fifo(tmp))
_case("bzip2-compressed", CLEAN)(lambda tmp: _recompressed(tmp, 12))
_case("lzma-compressed", CLEAN)(lambda tmp: _recompressed(tmp, 14))


def _np_savez(tmp: Path, **arrays) -> Path:
    np.savez(tmp / "f.npz", **arrays)
    return tmp / "f.npz"


def _spoiled(value: float, at: tuple) -> np.ndarray:
    x = good_case().inputs.copy()
    x[at] = value
    return x


def _fifo(tmp: Path) -> Path:
    path = tmp / "pipe.npz"
    os.mkfifo(path)
    return path


def _recompressed(tmp: Path, method: int) -> Path:
    import zipfile
    source = good_case().save(tmp / "g.npz")
    path = tmp / "f.npz"
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(path, "w", method) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    return path


# --------------------------------------------------------------------------
# Result files (Outcome.load, what a worker writes)


def _result(name: str, expect: str | None):
    return hostile("result", name, expect)


_result("negative-outputs", r"'n_outputs' is -1; it counts returned tensors, 0 to 16")(
    lambda tmp: result_file(tmp, {"n_outputs": -1}))
_result("million-outputs", r"'n_outputs' is 1000000")(
    lambda tmp: result_file(tmp, {"n_outputs": 1_000_000}))
_result("outputs-count-string", r"'n_outputs' must be int, got str")(
    lambda tmp: result_file(tmp, {"n_outputs": "1"}))
_result("outputs-count-bool", r"'n_outputs' must be int, got bool")(
    lambda tmp: result_file(tmp, {"n_outputs": True}))
_result("outputs-count-float", r"'n_outputs' must be int, got float")(
    lambda tmp: result_file(tmp, {"n_outputs": 1.0}))
_result("status-missing", r"not a outcome file \(missing metadata field 'status'\)")(
    lambda tmp: npz(tmp, {"n_outputs": 0}))
_result("status-unknown", r"unknown status 'exploded'")(
    lambda tmp: result_file(tmp, {"status": "exploded"}))
_result("status-not-string", r"'status' must be str")(lambda tmp: result_file(tmp, {"status": 1}))
_result("raised-without-error", r"'error' is missing; a raised outcome says what was raised")(
    lambda tmp: result_file(tmp, {"status": "raised", "n_outputs": 0}, out0=None))
_result("error-extra-key", r"'error' has unknown key '__class__'")(
    lambda tmp: result_file(tmp, {"status": "raised", "n_outputs": 0, "error": {
        "type": "ValueError", "message": "m", "phase": "call", "mro": [], "__class__": "x"}},
        out0=None))
_result("error-bad-phase", r"'phase' is 'later', not one of")(
    lambda tmp: result_file(tmp, {"status": "raised", "n_outputs": 0, "error": {
        "type": "ValueError", "message": "m", "phase": "later", "mro": []}}, out0=None))
_result("error-not-mapping", r"'error' must be dict, got str")(
    lambda tmp: result_file(tmp, {"error": "ValueError"}))
_result("error-mro-not-strings", r"'mro' holds int 1")(
    lambda tmp: result_file(tmp, {"status": "raised", "n_outputs": 0, "error": {
        "type": "E", "message": "m", "phase": "call", "mro": [1]}}, out0=None))
_result("dtypes-not-list", r"'dtypes' must be list")(
    lambda tmp: result_file(tmp, {"dtypes": "float32"}))
_result("dtypes-not-strings", r"'dtypes' holds int 32")(lambda tmp: result_file(tmp, {"dtypes": [32]}))
_result("structure-unknown", r"'structure' is 'tuple', not one of")(
    lambda tmp: result_file(tmp, {"structure": "tuple"}))
_result("detail-not-string", r"'detail' must be str, got list")(
    lambda tmp: result_file(tmp, {"detail": ["a"]}))
_result("duration-string", r"'duration_s' must be a finite number, got str")(
    lambda tmp: result_file(tmp, {"duration_s": "fast"}))
_result("duration-nan", r"'duration_s' must be a finite number, got float nan")(
    lambda tmp: result_file(tmp, {"duration_s": float("nan")}))
_result("followup-counts-negative", r"'n_followup_outputs' must list at most 64 counts")(
    lambda tmp: result_file(tmp, {"n_followup_outputs": [-1]}))
_result("followup-counts-not-list", r"'n_followup_outputs' must be list")(
    lambda tmp: result_file(tmp, {"n_followup_outputs": 3}))
_result("followup-output-missing", r"metadata promises 'followup0_out0'")(
    lambda tmp: result_file(tmp, {"n_followup_outputs": [1]}))
_result("output-missing", r"metadata promises 'out1'")(lambda tmp: result_file(tmp, {"n_outputs": 2}))
_result("output-unpromised", r"unknown member 'out1' \(n_outputs is 1")(
    lambda tmp: result_file(tmp, out1=np.zeros(2)))
_result("output-strings", r"out0: dtype <U3 not allowed")(
    lambda tmp: result_file(tmp, out0=np.array(["0.5"])))
_result("output-complex", r"out0: dtype complex not allowed")(
    lambda tmp: result_file(tmp, out0=np.ones(3) * 1j))
_result("output-float32", r"out0: dtype float32, the protocol says float64")(
    lambda tmp: result_file(tmp, out0=np.ones(3, np.float32)))
_result("gradient-unknown", r"unknown member 'grad_everything'")(
    lambda tmp: result_file(tmp, grad_everything=np.ones(3)))
_result("unknown-metadata-field", r"unknown metadata field 'verdict'")(
    lambda tmp: result_file(tmp, {"verdict": "pass"}))
_result("non-finite-output", CLEAN)(   # overflow is a result; the judge compares it as such
    lambda tmp: result_file(tmp, out0=np.array([np.inf, np.nan])))


# --------------------------------------------------------------------------
# Cases the judge must refuse: each loads as a file, and the oracle refuses
# it before computing (the strictest reader in the suite).


def _judge(name: str, expect: str, **changes):
    def build(tmp: Path):
        from convlstm_conformance.model import Case
        case = Case.load(good_case().save(tmp / "c.npz"))
        for key, value in changes.items():
            if key.startswith("config_"):
                case.config[key[len("config_"):]] = value
            else:
                setattr(case, key, value)
        return case
    hostile("judge", name, expect)(build)


_judge("bias-wrong-length", r"bias has shape \(1,\), expected \(4 \* filters,\) = \(8,\)",
       bias=np.zeros(1))
_judge("bias-too-long", r"bias has shape \(9,\)", bias=np.zeros(9))
_judge("kernel-wrong-filters", r"do not match kernel", kernel=np.zeros((3, 3, 3, 4)))
_judge("kernel-wrong-channels", r"do not match kernel", kernel=np.zeros((3, 3, 2, 8)))
_judge("recurrent-wrong", r"do not match kernel", recurrent_kernel=np.zeros((3, 3, 3, 8)))
_judge("state-wrong-rows", r"initial_state shapes",
       initial_state=(np.zeros((1, 5, 4, 2)), np.zeros((1, 5, 4, 2))))
_judge("mask-wrong-shape", r"mask must have shape \(batch, timesteps\) = \(1, 2\)",
       mask=np.ones((1, 3), bool))
_judge("dropout-mask-wrong", r"dropout_mask has shape", training=True,
       dropout_mask=np.ones((4, 1, 4, 4, 1)))
_judge("cotangent-wrong", r"cotangent has shape", cotangent=np.ones((1, 4, 4, 3)))
_judge("filters-float", r"filters must be a positive integer, got 2.5", config_filters=2.5)
_judge("kernel-size-string", r"kernel_size must be an integer or a pair", config_kernel_size="3")
_judge("dilation-zero", r"dilation_rate must be positive", config_dilation_rate=0)
_judge("use-bias-string", r"use_bias must be true or false", config_use_bias="false")
_judge("activation-unknown", r"unknown activation 'tanhh'", config_activation="tanhh")
_judge("state-rank", r"initial_state shapes", initial_state=(np.zeros((4, 4, 2)),
                                                            np.zeros((4, 4, 2))))


# --------------------------------------------------------------------------
# Adapters returning garbage (Guarded): the expected messages of test_guarded


def _adapters() -> None:
    from tests import faulty_adapters
    from tests.test_guarded import NEEDLES
    for cls in faulty_adapters.GARBAGE:
        hostile("adapter", cls.__name__, NEEDLES[cls.__name__])(lambda tmp, cls=cls: cls)


_adapters()


# --------------------------------------------------------------------------
# Worker protocol lines: a reply the suite reads, a request the worker reads


def _reply(name: str, line: bytes):
    hostile("reply", name, CLEAN)(lambda tmp: line)


for _name, _line in {
    "progress-text": b"Epoch 1/10 ....", "empty": b"", "json-null": b"null",
    "json-number": b"42", "json-string": b'"ok"', "ok-missing": b'{"id": 7}',
    "ok-string": b'{"ok": "true", "id": 7}', "id-stale": b'{"ok": true, "id": 6}',
    "id-string": b'{"ok": true, "id": "7"}', "id-bool": b'{"ok": true, "id": true}',
    "no-id": b'{"ok": true}', "deep": b"[" * 200_000, "binary": b"\x00\xff\xfe\x80",
    "nan-literal": b'{"ok": NaN, "id": 7}', "huge-line": b"x" * (2 << 20),
    "big-number": b'{"ok": true, "id": ' + b"9" * 5000 + b"}",
}.items():
    _reply(_name, _line)


def _request(name: str, line: bytes, expect: str):
    hostile("request", name, expect)(lambda tmp: line)


_request("not-json", b"run the case", r"request is not JSON")
_request("array", b'["run"]', r"request is a JSON list, not an object")
_request("no-op", b'{"case": "x"}', r"request has no string 'op'")
_request("op-number", b'{"op": 3}', r"request has no string 'op'")
_request("id-float", b'{"op": "run", "id": 1.5}', r"request 'id' must be an integer")
_request("deep", b'{"op": ' + b"[" * 200_000, r"request is not JSON")
_request("not-utf8", b'{"op": "\xff"}', r"request is not UTF-8")
_request("huge", b" " * (2 << 20), r"request line of 2097152 bytes")


# --------------------------------------------------------------------------
# History databases


def _history(name: str, expect: str):
    return hostile("history", name, expect)


def _good_db(tmp: Path) -> Path:
    db = tmp / "h.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.executemany("INSERT INTO t VALUES (?)", [("x" * 500,)] * 50)
        conn.execute("DROP TABLE t")
    from convlstm_conformance.reports import history
    history.runs(db)            # creates the schema
    return db


def _edited_db(tmp: Path, *sql: str) -> Path:
    db = _good_db(tmp)
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO runs (run_id, started, started_utc, finished, profile, "
                     "command, environment, totals, source, added_at, seq) VALUES ('r1', NULL, "
                     "NULL, NULL, '', '', '{}', '{}', '', 'now', 1)")
        conn.execute("INSERT INTO adapters VALUES ('r1', 'a', 'ok', '{}')")
        for statement in sql:
            conn.execute(statement)
    return db


_history("text-file", r"not a usable history database \(file is not a database\)")(
    lambda tmp: write(tmp, "h.sqlite", "CREATE TABLE runs;"))
_history("truncated-header", r"not a usable history database")(
    lambda tmp: write(tmp, "h.sqlite", b"SQLite format 3\0" + b"\x10\x00"))
_history("corrupt-pages", r"corrupt history database|not a usable history database")(
    lambda tmp: _corrupt_pages(_edited_db(tmp)))
_history("negative-version", r"history schema version -1 is not one this tool knows")(
    lambda tmp: _edited_db(tmp, "PRAGMA user_version = -1"))
_history("future-version", r"history schema version 99 is not one this tool knows")(
    lambda tmp: _edited_db(tmp, "PRAGMA user_version = 99"))
_history("foreign-tables", r"an SQLite database, but not a results history")(
    lambda tmp: _foreign(tmp))
_history("totals-not-json", r"run r1: totals is not JSON")(
    lambda tmp: _edited_db(tmp, "UPDATE runs SET totals = '{oops'"))
_history("totals-deep-json", r"run r1: totals is not JSON")(
    lambda tmp: _edited_db(tmp, "UPDATE runs SET totals = '" + "[" * 100_000 + "'"))
_history("totals-not-object", r"run r1: totals is not a JSON object")(
    lambda tmp: _edited_db(tmp, "UPDATE runs SET totals = '[1]'"))
_history("clauses-not-json", r"run r1: clauses is not JSON")(
    lambda tmp: _edited_db(tmp, "UPDATE runs SET clauses = '[oops'"))
_history("clauses-not-ids", r"run r1: clauses is not a list of clause ids")(
    lambda tmp: _edited_db(tmp, "UPDATE runs SET clauses = '[1, {}]'"))
_history("table-dropped", r"no such table: adapters")(
    lambda tmp: _edited_db(tmp, "DROP TABLE adapters"))
_history("directory", r"not a usable history database")(lambda tmp: _dir(tmp))


def _corrupt_pages(db: Path) -> Path:
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    data[page:] = bytes([0x5A]) * (len(data) - page)
    db.write_bytes(bytes(data))
    return db


def _foreign(tmp: Path) -> Path:
    db = tmp / "h.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
    return db


def _dir(tmp: Path) -> Path:
    path = tmp / "h.sqlite"
    path.mkdir()
    return path


# --------------------------------------------------------------------------
# Results directories (the report's records)


def _records(name: str, expect: str | None):
    return hostile("records", name, expect)


def _results_dir(tmp: Path, run: bytes | None, *lines: bytes) -> Path:
    root = tmp / "out"
    root.mkdir()
    if run is not None:
        (root / "run.json").write_bytes(run)
    (root / "results-gw0.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return root


_GOOD = json.dumps({"clause": "SEM-STEP", "adapter": "a", "outcome": "passed"}).encode()
_records("deep-line", CLEAN)(lambda tmp: _results_dir(tmp, None, b"[" * 100_000, _GOOD))
_records("deep-run-json", CLEAN)(lambda tmp: _results_dir(tmp, b"{" * 100_000, _GOOD))
_records("binary-lines", CLEAN)(lambda tmp: _results_dir(tmp, None, bytes(range(256)), _GOOD))
_records("wrong-types", CLEAN)(lambda tmp: _results_dir(tmp, None, json.dumps(
    {"clause": "X", "adapter": "a", "outcome": "failed", "errors": {"o": 5}, "worst_ratio": "big",
     "not_judged": {"count": "many"}, "expected": "x", "examples": -1}).encode(), _GOOD))
_records("huge-numbers", CLEAN)(lambda tmp: _results_dir(tmp, None, json.dumps(
    {"clause": "X", "adapter": "a", "outcome": "failed", "worst_ratio": 1e308 * 10}).encode()))
_records("nothing-readable", r"nothing to report")(lambda tmp: _empty_dir(tmp))


def _empty_dir(tmp: Path) -> Path:
    (tmp / "out").mkdir()
    return tmp / "out"


KINDS = ("spec", "case", "result", "judge", "adapter", "reply", "request", "history", "records")
