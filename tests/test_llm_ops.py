"""Tests of q4gsw.llm.ops: each decoder op in a Chain against a float64 numpy reference, on
fresh random data, outputs poisoned before every run."""

from __future__ import annotations

import math

import numpy as np
import pytest

from q4gsw.chain import Chain, upload
from q4gsw.llm import ops
from q4gsw.tools.workload import random_weight


def state_buffer(runtime, pos: int, step: int = 0):
    """The uniform State {pos, step} the position-dependent ops read."""
    usage = runtime.wgpu.BufferUsage
    return runtime.buffers.upload(np.array([pos, step, 0, 0], np.uint32), usage.UNIFORM, "test/state")


def rope_table(max_positions: int, head_dim: int, theta: float = 10000.0) -> np.ndarray:
    """(max_positions, head_dim / 2, 2) float32 (cos, sin), as transformers computes them."""
    inv = (1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim)).astype(np.float32)
    freqs = np.arange(max_positions, dtype=np.float32)[:, None] * inv[None, :]
    return np.stack([np.cos(freqs), np.sin(freqs)], axis=-1).astype(np.float32)


def rope_reference(x: np.ndarray, table: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """rotate_half RoPE of x (rows, heads, D) at positions (rows,), float64."""
    half = x.shape[-1] // 2
    cos = table[positions, :, 0][:, None, :].astype(np.float64)
    sin = table[positions, :, 1][:, None, :].astype(np.float64)
    a, b = x[..., :half].astype(np.float64), x[..., half:].astype(np.float64)
    return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)


