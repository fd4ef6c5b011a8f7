"""Tests of q4gsw.models.minilm.ops: each BERT encoder op in a Chain against a float64 numpy
reference, on fresh random data with edge shapes, outputs poisoned (NaN) before every run."""

from __future__ import annotations

import math

import numpy as np
import pytest

from q4gsw.chain import Chain
from q4gsw.errors import ShapeError
from q4gsw.models.minilm import ops


def erf64(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf)(x.astype(np.float64))


def layer_norm64(v, w, b, eps):
    v = v.astype(np.float64)
    mu = v.mean(-1, keepdims=True)
    return (v - mu) / np.sqrt(((v - mu) ** 2).mean(-1, keepdims=True) + eps) * w + b


def attention64(q, k, v, mask, heads):
    """q, k, v (B, T, heads * D), mask (B, T): bidirectional attention over the unmasked keys, float64."""
    b, t, width = q.shape
    d = width // heads
    split = lambda x: x.astype(np.float64).reshape(b, t, heads, d).transpose(0, 2, 1, 3)  # noqa: E731
    s = split(q) @ split(k).transpose(0, 1, 3, 2) / math.sqrt(d)
    s = np.where(mask[:, None, None, :] != 0, s, -np.inf)
    with np.errstate(invalid="ignore"):  # a row with every key masked: NaN (the tests compare others)
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
    return (p @ split(v)).transpose(0, 2, 1, 3).reshape(b, t, width)


def padding_mask(rng, batch: int, seq: int) -> np.ndarray:
    """(B, T) float32 right-padding mask: a random length per sequence, one sequence full."""
    lengths = rng.integers(1, seq + 1, batch)
    lengths[0] = seq
    return (np.arange(seq)[None, :] < lengths[:, None]).astype(np.float32)


class TestLayerNorm:
    @pytest.mark.parametrize(("rows", "d", "add"), [(1, 384, True), (7, 36, True), (3, 1024, False), (5, 4, True)])
    def test_matches_reference(self, runtime, rng, rows, d, add):
        """LayerNorm(x + delta) (or of x) with weight and bias, per row; x is left as it was."""
        x = (rng.standard_normal((rows, d)) * 3 + 2).astype(np.float32)  # a mean far from 0
        delta = rng.standard_normal((rows, d)).astype(np.float32)
        w = rng.uniform(0.5, 1.5, d).astype(np.float32)
        b = rng.standard_normal(d).astype(np.float32)
        with Chain() as chain:
            x_t, d_t, w_t, b_t = (chain.constant(a) for a in (x, delta, w, b))
            out = ops.layer_norm(chain, x_t, d_t if add else None, w_t, b_t, eps=1e-12)
            chain.run()
            ref = layer_norm64(x + (delta if add else 0), w, b, 1e-12)
            np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=3e-6 * np.abs(ref).max())
            np.testing.assert_array_equal(x_t.numpy(), x)

    def test_constant_row(self, runtime):
        """A row with zero variance gives the bias (eps keeps it finite)."""
        d = 64
        with Chain() as chain:
            x_t = chain.constant(np.full((2, d), 5.0, np.float32))
            b = np.arange(d, dtype=np.float32)
            out = ops.layer_norm(chain, x_t, None, chain.constant(np.ones(d, np.float32)), chain.constant(b), eps=1e-5)
            chain.run()
            np.testing.assert_allclose(out.numpy(), np.broadcast_to(b, (2, d)), atol=1e-6)

    def test_refuses_bad_shapes(self, runtime):
        """A weight of another width, or a width not a multiple of 4, is a ShapeError."""
        with Chain() as chain:
            x = chain.constant(np.zeros((2, 8), np.float32))
            with pytest.raises(ShapeError, match="weight"):
                ops.layer_norm(chain, x, None, chain.constant(np.ones(4, np.float32)),
                               chain.constant(np.ones(8, np.float32)), eps=1e-5)
            odd = chain.constant(np.zeros((2, 6), np.float32))
            with pytest.raises(ShapeError, match="6 % 4"):
                ops.layer_norm(chain, odd, None, chain.constant(np.ones(6, np.float32)),
                               chain.constant(np.ones(6, np.float32)), eps=1e-5)


