"""Hypothesis's Redis example database, against a real redis-server.

Nightly campaigns on several machines share what they find through
``CONVLSTM_HYPOTHESIS_REDIS`` (core/profiles.py).  These tests start a
throw-away redis-server on a free local port (no persistence) and check that
the profile wiring yields a Redis database and that a failure found by one
campaign is replayed first by another one holding a fresh database object.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
import unittest

import pytest

redis = pytest.importorskip("redis")
pytest.importorskip("hypothesis.extra.redis")

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.extra.redis import RedisExampleDatabase  # noqa: E402

from convlstm_conformance import profiles  # noqa: E402
from convlstm_conformance.spec import load_cached  # noqa: E402
from convlstm_conformance.strategies import configs  # noqa: E402

PREFIX = b"convlstm-test:"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def redis_url():
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not on PATH (apt-get install -y redis-server)")
    port = _free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 15
        while True:
            try:
                if client.ping():
                    break
            except redis.exceptions.ConnectionError:
                pass
            if proc.poll() is not None:
                pytest.fail(f"redis-server exited with {proc.returncode}: "
                            f"{proc.stderr.read().decode(errors='replace')[-500:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"redis-server on port {port} did not answer PING within 15 s")
            time.sleep(0.05)
        client.close()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def server(redis_url):
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


def test_profile_database_follows_environment(monkeypatch, redis_url, server):
    monkeypatch.delenv("CONVLSTM_HYPOTHESIS_REDIS", raising=False)
    assert profiles.example_database() is None, \
        "without CONVLSTM_HYPOTHESIS_REDIS the profiles must keep Hypothesis's default database"
    monkeypatch.setenv("CONVLSTM_HYPOTHESIS_REDIS", redis_url)
    db = profiles.example_database()
    assert isinstance(db, RedisExampleDatabase), \
        f"CONVLSTM_HYPOTHESIS_REDIS={redis_url} gave {db!r}, expected a RedisExampleDatabase"
    # It must reach the server named, not merely be constructed.
    db.save(b"probe", b"value")
    assert list(db.fetch(b"probe")) == [b"value"], "a saved example was not fetched back"
    assert any(k.endswith(b"probe") for k in server.keys(b"*")), \
        f"the server at {redis_url} holds no key for the saved example: {server.keys(b'*')}"


# Everything but filters pinned: the shrinker has one thing to minimise.
PINNED = dict(focus={"kernel_size": [1], "strides": [1], "padding": ["valid"],
                     "data_format": ["channels_last"], "dilation_rate": [1],
                     "activation": ["tanh"], "recurrent_activation": ["sigmoid"],
                     "use_bias": [True], "return_sequences": [False], "return_state": [False],
                     "go_backwards": [False], "stateful": [False]},
              sizes={"batch": 1, "timesteps": 1, "rows": 1, "cols": 1, "channels": 1})


def _campaign(database, phases=tuple(Phase)):
    """A property that fails for filters >= 3; the same test each call, so the
    same database key."""
    calls: list[tuple[int, bool]] = []

    @settings(database=database, phases=phases, max_examples=20, deadline=None,
              derandomize=False, print_blob=False, suppress_health_check=list(HealthCheck))
    @given(drawn=configs(load_cached(), **PINNED))
    def few_filters(drawn):
        filters = drawn.config["filters"]
        calls.append((filters, filters < 3))
        assert filters < 3, f"filters={filters}"

    return few_filters, calls


def _database(url: str) -> RedisExampleDatabase:
    # A fresh client and database object: another machine, as far as Hypothesis knows.
    return RedisExampleDatabase(redis.Redis.from_url(url), key_prefix=PREFIX)


def test_campaigns_share_failures(redis_url, server):
    first, calls = _campaign(_database(redis_url))
    with pytest.raises(AssertionError, match="filters="):
        first()
    assert any(not ok for _, ok in calls), "the first campaign never hit the failing property"
    keys = server.keys(PREFIX + b"*")
    assert keys, "the first campaign stored nothing in Redis"

    # Another campaign, reuse phase only: it generates nothing, so failing at
    # all means the example came from the shared database, and first.
    second, replayed = _campaign(_database(redis_url), phases=(Phase.reuse,))
    with pytest.raises(AssertionError, match="filters="):
        second()
    assert replayed and not replayed[0][1], \
        f"the second campaign did not replay the stored failure first: calls {replayed}"
    # Shrunk in the first campaign: the smallest failing filters.
    assert replayed[0][0] == 3, f"replayed filters={replayed[0][0]}, expected the shrunk 3"


def test_reuse_alone_finds_nothing_in_an_empty_database(redis_url, server):
    # The control for the test above: without stored examples, reuse runs nothing.
    empty = RedisExampleDatabase(redis.Redis.from_url(redis_url), key_prefix=b"empty:")
    lone, calls = _campaign(empty, phases=(Phase.reuse,))
    with pytest.raises(unittest.SkipTest, match="no test cases"):
        lone()
    assert calls == [], f"reuse alone ran {calls} with an empty database"
