"""Tests of the half-precision KV cache (CausalLM(kv_cache="f16"), q4gsw.llm.ops with float16
caches): rope_kv's rounding to f16 and attention over f16 caches against float64 references
that use the same f16 values, on fresh random data, outputs poisoned; whole tiny models against
the f32 path, the float64 reference and transformers; and the FeatureError where the device
lacks `shader-f16`."""

from __future__ import annotations

import numpy as np
import pytest

import q4gsw
from q4gsw.chain import Chain, empty, upload
from q4gsw.errors import ArgumentError, DTypeError, FeatureError
from q4gsw.llm import CausalLM, ops

from .test_llm_ops import attention_reference, rope_reference, rope_table, state_buffer

#: f16's unit roundoff: a value rounded to the nearest half is off by at most 2^-11 relative.
U16 = 2.0 ** -11
F16_NAN = np.uint16(0x7E00)


@pytest.fixture
def needs_f16(runtime):
    if not runtime.caps.has_f16:
        pytest.skip(f"{runtime.caps.adapter_name} has no shader-f16 (the FeatureError is tested without it)")


def f16_neighbours(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The halves just below and just above each float64 value (equal where it is one)."""
    h = x.astype(np.float16)
    lower = np.where(h.astype(np.float64) > x, np.nextafter(h, np.float16(-np.inf)), h)
    upper = np.where(h.astype(np.float64) < x, np.nextafter(h, np.float16(np.inf)), h)
    return lower, upper


def assert_rounded_to_f16(got: np.ndarray, want: np.ndarray) -> None:
    """Each half in `got` is one of the two halves adjacent to the float64 `want` (WGSL lets a
    conversion to f16 pick either; lavapipe rounds to nearest even)."""
    lower, upper = f16_neighbours(want)
    ok = (got == lower) | (got == upper)
    assert ok.all(), f"{np.count_nonzero(~ok)} of {got.size} halves are not a neighbour of the value"


def f16_cache(rng, shape, *, poison_from: int | None = None, poison_before: int = 0) -> np.ndarray:
    """Random halves of `shape` (kv_heads, positions, D); positions >= poison_from and
    < poison_before NaN (keys attention must never read)."""
    cache = rng.standard_normal(shape).astype(np.float16)
    bits = cache.view(np.uint16)
    if poison_from is not None:
        bits[:, poison_from:] = F16_NAN
    bits[:, :poison_before] = F16_NAN
    return cache


def f16_tensor(array: np.ndarray):
    t = empty(array.shape, dtype="float16")
    t.write(array)
    return t


@pytest.mark.usefixtures("needs_f16")
class TestRopeKvF16:
    @pytest.mark.parametrize(("rows", "pos", "heads", "kv", "d"), [(1, 0, 4, 2, 16), (1, 37, 4, 1, 32),
                                                                  (6, 5, 6, 2, 8), (3, 0, 2, 2, 64),
                                                                  (2, 45, 4, 2, 12)])
    def test_writes_halves(self, runtime, rng, rows, pos, heads, kv, d):
        """k rotated and v copied into float16 caches, each value one of the two halves next to
        the float64 reference; q (float32) exact as with a float32 cache; other positions untouched."""
        max_positions = 48
        qkv = (rng.standard_normal((rows, heads + 2 * kv, d)) * 3).astype(np.float32)
        table = rope_table(max_positions, d)
        k0 = f16_cache(rng, (kv, max_positions, d))
        v0 = f16_cache(rng, (kv, max_positions, d))
        with Chain() as chain:
            k_t, v_t = f16_tensor(k0), f16_tensor(v0)
            q = ops.rope_kv(chain, upload(qkv.reshape(rows, -1)), upload(table), state_buffer(runtime, pos), k_t, v_t,
                            q_heads=heads, kv_heads=kv, head_dim=d)
            chain.run()
            positions = np.arange(pos, pos + rows)
            np.testing.assert_allclose(q.numpy().reshape(rows, heads, d),
                                       rope_reference(qkv[:, :heads], table, positions), atol=1e-5)
            k, v = k_t.numpy(), v_t.numpy()
            assert k.dtype == np.float16 and k.shape == k0.shape
            assert_rounded_to_f16(k[:, positions], rope_reference(qkv[:, heads:heads + kv], table,
                                                                  positions).transpose(1, 0, 2))
            assert_rounded_to_f16(v[:, positions], qkv[:, heads + kv:].transpose(1, 0, 2).astype(np.float64))
            others = np.setdiff1d(np.arange(max_positions), positions)
            np.testing.assert_array_equal(k[:, others], k0[:, others])
            np.testing.assert_array_equal(v[:, others], v0[:, others])

    def test_clamps_to_largest_half(self, runtime):
        """Values beyond f16's range are stored as +-65504, not infinity."""
        d, kv, heads = 8, 1, 1
        qkv = np.zeros((1, heads + 2 * kv, d), np.float32)
        qkv[0, 2] = [1e6, -1e6, 7e4, -7e4, 65504.0, 1.0, 0.0, -2.5]  # the v head
        with Chain() as chain:
            k_t, v_t = f16_tensor(np.zeros((kv, 4, d), np.float16)), f16_tensor(np.zeros((kv, 4, d), np.float16))
            ops.rope_kv(chain, upload(qkv.reshape(1, -1)), upload(rope_table(4, d)), state_buffer(runtime, 2), k_t, v_t,
                        q_heads=heads, kv_heads=kv, head_dim=d)
            chain.run()
            assert v_t.numpy()[0, 2].tolist() == [65504.0, -65504.0, 65504.0, -65504.0, 65504.0, 1.0, 0.0, -2.5]


@pytest.mark.usefixtures("needs_f16")
class TestAttentionF16:
    @pytest.mark.parametrize(("rows", "pos", "heads", "kv", "d", "splits", "window"), [
        (1, 0, 4, 2, 16, 1, 0),       # one key
        (1, 100, 4, 2, 32, 1, 0),     # decode, one workgroup
        (1, 100, 4, 2, 32, 4, 0),     # decode split over workgroups (splits past pos are empty)
        (1, 200, 8, 2, 16, 4, 0),     # every 64-key split used
        (1, 150, 4, 4, 8, 8, 40),     # sliding window: leading splits empty
        (9, 0, 6, 3, 16, 1, 0),       # prefill from position 0
        (7, 70, 4, 1, 16, 1, 30),     # prefill continuing, with a window
        (130, 0, 2, 1, 4, 1, 0),      # more keys than a tile
        (1, 70, 8, 1, 64, 2, 0),      # 8 query heads a kv head (the most)
        (5, 3, 7, 1, 32, 1, 0),       # 7 query heads a kv head (Qwen2.5)
        (1, 60, 2, 1, 256, 1, 0),     # head_dim 256: one value lane
        (2, 40, 4, 2, 12, 1, 0),      # head_dim 12: 3 vec4 columns
    ])
    def test_matches_reference(self, runtime, rng, rows, pos, heads, kv, d, splits, window):
        """softmax(q k^T / sqrt(D)) v over float16 caches equals the float64 reference over the
        same halves to float32 accuracy (the f32 cache's tolerance); keys past the last query's
        position and before the window are NaN, so reading one would show."""
        max_positions = 256
        last = pos + rows - 1
        lo = max(0, pos + 1 - window) if window else 0  # the first query's window starts here
        q = rng.standard_normal((rows, heads, d)).astype(np.float32)
        k = f16_cache(rng, (kv, max_positions, d), poison_from=last + 1, poison_before=lo)
        v = f16_cache(rng, (kv, max_positions, d), poison_from=last + 1, poison_before=lo)
        with Chain() as chain:
            out = ops.attention(chain, upload(q.reshape(rows, -1)), f16_tensor(k), f16_tensor(v),
                                state_buffer(runtime, pos), kv_heads=kv, head_dim=d, splits=splits, split_keys=64,
                                window=window)
            chain.run()
            ref = attention_reference(q, k.astype(np.float64), v.astype(np.float64), np.arange(pos, pos + rows), window)
            got = out.numpy().reshape(rows, heads, d)
            assert np.isfinite(got).all()
            np.testing.assert_allclose(got, ref, rtol=1e-4, atol=2e-5)

    def test_mixed_dtypes_refused(self, runtime):
        """A float16 k_cache with a float32 v_cache is a DTypeError naming v_cache."""
        with Chain() as chain:
            q = upload(np.zeros((1, 16), np.float32))
            with pytest.raises(DTypeError, match="v_cache"):
                ops.attention(chain, q, empty((1, 8, 16), dtype="float16"), empty((1, 8, 16)),
                              state_buffer(runtime, 0), kv_heads=1, head_dim=16)


# --- the option's checks -------------------------------------------------------------------


def tiny_checkpoint(path):
    from q4gsw.llm import DecoderConfig, write_random_checkpoint

    config = DecoderConfig("LlamaForCausalLM", vocab_size=260, hidden_size=32, intermediate_size=64, num_layers=1,
                           num_heads=2, num_kv_heads=1, head_dim=16, max_position_embeddings=64)
    write_random_checkpoint(path, config, seed=0)
    return path


class TestFeatureError:
    def test_without_shader_f16(self, runtime, fake_caps, no_new_buffers, tmp_path):
        """kv_cache="f16" on a device without shader-f16 is a FeatureError naming kv_cache and the
        feature, from CausalLM and from load_model (before the checkpoint is read: a missing path
        is not looked at), before any GPU buffer exists."""
        from q4gsw.llm import load_checkpoint

        weights = load_checkpoint(tiny_checkpoint(tmp_path / "ckpt"), group_size=32)
        with fake_caps(features=runtime.caps.features - {"shader-f16"}), no_new_buffers():
            with pytest.raises(FeatureError, match="argument 'kv_cache'.*shader-f16") as err:
                CausalLM(weights, kv_cache="f16")
            assert (err.value.argument, err.value.feature, err.value.got) == ("kv_cache", "shader-f16", "'f16'")
            with pytest.raises(FeatureError, match="load_model: argument 'kv_cache'"):
                q4gsw.load_model(tmp_path / "no-such-checkpoint", kv_cache="f16")
            assert isinstance(err.value, q4gsw.Q4gswError) and isinstance(err.value, ArgumentError)

    def test_ops_refuse_f16_caches(self, runtime, fake_caps):
        """rope_kv and attention given float16 caches on a device without shader-f16 raise
        FeatureError naming k_cache."""
        k, v = empty((1, 8, 16), dtype="float16"), empty((1, 8, 16), dtype="float16")
        q = upload(np.zeros((1, 16), np.float32))
        qkv = upload(np.zeros((1, 48), np.float32))
        with fake_caps(features=runtime.caps.features - {"shader-f16"}), Chain() as chain:
            with pytest.raises(FeatureError, match="k_cache"):
                ops.rope_kv(chain, qkv, upload(rope_table(8, 16)), state_buffer(runtime, 0), k, v, q_heads=1,
                            kv_heads=1, head_dim=16)
            with pytest.raises(FeatureError, match="k_cache"):
                ops.attention(chain, q, k, v, state_buffer(runtime, 0), kv_heads=1, head_dim=16)

    @pytest.mark.parametrize("value", ["f8", "F16", "float16", None, 16])
    def test_bad_value(self, runtime, no_new_buffers, value):
        """Anything but "f32" or "f16" is an ArgumentError naming kv_cache, before any buffer."""
        with no_new_buffers(), pytest.raises(ArgumentError, match="argument 'kv_cache': expected 'f32' or 'f16'"):
            q4gsw.load_model("unused", kv_cache=value)

    def test_cli_without_shader_f16(self, tmp_path):
        """`q4gsw generate --kv-cache f16` on a device whose shader-f16 is turned off
        (Q4GSW_DISABLE_FEATURES) exits 2 with one line naming kv_cache and shader-f16."""
        import os
        import subprocess
        import sys

        path = tiny_checkpoint(tmp_path / "ckpt")
        env = {**os.environ, "Q4GSW_DISABLE_FEATURES": "shader-f16"}
        run = subprocess.run([sys.executable, "-m", "q4gsw", "generate", str(path), "--ids", "1,2,3",
                              "--max-new-tokens", "2", "--kv-cache", "f16"], env=env, capture_output=True, text=True,
                             timeout=600)
        assert run.returncode == 2, run.stderr
        assert run.stderr.count("\n") == 1 and "argument 'kv_cache'" in run.stderr and "shader-f16" in run.stderr


@pytest.mark.usefixtures("needs_f16")
class TestCommandLine:
    def test_generate_with_f16_cache(self, tmp_path, capsys):
        """`q4gsw generate PATH --kv-cache f16` streams the tokens load_model(kv_cache="f16")
        generates, then the tokens/s line."""
        from q4gsw import cli

        path = tiny_checkpoint(tmp_path / "ckpt")
        assert cli.main(["generate", str(path), "--ids", "5,6,7", "--max-new-tokens", "6", "--kv-cache", "f16"]) == 0
        out = capsys.readouterr().out
        model = q4gsw.load_model(path, kv_cache="f16")
        text = model.decode(model.generate([5, 6, 7], 6))
        assert text and text in out and "6 new tokens" in out
        model.release()