class TestGelu:
    def test_matches_erf_reference(self, runtime, rng):
        """0.5 x (1 + erf(x / sqrt 2)) to 3e-7 absolute + 2e-6 relative everywhere, from the
        tails (-12 .. 12) through both branches of the erf fit (|x / sqrt 2| near 0.92) to 0;
        the count is not a multiple of the workgroup."""
        x = np.concatenate([rng.uniform(-12, 12, 5000), rng.standard_normal(5000) * 2,
                            np.linspace(-1.31, -1.30, 101), np.linspace(1.30, 1.31, 101),
                            [0.0, -0.0, 1e-30, -1e-30, 5.6, -5.6, 5.7, -5.7]]).astype(np.float32)
        with Chain() as chain:
            out = ops.gelu(chain, chain.constant(x))
            chain.run()
            got = out.numpy().astype(np.float64)
        ref = 0.5 * x.astype(np.float64) * (1 + erf64(x / np.sqrt(2.0)))
        err = np.abs(got - ref)
        assert (err <= 3e-7 + 2e-6 * np.abs(ref)).all(), f"max error {err.max():.2e} at x = {x[err.argmax()]}"

    def test_erf_accuracy(self, runtime):
        """The erf the kernel evaluates, recovered as gelu(x) / (0.5 x) - 1 at x = sqrt(2) z on a
        dense grid of z in [0.05, 5]: within 3e-7 of erf (fp32's spacing near 1 is 6e-8)."""
        z = np.linspace(0.05, 5, 20001).astype(np.float32)
        x = (z.astype(np.float64) * np.sqrt(2.0)).astype(np.float32)
        with Chain() as chain:
            out = ops.gelu(chain, chain.constant(x))
            chain.run()
            got = out.numpy().astype(np.float64)
        erf_kernel = got / (0.5 * x.astype(np.float64)) - 1
        err = np.abs(erf_kernel - erf64(x / np.sqrt(2.0)))
        assert err.max() <= 3e-7, f"max |erf error| {err.max():.2e} at z = {z[err.argmax()]}"


class TestEncoderAttention:
    @pytest.mark.parametrize(("batch", "seq", "heads", "d"), [(1, 1, 12, 32), (3, 9, 12, 32), (2, 70, 2, 16),
                                                               (4, 5, 3, 4), (1, 130, 1, 64), (2, 3, 2, 12)])
    def test_matches_reference(self, runtime, rng, batch, seq, heads, d):
        """Each row attends to its own sequence's unmasked keys only (padding rows too, as
        transformers computes them); sequences longer than a tile of keys, one token long, heads of 4."""
        q, k, v = (rng.standard_normal((batch, seq, heads * d)).astype(np.float32) for _ in range(3))
        mask = padding_mask(rng, batch, seq)
        with Chain() as chain:
            tq, tk, tv = (chain.constant(a.reshape(batch * seq, -1)) for a in (q, k, v))
            out = ops.encoder_attention(chain, tq, tk, tv, chain.constant(mask), heads=heads, seq=seq)
            chain.run()
            ref = attention64(q, k, v, mask, heads).reshape(batch * seq, -1)
            np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=2e-6)

    def test_masked_keys_ignored(self, runtime, rng):
        """Huge values in masked keys and values change nothing; a mask with a hole in the
        middle (not right padding) is honoured; a row whose keys are all masked gives zeros."""
        batch, seq, heads, d = 3, 6, 2, 8
        q, k, v = (rng.standard_normal((batch, seq, heads * d)).astype(np.float32) for _ in range(3))
        mask = np.ones((batch, seq), np.float32)
        mask[0, 2] = mask[1, 4:] = 0
        mask[2] = 0
        k2, v2 = k.copy(), v.copy()
        k2[mask == 0], v2[mask == 0] = 1e30, 1e30
        with Chain() as chain:
            tq, tk, tv = (chain.constant(a.reshape(batch * seq, -1)) for a in (q, k2, v2))
            out = ops.encoder_attention(chain, tq, tk, tv, chain.constant(mask), heads=heads, seq=seq)
            chain.run()
            got = out.numpy().reshape(batch, seq, -1)
        np.testing.assert_allclose(got[:2], attention64(q, k, v, mask, heads)[:2], rtol=0, atol=2e-6)
        np.testing.assert_array_equal(got[2], 0)

    def test_refuses_bad_shapes(self, runtime):
        """Too long a sequence, a mask of the wrong size or a head dim not a multiple of 4 is a ShapeError."""
        with Chain() as chain:
            long = chain.constant(np.zeros((ops.MAX_KEYS + 1, 8), np.float32))
            mask = chain.constant(np.ones(ops.MAX_KEYS + 1, np.float32))
            with pytest.raises(ShapeError, match="seq"):
                ops.encoder_attention(chain, long, long, long, mask, heads=2, seq=ops.MAX_KEYS + 1)
            x = chain.constant(np.zeros((4, 12), np.float32))
            with pytest.raises(ShapeError, match="heads"):
                ops.encoder_attention(chain, x, x, x, chain.constant(np.ones(4, np.float32)), heads=2, seq=2)
            with pytest.raises(ShapeError, match="mask"):
                ops.encoder_attention(chain, x, x, x, chain.constant(np.ones(3, np.float32)), heads=3, seq=2)


