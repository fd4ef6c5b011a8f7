"""GPU tests of q4gsw.chain: recorded chains equal op-by-op q4gsw.linear and float64 references."""

from __future__ import annotations

import numpy as np
import pytest

import q4gsw
from q4gsw.chain import Chain, GpuTensor, upload
from q4gsw.kernels import TiledSplit

from .utils import RTOL, assert_matches_reference, random_problem


def silu64(g):
    g = np.asarray(g, np.float64)
    return g / (1.0 + np.exp(-g))


def rms_norm64(x, w, eps):
    x = np.asarray(x, np.float64)
    return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps) * np.asarray(w, np.float64)


def assert_close(y, ref, magnitude):
    """y float32, every element written, within RTOL * magnitude + 1e-6 of the float64 reference."""
    assert y.dtype == np.float32 and y.shape == ref.shape
    assert np.isfinite(y).all(), "output elements not written (NaN poison)"
    err = np.abs(y.astype(np.float64) - ref)
    assert (err <= RTOL * magnitude + 1e-6).all(), f"worst error {err.max():.3g}"


class TestUpload:
    def test_roundtrip(self, runtime, rng):
        """upload then numpy() returns the same values and shape."""
        x = rng.standard_normal((2, 3, 5)).astype(np.float32)
        t = upload(x)
        assert isinstance(t, GpuTensor) and t.shape == (2, 3, 5)
        np.testing.assert_array_equal(t.numpy(), x)
        t.release()

    def test_refuses_float64(self, runtime, rng):
        """A float64 array raises DTypeError naming 'x', not a silent cast."""
        with pytest.raises(q4gsw.DTypeError, match="'x'"):
            upload(rng.standard_normal(4))

    def test_write_shape(self, runtime, rng):
        """GpuTensor.write with the wrong shape raises ShapeError naming 'array'."""
        t = upload(rng.standard_normal(4).astype(np.float32))
        with pytest.raises(q4gsw.ShapeError, match="'array'"):
            t.write(np.ones(5, np.float32))
        t.release()


class TestChainLinear:
    @pytest.mark.parametrize("m, dims, gs, batch", [
        (1, (256, 96, 256, 64), 32, None),   # decode-sized: M = 1, K % 32 == 0
        (3, (37, 20, 11, 8), 5, None),       # odd K, group sizes that do not divide K
        (None, (64, 48, 33, 64), 16, (2, 3)),  # batch dims
    ])
    def test_matches_op_by_op(self, runtime, rng, m, dims, gs, batch):
        """A chain of linears (with and without bias) equals q4gsw.linear applied layer by layer, bit for bit."""
        cases = [random_problem(rng, m or 1, n, k, gs, batch=batch, bias=i % 2 == 0)
                 for i, (k, n) in enumerate(zip(dims, dims[1:]))]
        x0 = cases[0].x
        with Chain() as chain:
            x = chain.input(x0.shape)
            outs, h = [], x
            for c in cases:
                h = chain.linear(h, c.pw, c.bias)
                outs.append(h)
            chain.run({x: x0})
            ref = x0
            for c, out in zip(cases, outs):
                want = q4gsw.linear(ref, c.pw, c.bias)
                got = out.numpy()
                assert_matches_reference(got, ref, c.pw, c.bias)
                np.testing.assert_array_equal(got, want)
                ref = want

    def test_replay_allocates_nothing(self, runtime, rng):
        """Running a recorded chain again with new input creates no GPU buffer and gives the new result."""
        c1 = random_problem(rng, 2, 24, 40, 8)
        c2 = random_problem(rng, 2, 16, 24, 8, bias=False)
        with Chain() as chain:
            x = chain.input((2, 40))
            y = chain.linear(chain.linear(x, c1.pw, c1.bias), c2.pw)
            for _ in range(3):
                x0 = rng.standard_normal((2, 40)).astype(np.float32)
                before = runtime.buffers.created
                chain.run({x: x0})
                out = y.numpy()
                assert runtime.buffers.created == before
                np.testing.assert_array_equal(out, q4gsw.linear(q4gsw.linear(x0, c1.pw, c1.bias), c2.pw))

    def test_split_along_n(self, runtime, fake_limits, rng):
        """A weight split along N (binding limit) is one dispatch per chunk, stitched into the reference."""
        case = random_problem(rng, 1, 50, 64, 16, extra_cols=5)
        with fake_limits(max_storage_buffer_binding_size=512), Chain() as chain:
            x = chain.input((1, 64))
            y = chain.linear(x, case.pw, case.bias)
            assert len(chain) == len(runtime.weights.chunks(case.pw)) == 4
            chain.run({x: case.x})
            assert_matches_reference(y.numpy(), case.x, case.pw, case.bias)
        runtime.weights.release(case.pw)

    def test_split_k_kernel(self, runtime, rng):
        """A split-K linear (partial sums + reduction in one pass) in a chain, with bias, replayed
        twice, equals q4gsw.linear with the same kernel bit for bit."""
        spec = TiledSplit(64, 3)
        case = random_problem(rng, 20, 70, 96, 32)
        with Chain() as chain:
            x = chain.input((20, 96))
            y = chain.linear(x, case.pw, case.bias, kernel=spec)
            for x0 in (case.x, rng.standard_normal((20, 96)).astype(np.float32)):
                chain.run({x: x0})
                np.testing.assert_array_equal(y.numpy(), q4gsw.linear(x0, case.pw, case.bias, kernel=spec))
                assert_matches_reference(y.numpy(), x0, case.pw, case.bias)

    def test_profiled(self, runtime, rng):
        """Inside q4gsw.profile() every recorded dispatch is timed once per run."""
        case = random_problem(rng, 1, 32, 64, 32)
        with Chain() as chain:
            x = chain.input((1, 64))
            y = chain.add(chain.linear(x, case.pw, case.bias), chain.linear(x, case.pw, case.bias))
            with q4gsw.profile() as prof:
                chain.run({x: case.x})
            assert len(prof.records) == 3
            ref = 2 * q4gsw.linear_reference(case.x, case.pw, case.bias)
            assert_close(y.numpy(), ref, 2 * (np.abs(case.x) @ np.abs(case.pw.dequantize()).T + np.abs(case.bias)))

    def test_wrong_k(self, runtime, rng, no_new_buffers):
        """x whose last dimension is not K raises ShapeError naming 'x', before any buffer is made."""
        case = random_problem(rng, 1, 8, 16, 8)
        chain = Chain()
        x = chain.input((1, 17))
        with no_new_buffers(), pytest.raises(q4gsw.ShapeError, match="'x'"):
            chain.linear(x, case.pw)
        chain.release()

    def test_refuses_ndarray_x(self, runtime, rng):
        """A numpy x (not a GpuTensor) raises DTypeError naming 'x'."""
        case = random_problem(rng, 1, 8, 16, 8)
        with Chain() as chain, pytest.raises(q4gsw.DTypeError, match="'x'"):
            chain.linear(case.x, case.pw)

    def test_bias_shape(self, runtime, rng):
        """A bias of the wrong length raises ShapeError naming 'bias'."""
        case = random_problem(rng, 1, 8, 16, 8)
        with Chain() as chain, pytest.raises(q4gsw.ShapeError, match="'bias'"):
            chain.linear(chain.input((1, 16)), case.pw, np.ones(9, np.float32))


