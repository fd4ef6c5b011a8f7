"""Tests for the autotuner (q4gsw.tools.tune), its cache (q4gsw.runtime.tuning_cache) and tuned routing."""

from __future__ import annotations

import json

import numpy as np
import pytest

import q4gsw
from q4gsw.chain import Chain
from q4gsw.kernels import KERNELS, Problem, select, tuning_bucket
from q4gsw.tools.tune import tune
from q4gsw.runtime.tuning_cache import cache_path, read_cache, write_cache

from .utils import assert_matches_reference


class TestTuningBucket:
    def test_rounds_m_up_to_a_power_of_two(self):
        """M is bucketed to the next power of two; K, N and group size stay exact."""
        assert tuning_bucket(Problem(3, 10, 64, 32)) == "m4_k64_n10_g32"
        assert tuning_bucket(Problem(1, 10, 64, 32)) == "m1_k64_n10_g32"
        assert tuning_bucket(Problem(64, 10, 64, 32)) == "m64_k64_n10_g32"


class TestSelectTuned:
    def test_uses_the_tuned_kernel_and_settings(self):
        """A cache entry for the bucket picks its kernel with its settings."""
        p = Problem(1, 4096, 4096, 128)
        tuned = {tuning_bucket(p): {"kernel": "decode_workgroup", "settings": {"features_per_workgroup": 8}}}
        spec = select(p, None, tuned=tuned)
        assert spec.name == "decode_workgroup" and spec.features(p) == 8

    def test_ignores_an_entry_whose_kernel_cannot_run(self):
        """A tuned kernel that does not support the problem falls back to default routing."""
        p = Problem(1, 100, 100, 128)  # K % 32 != 0: decode can't run it
        tuned = {tuning_bucket(p): {"kernel": "decode_subgroup", "settings": {}}}
        assert select(p, None, tuned=tuned).name == select(p, None).name == "general"

    def test_named_kernel_wins_over_tuning(self):
        """An explicit kernel= argument is never overridden by the cache."""
        p = Problem(1, 4096, 4096, 128)
        tuned = {tuning_bucket(p): {"kernel": "decode_workgroup", "settings": {}}}
        assert select(p, None, kernel="general", tuned=tuned).name == "general"

    def test_bad_settings_are_ignored(self):
        """Settings that make no sense leave the kernel's defaults in place."""
        spec = KERNELS["decode_subgroup"].with_settings({"features_per_workgroup": 7})
        assert spec.features_per_workgroup == KERNELS["decode_subgroup"].features_per_workgroup


class TestCache:
    def test_roundtrip_and_identity(self, runtime, tmp_path, monkeypatch):
        """Entries written for this adapter read back; a file for another driver is ignored."""
        monkeypatch.setenv("Q4GSW_CACHE_DIR", str(tmp_path))
        entry = {"m1_k64_n10_g32": {"kernel": "general", "settings": {}}}
        path = write_cache(runtime.caps, entry)
        assert read_cache(runtime.caps) == entry
        data = json.loads(path.read_text())
        data["identity"]["driver"] = "another driver"
        path.write_text(json.dumps(data))
        assert read_cache(runtime.caps) == {}
        path.write_text("{not json")
        assert read_cache(runtime.caps) == {}