class TestMeanPoolNormalize:
    @pytest.mark.parametrize(("batch", "seq", "dim"), [(1, 1, 384), (5, 13, 384), (3, 40, 100), (2, 3, 300)])
    def test_matches_reference(self, runtime, rng, batch, seq, dim):
        """The mean over each sequence's unmasked rows, divided by its L2 norm."""
        hidden = rng.standard_normal((batch, seq, dim)).astype(np.float32)
        mask = padding_mask(rng, batch, seq)
        hidden[mask == 0] = 1e6  # padding rows must not count
        with Chain() as chain:
            out = ops.mean_pool_normalize(chain, chain.constant(hidden.reshape(batch * seq, dim)),
                                          chain.constant(mask), seq=seq)
            chain.run()
            m = mask[:, :, None].astype(np.float64)
            mean = (np.where(m != 0, hidden, 0) * m).sum(1) / m.sum(1)
            ref = mean / np.linalg.norm(mean, axis=1, keepdims=True)
            np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-6)

    def test_zero_vector(self, runtime):
        """A zero mean stays zero (the 1e-12 floor of the norm, as torch's F.normalize)."""
        with Chain() as chain:
            out = ops.mean_pool_normalize(chain, chain.constant(np.zeros((4, 8), np.float32)),
                                          chain.constant(np.ones(4, np.float32)), seq=2)
            chain.run()
            np.testing.assert_array_equal(out.numpy(), 0)


class TestTokenEmbeddings:
    def _run(self, rng, runtime, *, batch, seq, vocab, dim, chunk_rows):
        word = rng.standard_normal((vocab, dim)).astype(np.float32)
        position = rng.standard_normal((seq + 3, dim)).astype(np.float32)
        token_type = rng.standard_normal((2, dim)).astype(np.float32)
        ids = rng.integers(0, vocab, batch * seq).astype(np.uint32)
        ids[:2] = [0, vocab - 1][: ids.size]  # the first and last rows of the table
        type_ids = rng.integers(0, 2, batch * seq).astype(np.uint32)
        with Chain() as chain:
            chunks = [(n0, chain.constant(word[n0:n0 + chunk_rows])) for n0 in range(0, vocab, chunk_rows)]
            ids_t = chain.input(ids.shape, dtype="uint32")
            types_t = chain.input(ids.shape, dtype="uint32")
            out = ops.token_embeddings(chain, ids_t, types_t, chunks, chain.constant(position),
                                       chain.constant(token_type), seq=seq)
            chain.run({ids_t: ids, types_t: type_ids})
            positions = np.tile(np.arange(seq), batch)
            ref = (word[ids] + token_type[type_ids]) + position[positions]
            np.testing.assert_array_equal(out.numpy(), ref)
            return len(chunks)

    @pytest.mark.parametrize(("batch", "seq", "dim"), [(1, 1, 4), (3, 7, 384), (2, 50, 64)])
    def test_matches_reference(self, runtime, rng, batch, seq, dim):
        """word[id] + token_type[type] + position[t], exactly as float32 adds them in transformers' order."""
        self._run(rng, runtime, batch=batch, seq=seq, vocab=97, dim=dim, chunk_rows=97)

    def test_word_table_in_chunks(self, runtime, rng):
        """A word table split into row chunks (one dispatch each): every row comes from its chunk."""
        assert self._run(rng, runtime, batch=4, seq=6, vocab=50, dim=16, chunk_rows=7) == 8

    def test_rows_per_chunk(self):
        """rows_per_chunk fits a binding: at least one row, never more than the table."""
        assert ops.rows_per_chunk(30522, 384, 128 << 20) == 30522
        assert ops.rows_per_chunk(30522, 384, 1 << 20) == 682
        assert ops.rows_per_chunk(10, 384, 16) == 1


class TestAttentionWg:
    def test_covers_keys_and_columns(self):
        """A power of two covering the keys, at least the head's vec4 columns, at most ATTENTION_WG."""
        assert [ops.attention_wg(s, 32) for s in (1, 8, 9, 11, 64, 65, 512)] == [8, 8, 16, 16, 64, 64, 64]
        assert ops.attention_wg(2, 12) == 4 and ops.attention_wg(3, 4) == 4 and ops.attention_wg(1, 256) == 64