class TestChainElementwise:
    def test_add_and_silu_mul(self, runtime, rng):
        """add and silu_mul over 3 x 700 elements (several workgroups, a partial one) match float64."""
        a, b = (rng.standard_normal((3, 700)).astype(np.float32) * 4 for _ in range(2))
        with Chain() as chain:
            ta, tb = chain.constant(a), chain.constant(b)
            s, g = chain.add(ta, tb), chain.silu_mul(ta, tb)
            chain.run()
            a64, b64 = a.astype(np.float64), b.astype(np.float64)
            assert_close(s.numpy(), a64 + b64, np.abs(a64) + np.abs(b64))
            assert_close(g.numpy(), silu64(a) * b64, np.abs(silu64(a) * b64))

    def test_rms_norm(self, runtime, rng):
        """rms_norm per row (D = 300, not a multiple of the workgroup) matches float64."""
        x = rng.standard_normal((2, 3, 300)).astype(np.float32) * 3
        w = rng.standard_normal(300).astype(np.float32)
        with Chain() as chain:
            y = chain.rms_norm(chain.constant(x), w, eps=1e-5)
            chain.run()
            ref = rms_norm64(x, w, 1e-5)
            assert_close(y.numpy(), ref, np.abs(ref))

    def test_repeat_heads(self, runtime, rng):
        """repeat_heads copies kv head h // repeats into head h, exactly."""
        x = rng.standard_normal((2, 3 * 8)).astype(np.float32)
        with Chain() as chain:
            y = chain.repeat_heads(chain.constant(x), head_dim=8, repeats=4)
            chain.run()
            ref = np.repeat(x.reshape(2, 3, 1, 8), 4, axis=2).reshape(2, 96)
            np.testing.assert_array_equal(y.numpy(), ref)

    def test_shape_mismatch(self, runtime, rng):
        """add of different shapes raises ShapeError naming 'b'."""
        with Chain() as chain, pytest.raises(q4gsw.ShapeError, match="'b'"):
            chain.add(chain.input((2, 3)), chain.input((3, 2)))

    def test_rms_norm_weight_shape(self, runtime):
        """An rms_norm weight not of x's last dimension raises ShapeError naming 'weight'."""
        with Chain() as chain, pytest.raises(q4gsw.ShapeError, match="'weight'"):
            chain.rms_norm(chain.input((2, 8)), np.ones(7, np.float32))


class TestChainBlock:
    def test_swiglu_block(self, runtime, rng):
        """norm -> gate/up -> silu*mul -> down -> residual, chained, equals the same ops run one by one."""
        d, f, gs = 64, 96, 32
        norm_w = rng.standard_normal(d).astype(np.float32)
        gate, up = (random_problem(rng, 1, f, d, gs, bias=False).pw for _ in range(2))
        down = random_problem(rng, 1, d, f, gs, bias=False).pw
        x0 = rng.standard_normal((2, d)).astype(np.float32)
        with Chain() as chain:
            x = chain.input((2, d))
            h = chain.rms_norm(x, norm_w)
            y = chain.add(x, chain.linear(chain.silu_mul(chain.linear(h, gate), chain.linear(h, up)), down))
            chain.run({x: x0})
            got = y.numpy()
            h_np = chain_h = h.numpy()
        h_ref = rms_norm64(x0, norm_w, 1e-6)
        assert_close(chain_h, h_ref, np.abs(h_ref))
        m = (silu64(q4gsw.linear(h_np, gate)) * q4gsw.linear(h_np, up)).astype(np.float32)
        ref = x0.astype(np.float64) + q4gsw.linear_reference(m, down)
        mag = np.abs(x0) + np.abs(m) @ np.abs(down.dequantize()).T
        assert_close(got, ref, mag)


class TestImports:
    def test_core_does_not_import_torch(self):
        """import q4gsw, q4gsw.chain and q4gsw.demos.decode leaves torch unimported."""
        import subprocess
        import sys

        code = "import sys, q4gsw, q4gsw.chain, q4gsw.demos.decode; sys.exit('torch' in sys.modules)"
        assert subprocess.run([sys.executable, "-c", code]).returncode == 0
