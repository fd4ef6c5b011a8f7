"""Every bad input raises its named Q4gswError subclass, names the argument, and creates no GPU buffer."""

from __future__ import annotations

import numpy as np
import pytest

import q4gsw
from q4gsw import (
    ArgumentError,
    DeviceError,
    DTypeError,
    GroupSizeError,
    ProfilerError,
    Q4gswError,
    ShaderError,
    ShapeError,
    SizeLimitError,
    UnsupportedShapeError,
)
from q4gsw.kernels import KERNELS, Problem

from .utils import random_scales, random_weights

N, K, GS = 6, 20, 8


@pytest.fixture
def parts(rng):
    """Valid (x, weights, scales, bias) for N=6, K=20, group_size=8 (3 groups, one spare row)."""
    return (rng.standard_normal((3, K)).astype(np.float32), random_weights(rng, N, K),
            random_scales(rng, -(-K // GS), N), rng.standard_normal(N).astype(np.float32))


@pytest.fixture
def pw(parts):
    """The PackedWeight of parts."""
    _, weights, scales, _ = parts
    return q4gsw.PackedWeight(weights, scales, GS)


#: (id, x, bias, error, fragment) for bad x / bias; "x" and "bias" placeholders are filled per test.
BAD_X = [
    ("x-float64", lambda x: x.astype(np.float64), DTypeError, "'x'"),
    ("x-int32", lambda x: x.astype(np.int32), DTypeError, "'x'"),
    ("x-float16", lambda x: x.astype(np.float16), DTypeError, "'x'"),
    ("x-list", lambda x: x.tolist(), DTypeError, "'x'"),
    ("x-scalar", lambda x: np.float32(1.0), DTypeError, "'x'"),
    ("x-none", lambda x: None, DTypeError, "'x'"),
    ("x-wrong-K", lambda x: x[:, :-2].copy(), ShapeError, "'x'"),  # K=18: 9 bytes a row, not 10
    ("x-transposed", lambda x: np.ascontiguousarray(x.T), ShapeError, "'x'"),
    ("x-1-D-wrong-K", lambda x: x[0, :7].copy(), ShapeError, "'x'"),
    ("x-0-d", lambda x: np.array(1.0, np.float32), ShapeError, "'x'"),
]
BAD_BIAS = [
    ("bias-short", lambda b: b[:-1].copy(), ShapeError, "'bias'"),
    ("bias-long", lambda b: np.concatenate([b, b[:1]]), ShapeError, "'bias'"),
    ("bias-2-D", lambda b: b[None, :].copy(), ShapeError, "'bias'"),
    ("bias-0-d", lambda b: np.array(1.0, np.float32), ShapeError, "'bias'"),
    ("bias-float64", lambda b: b.astype(np.float64), DTypeError, "'bias'"),
    ("bias-int32", lambda b: b.astype(np.int32), DTypeError, "'bias'"),
    ("bias-list", lambda b: b.tolist(), DTypeError, "'bias'"),
]
BAD_GROUP_SIZE = [0, -1, -8, 1.5, 8.0, True, False, "8", None]

#: (id, make(weights, scales) -> (weights, scales), error, fragment) for linear_q4gsw.
BAD_ARRAYS_Q4GSW = [
    ("weights-int8", lambda w, s: (w.view(np.int8), s), DTypeError, "'weights'"),
    ("weights-int32", lambda w, s: (w.astype(np.int32), s), DTypeError, "'weights'"),
    ("weights-list", lambda w, s: (w.tolist(), s), DTypeError, "'weights'"),
    ("weights-1-D", lambda w, s: (w.reshape(-1).copy(), s), ShapeError, "'weights'"),
    ("weights-3-D", lambda w, s: (w[None].copy(), s), ShapeError, "'weights'"),
    ("weights-short-rows", lambda w, s: (w[:, :-1].copy(), s), ShapeError, "'weights'"),
    ("scales-float64", lambda w, s: (w, s.astype(np.float64)), DTypeError, "'weight_scales'"),
    ("scales-float16", lambda w, s: (w, s.astype(np.float16)), DTypeError, "'weight_scales'"),
    ("scales-1-D", lambda w, s: (w, s[0].copy()), ShapeError, "'weight_scales'"),
    ("scales-few-rows", lambda w, s: (w, s[:2].copy()), GroupSizeError, "'weight_scales'"),
    ("scales-few-cols", lambda w, s: (w, s[:, :N - 1].copy()), ShapeError, "'weight_scales'"),
]
#: (id, make(x, weights, scales) -> linear_q4gsw's positional arguments), each one bad.
OP_NAMED = [
    ("weights-int8", lambda x, w, s: (x, w.view(np.int8), s, GS)),
    ("scales-few-rows", lambda x, w, s: (x, w, s[:2].copy(), GS)),
    ("scales-few-cols", lambda x, w, s: (x, w, s[:, :N - 1].copy(), GS)),
    ("group-size-0", lambda x, w, s: (x, w, s, 0)),
    ("x-float64", lambda x, w, s: (x.astype(np.float64), w, s, GS)),
]
#: (id, make(weights, scales) -> (weights, scales), error, fragment) for PackedWeight.
BAD_ARRAYS_PACKED = [
    ("weights-float", lambda w, s: (w.astype(np.float32), s), DTypeError, "'weights'"),
    ("weights-rank", lambda w, s: (w[None].copy(), s), ShapeError, "'weights'"),
    ("scales-dtype", lambda w, s: (w, s.astype(np.float64)), DTypeError, "scales'"),
    ("scales-rank", lambda w, s: (w, s[None].copy()), ShapeError, "scales'"),
    ("scales-few-rows", lambda w, s: (w, s[:1].copy()), GroupSizeError, "scales'"),
    ("scales-few-cols", lambda w, s: (w, s[:, :2].copy()), ShapeError, "scales'"),
]


class TestLinear:
    @pytest.mark.parametrize("case_id,make_x,error,fragment", BAD_X, ids=[c[0] for c in BAD_X])
    def test_bad_x(self, runtime, no_new_buffers, parts, pw, case_id, make_x, error, fragment):
        """A malformed x raises DTypeError or ShapeError naming 'x', before any GPU buffer."""
        with no_new_buffers(), pytest.raises(error, match=fragment):
            q4gsw.linear(make_x(parts[0]), pw, parts[3])

    def test_0d_x_with_k_1(self, runtime, no_new_buffers, rng):
        """A 0-d x is refused even when K = 1 (it is not a (..., K) array)."""
        pw1 = q4gsw.PackedWeight(random_weights(rng, 4, 1), random_scales(rng, 1, 4), 1, in_features=1)
        with no_new_buffers(), pytest.raises(ShapeError, match="'x'"):
            q4gsw.linear(np.array(2.0, np.float32), pw1)

    @pytest.mark.parametrize("case_id,make_bias,error,fragment", BAD_BIAS, ids=[c[0] for c in BAD_BIAS])
    def test_bad_bias(self, runtime, no_new_buffers, parts, pw, case_id, make_bias, error, fragment):
        """A malformed bias raises DTypeError or ShapeError naming 'bias', before any GPU buffer."""
        with no_new_buffers(), pytest.raises(error, match=fragment):
            q4gsw.linear(parts[0], pw, make_bias(parts[3]))

    @pytest.mark.parametrize("weight", [None, "w", np.zeros((6, 10), np.uint8)], ids=["none", "str", "ndarray"])
    def test_weight_not_packed(self, runtime, no_new_buffers, parts, weight):
        """A weight that is not a PackedWeight raises DTypeError naming 'weight'."""
        with no_new_buffers(), pytest.raises(DTypeError, match="'weight'"):
            q4gsw.linear(parts[0], weight)

    @pytest.mark.parametrize("kernel", ["nope", "", "GENERAL"])
    def test_unknown_kernel(self, runtime, no_new_buffers, parts, pw, kernel):
        """An unknown kernel name raises UnsupportedShapeError naming it, for empty batches too."""
        with no_new_buffers():
            with pytest.raises(UnsupportedShapeError, match=repr(kernel)):
                q4gsw.linear(parts[0], pw, kernel=kernel)
            with pytest.raises(UnsupportedShapeError, match=repr(kernel)):
                q4gsw.linear(parts[0][:0], pw, kernel=kernel)

    def test_kernel_unsupported_shape(self, runtime, no_new_buffers, parts, pw):
        """A kernel named for a shape it refuses raises UnsupportedShapeError with its reason."""
        p = Problem(3, N, K, GS)
        refusing = [name for name, spec in KERNELS.items() if spec.supports(p, runtime.caps)]
        if not refusing:
            pytest.skip("every kernel supports this shape on this adapter")
        with no_new_buffers(), pytest.raises(UnsupportedShapeError, match=repr(refusing[0])):
            q4gsw.linear(parts[0], pw, kernel=refusing[0])

    def test_loop_limited_adapter_refuses_rowwise(self, runtime, no_new_buffers, fake_caps, rng):
        """On llvmpipe of Mesa < 25, forcing rowwise past the loop budget raises UnsupportedShapeError, allocating nothing."""
        big = q4gsw.PackedWeight(random_weights(rng, 4096, 4096), random_scales(rng, 32, 4096), 128)
        x = rng.standard_normal((1, 4096)).astype(np.float32)
        with fake_caps(adapter_name="llvmpipe (LLVM 15.0.6, 256 bits)", driver="Mesa 22.3.6 (LLVM 15.0.6)"):
            assert runtime.caps.has_loop_limit
            with no_new_buffers(), pytest.raises(UnsupportedShapeError, match="'rowwise'.*65535"):
                q4gsw.linear(x, big, kernel="rowwise")

    def test_x_beyond_binding_limit(self, runtime, no_new_buffers, fake_limits, parts, pw):
        """An x larger than the storage binding limit raises SizeLimitError naming 'x'."""
        with fake_limits(max_storage_buffer_binding_size=4 * K * 2), no_new_buffers():
            with pytest.raises(SizeLimitError, match="'x'"):
                q4gsw.linear(parts[0], pw)

    def test_output_beyond_binding_limit(self, runtime, no_new_buffers, fake_limits, rng):
        """An output larger than the storage binding limit raises SizeLimitError."""
        weights, scales = random_weights(rng, 40, 8), random_scales(rng, 1, 40)
        wide = q4gsw.PackedWeight(weights, scales, 8)
        x = rng.standard_normal((2, 8)).astype(np.float32)  # 64 bytes in, 320 bytes out
        with fake_limits(max_storage_buffer_binding_size=256), no_new_buffers():
            with pytest.raises(SizeLimitError, match="'x'.*M=2, N=40"):
                q4gsw.linear(x, wide)

    def test_too_many_workgroups(self, runtime, no_new_buffers, fake_limits, parts, pw):
        """More workgroups than max-compute-workgroups-per-dimension squared raise SizeLimitError."""
        with fake_limits(max_compute_workgroups_per_dimension=1), no_new_buffers():
            with pytest.raises(SizeLimitError, match="workgroups"):
                q4gsw.linear(parts[0], pw, kernel="general")


class TestLinearQ4gsw:
    @pytest.mark.parametrize("case_id,make_x,error,fragment", BAD_X, ids=[c[0] for c in BAD_X])
    def test_bad_x(self, runtime, no_new_buffers, parts, case_id, make_x, error, fragment):
        """A malformed x raises DTypeError or ShapeError naming 'x' (or 'weights' when only K disagrees)."""
        x, weights, scales, bias = parts
        if case_id in ("x-wrong-K", "x-1-D-wrong-K", "x-transposed"):
            fragment = "'x'|'weights'"  # K comes from x: x and weights disagree
        with no_new_buffers(), pytest.raises(error, match=fragment):
            q4gsw.linear_q4gsw(make_x(x), weights, scales, GS, bias)

    def test_0d_x_with_one_byte_rows(self, runtime, no_new_buffers, rng):
        """A 0-d x is refused even when the weight rows are one byte (K = 1 would fit)."""
        weights, scales = random_weights(rng, 4, 2), random_scales(rng, 2, 4)
        with no_new_buffers(), pytest.raises(ShapeError, match="'x'"):
            q4gsw.linear_q4gsw(np.array(2.0, np.float32), weights, scales, 1)

    def test_x_with_k_0(self, runtime, no_new_buffers, parts):
        """An x with no columns raises ShapeError naming 'x', an argument of this op."""
        _, weights, scales, _ = parts
        with no_new_buffers(), pytest.raises(ShapeError, match="'x'"):
            q4gsw.linear_q4gsw(np.zeros((3, 0), np.float32), weights, scales, GS)

    @pytest.mark.parametrize("case_id,make_bias,error,fragment", BAD_BIAS, ids=[c[0] for c in BAD_BIAS])
    def test_bad_bias(self, runtime, no_new_buffers, parts, case_id, make_bias, error, fragment):
        """A malformed bias raises DTypeError or ShapeError naming 'bias'."""
        x, weights, scales, bias = parts
        with no_new_buffers(), pytest.raises(error, match=fragment):
            q4gsw.linear_q4gsw(x, weights, scales, GS, make_bias(bias))

    @pytest.mark.parametrize("case_id,make,error,fragment", BAD_ARRAYS_Q4GSW, ids=[c[0] for c in BAD_ARRAYS_Q4GSW])
    def test_bad_weights(self, runtime, no_new_buffers, parts, case_id, make, error, fragment):
        """Malformed weights or scales raise their ArgumentError subclass naming the argument."""
        x, weights, scales, bias = parts
        w, s = make(weights, scales)
        with no_new_buffers(), pytest.raises(error, match=fragment):
            q4gsw.linear_q4gsw(x, w, s, GS, bias)

    @pytest.mark.parametrize("group_size", BAD_GROUP_SIZE, ids=repr)
    def test_bad_group_size(self, runtime, no_new_buffers, parts, group_size):
        """A group size that is not a positive int raises GroupSizeError naming 'group_size'."""
        x, weights, scales, bias = parts
        with no_new_buffers(), pytest.raises(GroupSizeError, match="'group_size'"):
            q4gsw.linear_q4gsw(x, weights, scales, group_size, bias)

    @pytest.mark.parametrize("group_size", [True, 1.0], ids=repr)
    def test_bad_group_size_after_cached_call(self, runtime, rng, group_size):
        """A bad group size is refused even right after a valid call cached the same arrays with group size 1."""
        weights, scales = random_weights(rng, 4, 6), random_scales(rng, 6, 4)
        x = rng.standard_normal((2, 6)).astype(np.float32)
        q4gsw.linear_q4gsw(x, weights, scales, 1)
        with pytest.raises(GroupSizeError, match="'group_size'"):
            q4gsw.linear_q4gsw(x, weights, scales, group_size)

    @pytest.mark.parametrize("case_id,make", OP_NAMED, ids=[c[0] for c in OP_NAMED])
    def test_errors_name_the_op(self, runtime, parts, case_id, make):
        """Argument errors of linear_q4gsw name linear_q4gsw as the function, not an internal class."""
        x, weights, scales, _ = parts
        with pytest.raises(ArgumentError) as info:
            q4gsw.linear_q4gsw(*make(x, weights, scales))
        assert info.value.function == "linear_q4gsw"
        assert str(info.value).startswith("linear_q4gsw:")

    def test_unknown_kernel(self, runtime, no_new_buffers, parts):
        """An unknown kernel name raises UnsupportedShapeError."""
        x, weights, scales, bias = parts
        with no_new_buffers(), pytest.raises(UnsupportedShapeError, match="'nope'"):
            q4gsw.linear_q4gsw(x, weights, scales, GS, bias, kernel="nope")

    def test_beyond_binding_limit(self, runtime, no_new_buffers, fake_limits, parts):
        """An x larger than the storage binding limit raises SizeLimitError naming 'x'."""
        x, weights, scales, bias = parts
        with fake_limits(max_storage_buffer_binding_size=64), no_new_buffers():
            with pytest.raises(SizeLimitError, match="'x'"):
                q4gsw.linear_q4gsw(x, weights.copy(), scales.copy(), GS, bias)


class TestPackedWeight:
    @pytest.mark.parametrize("group_size", BAD_GROUP_SIZE, ids=repr)
    def test_bad_group_size(self, runtime, no_new_buffers, parts, group_size):
        """A group size that is not a positive int raises GroupSizeError naming 'group_size'."""
        with no_new_buffers(), pytest.raises(GroupSizeError, match="'group_size'"):
            q4gsw.PackedWeight(parts[1], parts[2], group_size)

    @pytest.mark.parametrize("case_id,make,error,fragment", BAD_ARRAYS_PACKED, ids=[c[0] for c in BAD_ARRAYS_PACKED])
    def test_bad_arrays(self, runtime, no_new_buffers, parts, case_id, make, error, fragment):
        """Malformed arrays raise their ArgumentError subclass naming the argument, allocating nothing."""
        with no_new_buffers(), pytest.raises(error, match=fragment):
            q4gsw.PackedWeight(*make(parts[1], parts[2]), GS)


class TestQuantize:
    @pytest.mark.parametrize("w,group_size,error,fragment", [
        ([[1.0]], 8, DTypeError, "'w'"),
        (np.ones((2, 8), np.int32), 8, DTypeError, "'w'"),
        (np.ones(8, np.float32), 8, ShapeError, "'w'"),
        (np.full((2, 8), np.nan, np.float32), 8, q4gsw.ValueRangeError, "'w'"),
        (np.ones((2, 8), np.float32), 0, GroupSizeError, "'group_size'"),
        (np.ones((2, 8), np.float32), True, GroupSizeError, "'group_size'"),
        (np.ones((2, 8), np.float32), 2.5, GroupSizeError, "'group_size'"),
    ], ids=["list", "int32", "1-D", "nan", "gs-0", "gs-bool", "gs-float"])
    def test_bad_input(self, runtime, no_new_buffers, w, group_size, error, fragment):
        """Bad weights or group sizes raise their ArgumentError subclass naming the argument."""
        with no_new_buffers(), pytest.raises(error, match=fragment):
            q4gsw.quantize(w, group_size)


class TestHierarchy:
    @pytest.mark.parametrize("error,bases", [
        (ArgumentError, (Q4gswError, ValueError)),
        (DTypeError, (ArgumentError, Q4gswError, TypeError, ValueError)),
        (ShapeError, (ArgumentError, Q4gswError, ValueError)),
        (GroupSizeError, (ArgumentError, Q4gswError, ValueError)),
        (SizeLimitError, (ArgumentError, Q4gswError, ValueError)),
        (UnsupportedShapeError, (Q4gswError,)),
        (DeviceError, (Q4gswError, RuntimeError)),
        (ShaderError, (Q4gswError,)),
        (ProfilerError, (Q4gswError,)),
    ], ids=lambda v: v.__name__ if isinstance(v, type) else None)
    def test_bases(self, error, bases):
        """Each error subclasses Q4gswError and the builtin exception its kind of failure calls for."""
        for base in bases:
            assert issubclass(error, base)

    def test_argument_error_fields(self):
        """An ArgumentError keeps function, argument, expected and got, and says them all."""
        err = ShapeError("linear", "x", "(..., K)", "shape ()")
        assert (err.function, err.argument, err.expected, err.got) == ("linear", "x", "(..., K)", "shape ()")
        assert "linear" in str(err) and "'x'" in str(err) and "(..., K)" in str(err) and "shape ()" in str(err)

    def test_caught_as_builtin(self, parts, pw):
        """Callers that catch TypeError or ValueError catch q4gsw's argument errors."""
        with pytest.raises(TypeError):
            q4gsw.linear(parts[0].astype(np.float64), pw)
        with pytest.raises(ValueError):
            q4gsw.linear(parts[0][:, :3].copy(), pw)