def attention_reference(q, k, v, positions, window=0):
    """q (rows, H, D), k/v (KV, P, D): causal grouped-query attention, float64."""
    rows, heads, d = q.shape
    group = heads // k.shape[0]
    out = np.zeros((rows, heads, d))
    for t in range(rows):
        lo = max(0, positions[t] + 1 - window) if window else 0
        keys = slice(lo, positions[t] + 1)
        for h in range(heads):
            s = k[h // group, keys].astype(np.float64) @ q[t, h].astype(np.float64) / math.sqrt(d)
            p = np.exp(s - s.max())
            out[t, h] = p @ v[h // group, keys].astype(np.float64) / p.sum()
    return out


def dequantized_f32(table) -> np.ndarray:
    """(N, K) float32 q * scale, rounded once as float32 (what a kernel computes)."""
    scale = table.scales[np.arange(table.in_features) // table.group_size, : table.out_features].T
    return table.unpack().astype(np.float32) * scale


class TestEmbedRows:
    @pytest.mark.parametrize(("vocab", "k", "gs"), [(50, 64, 32), (37, 96, 64), (64, 45, 16)])
    def test_matches_dequantized_rows(self, runtime, rng, vocab, k, gs):
        """Row ids[t] of the int4 table, dequantized, for every token (repeats and the last id too)."""
        table = random_weight(rng, vocab, k, gs)
        ids = np.array([3, vocab - 1, 0, 3, int(rng.integers(vocab))], np.uint32)
        with Chain() as chain:
            ids_t = chain.input((ids.size,), dtype="uint32")
            out = ops.embed_rows(chain, ids_t, table, ids.size)
            chain.run({ids_t: ids})
            np.testing.assert_allclose(out.numpy(), dequantized_f32(table)[ids], rtol=0, atol=0)

    def test_vocabulary_split_across_bindings(self, runtime, fake_limits, rng):
        """A table split along N into chunks: each token comes from its own chunk."""
        table = random_weight(rng, 40, 64, 32)
        ids = np.array([0, 39, 17, 18, 5], np.uint32)
        with fake_limits(max_storage_buffer_binding_size=512):
            with Chain() as chain:
                assert len(chain.runtime.weights.chunks(table)) > 1
                ids_t = chain.input((ids.size,), dtype="uint32")
                out = ops.embed_rows(chain, ids_t, table, ids.size)
                chain.run({ids_t: ids})
                np.testing.assert_allclose(out.numpy(), dequantized_f32(table)[ids], rtol=0, atol=0)
        runtime.weights.release(table)


class TestAddRmsNorm:
    @pytest.mark.parametrize(("rows", "d", "add", "first_row"), [(1, 64, True, 0), (5, 36, True, 0),
                                                                 (3, 1024, False, 0), (4, 64, True, 3)])
    def test_matches_reference(self, runtime, rng, rows, d, add, first_row):
        """x += delta in place (rows from first_row), then x / sqrt(mean(x^2) + eps) * w."""
        x = rng.standard_normal((rows, d)).astype(np.float32)
        delta = rng.standard_normal((rows, d)).astype(np.float32)
        w = rng.uniform(0.5, 1.5, d).astype(np.float32)
        with Chain() as chain:
            x_t, d_t, w_t = upload(x), upload(delta), upload(w)
            out = ops.add_rms_norm(chain, x_t, d_t if add else None, w_t, eps=1e-5, first_row=first_row)
            chain.run()
            x64 = x.astype(np.float64) + (delta if add else 0)
            ref = (x64 / np.sqrt((x64 ** 2).mean(-1, keepdims=True) + 1e-5) * w)[first_row:]
            np.testing.assert_allclose(out.numpy(), ref, rtol=2e-6, atol=2e-6)
            changed = x64[first_row:] if add else x[first_row:]
            np.testing.assert_allclose(x_t.numpy()[first_row:], changed, rtol=1e-7, atol=1e-7)
            np.testing.assert_array_equal(x_t.numpy()[:first_row], x[:first_row])
            for t in (x_t, d_t, w_t):
                t.release()


class TestRopeKv:
    @pytest.mark.parametrize(("rows", "pos", "heads", "kv", "d"), [(1, 0, 4, 2, 16), (1, 37, 4, 1, 32),
                                                                  (6, 5, 6, 2, 8), (3, 0, 2, 2, 64)])
    def test_rotates_and_fills_cache(self, runtime, rng, rows, pos, heads, kv, d):
        """q rotated; k rotated and v copied into the caches at positions pos .. pos + rows - 1;
        other cache positions untouched."""
        max_positions = 48
        qkv = rng.standard_normal((rows, heads + 2 * kv, d)).astype(np.float32)
        table = rope_table(max_positions, d)
        k0 = rng.standard_normal((kv, max_positions, d)).astype(np.float32)
        v0 = rng.standard_normal((kv, max_positions, d)).astype(np.float32)
        with Chain() as chain:
            k_t, v_t, cs = upload(k0), upload(v0), upload(table)
            qkv_t = upload(qkv.reshape(rows, -1))
            q = ops.rope_kv(chain, qkv_t, cs, state_buffer(runtime, pos), k_t, v_t, q_heads=heads, kv_heads=kv,
                            head_dim=d)
            chain.run()
            positions = np.arange(pos, pos + rows)
            np.testing.assert_allclose(q.numpy().reshape(rows, heads, d), rope_reference(qkv[:, :heads], table,
                                                                                          positions), atol=1e-5)
            k_ref, v_ref = k0.copy(), v0.copy()
            k_ref[:, positions] = rope_reference(qkv[:, heads:heads + kv], table, positions).transpose(1, 0, 2)
            v_ref[:, positions] = qkv[:, heads + kv:].transpose(1, 0, 2)
            np.testing.assert_allclose(k_t.numpy(), k_ref, atol=1e-5)
            np.testing.assert_array_equal(v_t.numpy(), v_ref)


class TestAttention:
    @pytest.mark.parametrize(("rows", "pos", "heads", "kv", "d", "splits", "window"), [
        (1, 0, 4, 2, 16, 1, 0),       # one key
        (1, 100, 4, 2, 32, 1, 0),     # decode, one workgroup
        (1, 100, 4, 2, 32, 4, 0),     # decode split over workgroups (splits past pos are empty)
        (1, 200, 8, 2, 16, 4, 0),     # every split used
        (1, 150, 4, 4, 8, 8, 40),     # sliding window: leading splits empty
        (9, 0, 6, 3, 16, 1, 0),       # prefill from position 0
        (7, 70, 4, 1, 16, 1, 30),     # prefill continuing, with a window
        (130, 0, 2, 1, 4, 1, 0),      # more keys than a tile
        (1, 70, 8, 1, 64, 2, 0),      # 8 query heads a kv head (the most), 16 value lanes
        (5, 3, 7, 1, 32, 1, 0),       # 7 query heads a kv head (Qwen2.5)
        (1, 60, 2, 1, 256, 1, 0),     # head_dim 256: one value lane
        (2, 40, 4, 2, 12, 1, 0),      # head_dim 12: 3 vec4 columns, 21 lanes, one invocation idle
    ])
    def test_matches_reference(self, runtime, rng, rows, pos, heads, kv, d, splits, window):
        """softmax(q k^T / sqrt(D)) v over keys [lo, pos + t], grouped-query, any split."""
        max_positions = 256
        q = rng.standard_normal((rows, heads, d)).astype(np.float32)
        k = rng.standard_normal((kv, max_positions, d)).astype(np.float32)
        v = rng.standard_normal((kv, max_positions, d)).astype(np.float32)
        with Chain() as chain:
            k_t, v_t, q_t = upload(k), upload(v), upload(q.reshape(rows, -1))
            out = ops.attention(chain, q_t, k_t, v_t, state_buffer(runtime, pos), kv_heads=kv, head_dim=d,
                                splits=splits, split_keys=64, window=window)
            chain.run()
            ref = attention_reference(q, k, v, np.arange(pos, pos + rows), window)
            got = out.numpy().reshape(rows, heads, d)
            assert np.isfinite(got).all()
            np.testing.assert_allclose(got, ref, rtol=1e-4, atol=2e-5)


class TestSwiglu:
    def test_matches_reference(self, runtime, rng):
        """silu(gate) * up over [gate | up] rows."""
        gu = (rng.standard_normal((3, 2 * 37)) * 3).astype(np.float32)
        with Chain() as chain:
            out = ops.swiglu(chain, upload(gu))
            chain.run()
            g, u = gu[:, :37].astype(np.float64), gu[:, 37:]
            np.testing.assert_allclose(out.numpy(), g / (1 + np.exp(-g)) * u, rtol=1e-5, atol=1e-6)


class TestArgmax:
    @pytest.mark.parametrize(("vocab", "rows"), [(10, 1), (4096, 1), (10007, 3), (50000, 2)])
    def test_greedy_token(self, runtime, rng, vocab, rows):
        """The last row's argmax (first index on ties) lands in ids[0] and generated[step]."""
        logits = rng.standard_normal((rows, vocab)).astype(np.float32)
        tie = int(rng.integers(vocab - 1))
        logits[-1, tie] = logits[-1, tie + 1:].max() + 1.0
        logits[-1, -1] = logits[-1, tie]  # the same value later: the first one wins
        with Chain() as chain:
            ids = chain.input((4,), dtype="uint32")
            generated = chain.input((8,), dtype="uint32")
            ops.argmax(chain, upload(logits), ids, generated, state_buffer(runtime, 0, step=5))
            ids.write(np.full(4, 7, np.uint32))
            generated.write(np.zeros(8, np.uint32))
            chain.run()
            expected = int(np.argmax(logits[-1]))
            assert expected == tie
            assert ids.numpy()[0] == expected and generated.numpy()[5] == expected
            assert (generated.numpy()[[0, 1, 2, 3, 4, 6, 7]] == 0).all()
