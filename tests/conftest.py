"""Shared fixtures: the Hypothesis profile, the GPU runtime, seeded random problems."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import zlib

# Before any Runtime exists: fill every output buffer with NaN before each dispatch, so an
# output element that no kernel writes fails every comparison.
os.environ.setdefault("Q4GSW_POISON_OUTPUTS", "1")
# Never pick up the user's autotuning cache: tests see default routing unless they tune.
os.environ["Q4GSW_CACHE_DIR"] = tempfile.mkdtemp(prefix="q4gsw-test-cache-")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

import q4gsw  # noqa: E402

from .utils import random_problem  # noqa: E402

settings.register_profile(
    "q4gsw",
    deadline=None,
    max_examples=50,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("q4gsw")


@pytest.fixture(scope="session")
def runtime():
    """The process's q4gsw Runtime; skips without an adapter unless Q4GSW_REQUIRE_ADAPTER=1."""
    try:
        return q4gsw.get_runtime()
    except q4gsw.DeviceError as exc:
        if os.environ.get("Q4GSW_REQUIRE_ADAPTER") == "1":
            pytest.fail(f"Q4GSW_REQUIRE_ADAPTER=1 but no WebGPU adapter: {exc}")
        pytest.skip(f"no WebGPU adapter: {exc}")


@pytest.fixture
def rng(request):
    """A numpy Generator seeded from the test's node id: fresh per test, reproducible."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture
def make_problem(rng):
    """Factory of random problems (see tests.utils.random_problem) drawn from the test's rng."""

    def make(m, n, k, group_size, **kwargs):
        return random_problem(rng, m, n, k, group_size, **kwargs)

    return make


@pytest.fixture
def fake_caps(runtime):
    """Context manager that temporarily replaces fields of runtime.caps (restored after).

    Capabilities is frozen, so the runtime gets a dataclasses.replace'd copy. Weights used
    inside must be fresh: their GPU chunks are cached per runtime.
    """

    @contextlib.contextmanager
    def patch(**changes):
        saved = runtime.caps
        runtime.caps = dataclasses.replace(saved, **changes)
        try:
            yield runtime.caps
        finally:
            runtime.caps = saved

    return patch


@pytest.fixture
def fake_limits(runtime, fake_caps):
    """fake_caps for limits: fake_limits(max_storage_buffer_binding_size=256) ('_' for '-')."""

    def patch(**limits):
        merged = {**runtime.caps.limits, **{name.replace("_", "-"): value for name, value in limits.items()}}
        return fake_caps(limits=merged)

    return patch


@pytest.fixture
def no_new_buffers(runtime):
    """Context manager asserting that its block creates no GPU buffer."""

    @contextlib.contextmanager
    def check():
        before = runtime.buffers.created
        try:
            yield
        finally:
            assert runtime.buffers.created == before, "an error path created a GPU buffer"

    return check
