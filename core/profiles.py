"""Hypothesis profiles for the conformance suite.

* ``ci``: derandomized and bounded, for framework CI: the same examples every
  run, so a red build means a new divergence, not a new draw.
* ``dev``: the default at a desk: random, a few more examples.
* ``nightly``: long random campaigns; share findings between machines through
  an example database (``CONVLSTM_HYPOTHESIS_REDIS=redis://host:port/db``,
  or a folder: ``CONVLSTM_HYPOTHESIS_DIR``, as ``convlstm-conformance campaign`` uses).

``CONVLSTM_EXAMPLES`` overrides max_examples of whichever profile is loaded;
``CONVLSTM_HYPOTHESIS_SEED`` seeds the random draws (core/campaign.py's shards).
"""
from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings

_COMMON = dict(
    deadline=None,   # frameworks compile on first call; time is not the contract
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture,
                           HealthCheck.differing_executors,
                           # Context.steer redraws examples inside known divergences.
                           HealthCheck.filter_too_much],
    print_blob=True,
)


def example_database():
    url = os.environ.get("CONVLSTM_HYPOTHESIS_REDIS")
    folder = os.environ.get("CONVLSTM_HYPOTHESIS_DIR")
    if folder and not url:
        # A campaign's own database: what one round learns, the next replays.
        from hypothesis.database import DirectoryBasedExampleDatabase
        return DirectoryBasedExampleDatabase(folder)
    if not url:
        return None
    import datetime
    from hypothesis.extra.redis import RedisExampleDatabase
    import redis
    # Findings outlive a release cycle; Hypothesis expires them after this.
    return RedisExampleDatabase(redis.Redis.from_url(url),
                                expire_after=datetime.timedelta(days=365))


def register() -> None:
    db = example_database()
    extra = {"database": db} if db is not None else {}
    settings.register_profile("ci", max_examples=8, derandomize=True, database=None,
                              phases=[Phase.explicit, Phase.generate, Phase.shrink], **_COMMON)
    settings.register_profile("dev", max_examples=25, **extra, **_COMMON)
    settings.register_profile("nightly", max_examples=1000, **extra, **_COMMON)


def seed_draws(seed: str | None) -> None:
    """Seed the random draws of every test of this process (a campaign's
    shard) without giving up the example database: ``--hypothesis-seed``
    would turn the database off (Hypothesis saves and replays nothing under
    a forced seed), so the engine's own generator is seeded instead."""
    if not seed:
        return
    import random
    from hypothesis import core
    core.threadlocal._hypothesis_global_random = random.Random(int(seed))


def load(name: str | None) -> None:
    register()
    seed_draws(os.environ.get("CONVLSTM_HYPOTHESIS_SEED"))
    name = name or os.environ.get("CONVLSTM_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
    settings.load_profile(name)
    n = os.environ.get("CONVLSTM_EXAMPLES")
    if n:
        settings.register_profile(f"{name}+n", settings(settings.get_profile(name),
                                                        max_examples=int(n)))
        settings.load_profile(f"{name}+n")