class TestTune:
    def test_int8_tuned_apart(self, runtime, tmp_path, monkeypatch, rng):
        """tune(activations="int8") times only int8 kernels, caches them in the "_a8" bucket
        beside an f32 entry of the same shape, and linear(activations="int8") runs the winner."""
        monkeypatch.setenv("Q4GSW_CACHE_DIR", str(tmp_path))
        runtime.forget_tuning()
        m, k, n = 3, 256, 40
        f32 = tune([(m, k, n)], group_size=64, repeats=2, log=lambda *_: None)
        int8 = tune([(m, k, n)], group_size=64, repeats=2, activations="int8", log=lambda *_: None)
        p = Problem(m, n, k, 64)
        assert set(int8) == {tuning_bucket(p, "int8")} and set(f32) == {tuning_bucket(p)}
        assert int8[tuning_bucket(p, "int8")]["kernel"] in q4gsw.kernels.INT8_KERNELS
        assert set(runtime.tuned) >= {tuning_bucket(p), tuning_bucket(p, "int8")}
        pw = q4gsw.quantize(rng.standard_normal((n, k)).astype(np.float32), 64)
        x = rng.standard_normal((m, k)).astype(np.float32)
        spec = select(p, runtime.caps, tuned=runtime.tuned, activations="int8")
        assert spec.name == int8[tuning_bucket(p, "int8")]["kernel"]
        with q4gsw.profile() as prof:
            y = q4gsw.linear(x, pw, activations="int8")
        assert spec.key(p).label in {r["label"] for r in prof.rows()}
        exact = q4gsw.linear_reference(x, pw)
        assert np.abs(y - exact).max() < 5e-2 * np.abs(exact).max()

    def test_writes_cache_and_linear_uses_it(self, runtime, tmp_path, monkeypatch, rng):
        """tune() caches a winner per bucket; linear() then runs that kernel, correctly."""
        monkeypatch.setenv("Q4GSW_CACHE_DIR", str(tmp_path))
        runtime.forget_tuning()
        m, k, n = 2, 64, 48
        entries = tune([(m, k, n)], group_size=32, repeats=2, log=lambda *_: None)
        bucket = tuning_bucket(Problem(m, n, k, 32))
        assert set(entries) == {bucket}
        assert cache_path(runtime.caps).exists()
        assert runtime.tuned[bucket]["kernel"] == entries[bucket]["kernel"]
        w = rng.standard_normal((n, k)).astype(np.float32)
        pw = q4gsw.quantize(w, 32)
        x = rng.standard_normal((m, k)).astype(np.float32)
        with q4gsw.profile() as prof:
            y = q4gsw.linear(x, pw)
        assert [r["label"] for r in prof.rows()] == [f"linear_q4gsw/{entries[bucket]['kernel']}"]
        assert_matches_reference(y, x, pw)
        runtime.forget_tuning()

    @pytest.mark.parametrize(("kernel", "settings", "constant"), [
        ("decode_workgroup", {"features_per_workgroup": 8, "unpack": "imad"}, ("FEATURES", 8)),
        ("general", {}, ("WG", 64)),
    ])
    def test_tuned_choice_reaches_chain(self, runtime, tmp_path, monkeypatch, rng, kernel, settings, constant):
        """A cached choice (kernel and settings) is what Chain.linear records, as q4gsw.linear
        runs it, and the chain's result matches the reference."""
        monkeypatch.setenv("Q4GSW_CACHE_DIR", str(tmp_path))
        m, k, n = 3, 64, 40
        pw = q4gsw.quantize(rng.standard_normal((n, k)).astype(np.float32), 32)
        x = rng.standard_normal((m, k)).astype(np.float32)
        default = select(Problem(m, n, k, 32), runtime.caps)
        assert (default.name, default.settings()) != (kernel, settings)  # the cache must change the choice
        write_cache(runtime.caps, {tuning_bucket(Problem(m, n, k, 32)): {"kernel": kernel, "settings": settings}})
        runtime.forget_tuning()
        try:
            with Chain() as chain:
                x_in = chain.input((m, k))
                y = chain.linear(x_in, pw)
                [dispatch] = chain.dispatches
                assert dispatch.key.name == kernel and constant in dispatch.key.constants
                chain.run({x_in: x})
                assert_matches_reference(y.numpy(), x, pw)
            with q4gsw.profile() as prof:
                assert_matches_reference(q4gsw.linear(x, pw), x, pw)
            assert [r["label"] for r in prof.rows()] == [f"linear_q4gsw/{kernel}"]
        finally:
            runtime.forget_tuning()

    def test_disabled_by_environment(self, runtime, monkeypatch):
        """Q4GSW_TUNE=0 turns the cache off."""
        monkeypatch.setenv("Q4GSW_TUNE", "0")
        assert runtime.tuned is None
