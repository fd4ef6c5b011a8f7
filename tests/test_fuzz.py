"""Malformed calls to every public entry point, generated: each raises its named Q4gswError
subclass naming the argument, and creates no GPU buffer (see docs/reliability.md)."""

from __future__ import annotations

import contextlib
import dataclasses
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import q4gsw
from q4gsw import DTypeError, GroupSizeError, ShapeError, SizeLimitError, UnsupportedShapeError, ValueRangeError
from q4gsw.format import padded_row_bytes
from q4gsw.kernels import KERNELS

try:  # torch tensors of a wrong dtype are among the bad values when torch is installed
    import torch
except ImportError:
    torch = None

#: Examples in the default run and in the slow run (`pytest -m slow tests/test_fuzz.py`).
DEFAULT_EXAMPLES = 500
SLOW_EXAMPLES = 20_000

BAD_FLOAT_DTYPES = (np.float16, np.float64, np.int8, np.int32, np.uint8, np.bool_, np.complex64)
BAD_U8_DTYPES = (np.int8, np.uint16, np.int32, np.float32, np.bool_)
NOT_ARRAYS = (None, 1.0, 3, "x", b"\x00", [1.0, 2.0], ((1.0,),), object())
BAD_GROUP_SIZES = (0, -1, -128, 1.5, 8.0, True, False, "8", None, np.float32(8), [8], np.int64(-3))


@dataclasses.dataclass
class Call:
    """One malformed call and what it must raise."""

    function: str
    run: object  # () -> result
    error: type
    argument: str | None  # None: an UnsupportedShapeError, whose message names `fragment`
    fragment: str = ""
    limits: dict = dataclasses.field(default_factory=dict)


@contextlib.contextmanager
def patched_limits(runtime, limits):
    """runtime.caps with some limits replaced (the fixtures are function-scoped; @given is not)."""
    if not limits:
        yield
        return
    saved = runtime.caps
    merged = {**saved.limits, **{k.replace("_", "-"): v for k, v in limits.items()}}
    runtime.caps = dataclasses.replace(saved, limits=merged)
    try:
        yield
    finally:
        runtime.caps = saved


# -- layouts: a bad array stays bad whatever its memory layout --------------------------------

def relayout(draw, arr):
    """arr as it is, read-only, Fortran-ordered, reversed or strided: the same values."""
    if not isinstance(arr, np.ndarray) or arr.ndim == 0:
        return arr
    how = draw(st.sampled_from(("as-is", "read-only", "fortran", "reversed", "strided")))
    if how == "read-only":
        arr = arr.copy()
        arr.flags.writeable = False
    elif how == "fortran":
        arr = np.asfortranarray(arr)
    elif how == "reversed":
        arr = np.ascontiguousarray(arr[::-1])[::-1]
    elif how == "strided":
        wide = np.zeros((*arr.shape[:-1], 2 * arr.shape[-1]), arr.dtype)
        wide[..., ::2] = arr
        arr = wide[..., ::2]
    return arr


# -- bad values for one argument ---------------------------------------------------------------

def bad_dtype(draw, arr, dtypes):
    """arr cast to a dtype from dtypes other than its own, or a torch tensor of a wrong dtype."""
    dtype = draw(st.sampled_from([d for d in dtypes if np.dtype(d) != arr.dtype]))
    if torch is not None and np.dtype(dtype) in (np.float64, np.float16, np.int32, np.uint8, np.int8) \
            and draw(st.integers(0, 4)) == 0:
        return torch.from_numpy(np.ascontiguousarray(arr.astype(dtype)))
    with np.errstate(all="ignore"):
        return arr.astype(dtype)


def bad_rank(draw, arr, ok_ranks):
    """An array of arr's dtype whose rank is not in ok_ranks."""
    rank = draw(st.sampled_from([r for r in range(0, 4) if r not in ok_ranks]))
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=rank, max_size=rank)))
    return np.zeros(shape, arr.dtype)


# -- the base problem ---------------------------------------------------------------------------

@st.composite
def problems(draw):
    """A valid small problem: (x, weights, scales, group_size, bias, K)."""
    n = draw(st.integers(1, 12))
    k = draw(st.integers(1, 40))
    gs = draw(st.integers(1, 48))
    lead = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=2)))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    groups = -(-k // gs)
    x = rng.standard_normal((*lead, k)).astype(np.float32)
    weights = rng.integers(0, 256, (n, (k + 1) // 2), dtype=np.uint8)
    scales = rng.uniform(0.1, 1.0, (groups + draw(st.integers(0, 2)), n + draw(st.integers(0, 3)))).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    return x, weights, scales, gs, bias, k


# -- malformed calls, one per entry point ----------------------------------------------------------

def bad_x(draw, x, k):
    """(bad x, error) for an op whose K is fixed by the weight."""
    kind = draw(st.sampled_from(("dtype", "not-array", "rank-0", "wrong-K")))
    if kind == "dtype":
        return bad_dtype(draw, x, BAD_FLOAT_DTYPES), DTypeError
    if kind == "not-array":
        return draw(st.sampled_from(NOT_ARRAYS)), DTypeError
    if kind == "rank-0":
        return np.array(1.0, np.float32), ShapeError
    other = draw(st.integers(0, 80).filter(lambda v: v != k))
    return np.zeros((*x.shape[:-1], other), np.float32), ShapeError


def bad_bias(draw, bias):
    kind = draw(st.sampled_from(("dtype", "not-array", "rank", "length")))
    if kind == "dtype":
        return bad_dtype(draw, bias, BAD_FLOAT_DTYPES), DTypeError
    if kind == "not-array":
        return draw(st.sampled_from([v for v in NOT_ARRAYS if v is not None])), DTypeError
    if kind == "rank":
        return bad_rank(draw, bias, (1,)), ShapeError
    return np.zeros(draw(st.integers(0, 20).filter(lambda v: v != bias.shape[0])), np.float32), ShapeError


def bad_weights_scales(draw, weights, scales, gs, k):
    """(weights, scales, error, argument) with exactly one of the two malformed for K = k."""
    groups = -(-k // gs)
    kind = draw(st.sampled_from(("w-dtype", "w-not-array", "w-rank", "w-row-bytes", "w-no-rows",
                                 "s-dtype", "s-not-array", "s-rank", "s-few-groups", "s-few-cols")))
    if kind == "w-dtype":
        return bad_dtype(draw, weights, BAD_U8_DTYPES), scales, DTypeError, "weights"
    if kind == "w-not-array":
        return draw(st.sampled_from(NOT_ARRAYS)), scales, DTypeError, "weights"
    if kind == "w-rank":
        return bad_rank(draw, weights, (2,)), scales, ShapeError, "weights"
    if kind == "w-row-bytes":
        other = draw(st.integers(0, 30).filter(lambda v: v not in padded_row_bytes(k)))  # (padded rows are valid)
        return np.zeros((weights.shape[0], other), np.uint8), scales, ShapeError, "weights"
    if kind == "w-no-rows":
        return weights[:0], scales, ShapeError, "weights"
    if kind == "s-dtype":
        return weights, bad_dtype(draw, scales, BAD_FLOAT_DTYPES), DTypeError, "weight_scales"
    if kind == "s-not-array":
        return weights, draw(st.sampled_from(NOT_ARRAYS)), DTypeError, "weight_scales"
    if kind == "s-rank":
        return weights, bad_rank(draw, scales, (2,)), ShapeError, "weight_scales"
    if kind == "s-few-groups":
        return weights, scales[: draw(st.integers(0, groups - 1))], GroupSizeError, "weight_scales"
    return weights, scales[:, : draw(st.integers(0, weights.shape[0] - 1))], ShapeError, "weight_scales"


def call_linear(draw, x, weights, scales, gs, bias, k):
    pw = q4gsw.PackedWeight(weights, scales, gs, in_features=k)
    kind = draw(st.sampled_from(("x", "bias", "weight", "kernel", "x-binding", "out-binding", "workgroups")))
    if kind == "x":
        bx, err = bad_x(draw, x, k)
        bx = relayout(draw, bx)
        return Call("linear", lambda: q4gsw.linear(bx, pw, bias), err, "x")
    if kind == "bias":
        bb, err = bad_bias(draw, bias)
        bb = relayout(draw, bb)
        return Call("linear", lambda: q4gsw.linear(x, pw, bb), err, "bias")
    if kind == "weight":
        w = draw(st.sampled_from((None, "w", weights, (weights, scales), 3)))
        return Call("linear", lambda: q4gsw.linear(x, w, bias), DTypeError, "weight")
    if kind == "kernel":
        name = draw(st.one_of(st.sampled_from(("", "GENERAL", "decode", "tiled ", "nope")),
                              st.text(max_size=8)).filter(lambda s: s not in KERNELS))
        return Call("linear", lambda: q4gsw.linear(x, pw, bias, kernel=name), UnsupportedShapeError, None, repr(name))
    m = int(np.prod(x.shape[:-1]))
    if kind == "x-binding":  # x's 4 M K bytes are 1 to 4 words past the limit
        limit = max(0, 4 * m * k - 4 * draw(st.integers(1, 4)))
        return Call("linear", lambda: q4gsw.linear(x, pw, bias), SizeLimitError, "x",
                    limits={"max_storage_buffer_binding_size": limit})
    if kind == "out-binding":  # the output's 4 M N bytes one word past the limit (x may fit)
        return Call("linear", lambda: q4gsw.linear(x, pw, bias), SizeLimitError, "x",
                    limits={"max_storage_buffer_binding_size": 4 * m * weights.shape[0] - 4})
    # workgroups: general needs N * ceil(M / 4); the largest dim with dim^2 below that
    tiles = weights.shape[0] * -(-m // 4)
    dim = int(np.sqrt(tiles - 1)) if tiles > 1 else 0
    kernel = "general"
    if dim < 1:  # one tile: any limit of at least 1 runs it; a limit of 0 runs nothing
        kernel = draw(st.sampled_from(("general", None)))
    return Call("linear", lambda: q4gsw.linear(x, pw, bias, kernel=kernel), SizeLimitError, "x",
                limits={"max_compute_workgroups_per_dimension": dim})


def call_linear_q4gsw(draw, x, weights, scales, gs, bias, k):
    kind = draw(st.sampled_from(("x", "x-K-0", "arrays", "group_size", "bias", "kernel")))
    fn = q4gsw.linear_q4gsw
    if kind == "x":
        sub = draw(st.sampled_from(("dtype", "not-array", "rank-0", "K")))
        if sub == "dtype":
            bx, err, arg = bad_dtype(draw, x, BAD_FLOAT_DTYPES), DTypeError, "x"
        elif sub == "not-array":
            bx, err, arg = draw(st.sampled_from(NOT_ARRAYS)), DTypeError, "x"
        elif sub == "rank-0":
            bx, err, arg = np.array(1.0, np.float32), ShapeError, "x"
        else:  # K from x: its bytes per row disagree with the weights'
            other = draw(st.integers(1, 80).filter(lambda v: (k + 1) // 2 not in padded_row_bytes(v)))
            bx, err, arg = np.zeros((*x.shape[:-1], other), np.float32), ShapeError, "weights"
        bx = relayout(draw, bx)
        return Call("linear_q4gsw", lambda: fn(bx, weights, scales, gs, bias), err, arg)
    if kind == "x-K-0":
        return Call("linear_q4gsw", lambda: fn(np.zeros((2, 0), np.float32), weights, scales, gs), ShapeError, "x")
    if kind == "arrays":
        w, s, err, arg = bad_weights_scales(draw, weights, scales, gs, k)
        w, s = relayout(draw, w), relayout(draw, s)
        return Call("linear_q4gsw", lambda: fn(x, w, s, gs, bias), err, arg)
    if kind == "group_size":
        g = draw(st.sampled_from(BAD_GROUP_SIZES))
        return Call("linear_q4gsw", lambda: fn(x, weights, scales, g, bias), GroupSizeError, "group_size")
    if kind == "bias":
        bb, err = bad_bias(draw, bias)
        bb = relayout(draw, bb)
        return Call("linear_q4gsw", lambda: fn(x, weights, scales, gs, bb), err, "bias")
    name = draw(st.sampled_from(("", "Tiled", "decode", "x")))
    return Call("linear_q4gsw", lambda: fn(x, weights, scales, gs, bias, kernel=name), UnsupportedShapeError, None,
                repr(name))


def call_packed_weight(draw, x, weights, scales, gs, bias, k):
    kind = draw(st.sampled_from(("arrays", "group_size", "in_features", "in_features-mismatch")))
    if kind == "arrays":
        w, s, err, arg = bad_weights_scales(draw, weights, scales, gs, k)
        w, s = relayout(draw, w), relayout(draw, s)
        return Call("PackedWeight", lambda: q4gsw.PackedWeight(w, s, gs, in_features=k), err, arg)
    if kind == "group_size":
        g = draw(st.sampled_from(BAD_GROUP_SIZES))
        return Call("PackedWeight", lambda: q4gsw.PackedWeight(weights, scales, g), GroupSizeError, "group_size")
    if kind == "in_features":
        kf = draw(st.sampled_from((0, -1, 2.0, True, "4", np.float64(4))))
        return Call("PackedWeight", lambda: q4gsw.PackedWeight(weights, scales, gs, in_features=kf),
                    ShapeError, "in_features")
    other = draw(st.integers(1, 90).filter(lambda v: (k + 1) // 2 not in padded_row_bytes(v)))
    return Call("PackedWeight", lambda: q4gsw.PackedWeight(weights, scales, gs, in_features=other),
                ShapeError, "weights")


def call_quantize(draw, x, weights, scales, gs, bias, k):
    w = x.reshape(-1, k).copy()
    kind = draw(st.sampled_from(("dtype", "not-array", "rank", "empty", "nan", "inf", "beyond-f32", "group_size")))
    if kind in ("dtype", "not-array", "rank", "empty"):
        if kind == "dtype":
            bw, err = relayout(draw, bad_dtype(draw, w, (np.float16, np.int8, np.int32, np.uint8, np.bool_))), DTypeError
        elif kind == "not-array":
            bw, err = draw(st.sampled_from(NOT_ARRAYS)), DTypeError
        elif kind == "rank":
            bw, err = relayout(draw, bad_rank(draw, w, (2,))), ShapeError
        else:
            bw, err = np.zeros(draw(st.sampled_from(((0, 4), (3, 0)))), np.float32), ShapeError
        return Call("quantize", lambda: q4gsw.quantize(bw, gs), err, "w")
    if kind in ("nan", "inf"):
        i, j = draw(st.integers(0, w.shape[0] - 1)), draw(st.integers(0, k - 1))
        w[i, j] = np.nan if kind == "nan" else draw(st.sampled_from((np.inf, -np.inf)))
        if draw(st.booleans()):
            w = w.astype(np.float64)
        w = relayout(draw, w)
        return Call("quantize", lambda: q4gsw.quantize(w, gs), ValueRangeError, "w")
    if kind == "beyond-f32":
        w64 = w.astype(np.float64)
        w64[draw(st.integers(0, w.shape[0] - 1)), draw(st.integers(0, k - 1))] = draw(st.sampled_from((1e39, -1e300)))
        return Call("quantize", lambda: q4gsw.quantize(w64, gs), ValueRangeError, "w")
    g = draw(st.sampled_from(BAD_GROUP_SIZES))
    return Call("quantize", lambda: q4gsw.quantize(w, g), GroupSizeError, "group_size")


def call_pack_unpack(draw, x, weights, scales, gs, bias, k):
    kind = draw(st.sampled_from(("pack-dtype", "pack-rank", "pack-range",
                                 "unpack-dtype", "unpack-rank", "unpack-k", "unpack-k-mismatch")))
    q = np.random.default_rng(k).integers(-8, 8, (weights.shape[0], k)).astype(np.int8)
    if kind == "pack-dtype":
        bq = relayout(draw, q.astype(draw(st.sampled_from((np.float32, np.float64, np.bool_, np.complex64)))))
        return Call("pack_int4", lambda: q4gsw.pack_int4(bq), DTypeError, "q")
    if kind == "pack-rank":
        bq = bad_rank(draw, q, (2,))
        return Call("pack_int4", lambda: q4gsw.pack_int4(bq), DTypeError, "q")
    if kind == "pack-range":
        bq = q.astype(np.int32)
        bq[draw(st.integers(0, q.shape[0] - 1)), draw(st.integers(0, k - 1))] = draw(
            st.one_of(st.integers(8, 2**31 - 1), st.integers(-(2**31), -9)))
        bq = relayout(draw, bq)
        return Call("pack_int4", lambda: q4gsw.pack_int4(bq), ValueRangeError, "q")
    if kind in ("unpack-dtype", "unpack-rank"):
        bw = bad_dtype(draw, weights, BAD_U8_DTYPES) if kind == "unpack-dtype" else bad_rank(draw, weights, (2,))
        err = DTypeError if kind == "unpack-dtype" else ShapeError
        return Call("unpack_int4", lambda: q4gsw.unpack_int4(bw, k), err, "weights")
    if kind == "unpack-k":
        bk = draw(st.sampled_from((0, -2, 2.0, True, None, "8")))
        return Call("unpack_int4", lambda: q4gsw.unpack_int4(weights, bk), ShapeError, "k")
    other = draw(st.integers(1, 90).filter(lambda v: (v + 1) // 2 != (k + 1) // 2))
    rw = relayout(draw, weights)
    return Call("unpack_int4", lambda: q4gsw.unpack_int4(rw, other), ShapeError, "weights")


ENTRY_POINTS = {
    "linear": call_linear,
    "linear_q4gsw": call_linear_q4gsw,
    "PackedWeight": call_packed_weight,
    "quantize": call_quantize,
    "pack_int4/unpack_int4": call_pack_unpack,
}

#: Calls checked per entry point in this process (reported by the tests, see docs/reliability.md).
COUNTS: dict[str, int] = {}


def check_one(runtime, data) -> None:
    """Draw a problem and one malformed call; it raises as promised and creates no GPU buffer."""
    problem = data.draw(problems(), label="problem")
    entry = data.draw(st.sampled_from(sorted(ENTRY_POINTS)), label="entry point")
    call = ENTRY_POINTS[entry](data.draw, *problem)
    before = runtime.buffers.created
    with patched_limits(runtime, call.limits):
        with pytest.raises(call.error) as info:
            call.run()
    assert runtime.buffers.created == before, f"{call.function}: an error path created a GPU buffer"
    err = info.value
    assert isinstance(err, q4gsw.Q4gswError)
    if call.argument is None:
        assert call.fragment in str(err)
    else:
        assert err.argument == call.argument, f"named {err.argument!r}, expected {call.argument!r}: {err}"
        assert err.function == call.function, str(err)
        assert f"'{call.argument}'" in str(err) and str(err).startswith(f"{call.function}:")
    COUNTS[call.function] = COUNTS.get(call.function, 0) + 1


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    """Print the number of generated calls per function at the end of the module (-s shows it)."""
    yield
    if COUNTS:
        print(f"\nfuzz: {sum(COUNTS.values())} malformed calls checked: {dict(sorted(COUNTS.items()))}")


class TestMalformedCalls:
    @settings(max_examples=DEFAULT_EXAMPLES, suppress_health_check=[HealthCheck.too_slow], deadline=None)
    @given(data=st.data())
    def test_refused(self, runtime, data):
        """A malformed call to any entry point raises its named ArgumentError subclass (or
        UnsupportedShapeError for a kernel name), names the argument, and creates no buffer."""
        check_one(runtime, data)

    @pytest.mark.slow
    @settings(max_examples=SLOW_EXAMPLES, suppress_health_check=list(HealthCheck), deadline=None)
    @given(data=st.data())
    def test_refused_many(self, runtime, data):
        """The same property over 20 000 generated calls."""
        check_one(runtime, data)

    def test_every_entry_point_covered(self, runtime):
        """The generated calls of this run reached every entry point (run after test_refused)."""
        if not COUNTS:
            pytest.skip("test_refused did not run in this process")
        functions = {"linear", "linear_q4gsw", "PackedWeight", "quantize", "pack_int4", "unpack_int4"}
        assert functions <= set(COUNTS), COUNTS
        assert sum(COUNTS.values()) >= DEFAULT_EXAMPLES


# -- sizes refused before any copy -----------------------------------------------------------------

def fake_huge(row: np.ndarray, rows: int) -> np.ndarray:
    """A read-only (rows, len(row)) view of one row (zero row stride): huge shape, no memory."""
    return np.broadcast_to(row, (rows, row.shape[0]))


class TestRefusedBeforeCopy:
    """Arrays whose logical size is huge (zero-stride views) are refused from their shape alone."""

    def test_huge_x(self, runtime, no_new_buffers):
        """An x of 2^40 rows (a zero-stride view) raises SizeLimitError naming 'x', allocating nothing."""
        pw = q4gsw.quantize(np.ones((4, 64), np.float32), 32)
        with no_new_buffers(), pytest.raises(SizeLimitError, match="'x'"):
            q4gsw.linear(fake_huge(np.ones(64, np.float32), 2**40), pw)

    def test_x_beyond_limit_not_copied(self, runtime, no_new_buffers):
        """An x past the binding limit is refused without copying it (tracemalloc peak < 1 MiB)."""
        pw = q4gsw.quantize(np.ones((4, 64), np.float32), 32)
        x = fake_huge(np.ones(64, np.float32), 2**20)  # 256 MiB if copied; limit 128 MiB on lavapipe
        tracemalloc.start()
        try:
            with no_new_buffers(), pytest.raises(SizeLimitError, match="'x'"):
                q4gsw.linear(x, pw)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 1 << 20, f"{peak / 2**20:.0f} MiB allocated to refuse x"

    def test_huge_bias(self, runtime, no_new_buffers):
        """A bias of 2^40 elements (zero stride) raises ShapeError naming 'bias', allocating nothing."""
        pw = q4gsw.quantize(np.ones((4, 64), np.float32), 32)
        bias = np.broadcast_to(np.ones(1, np.float32), (2**40,))
        with no_new_buffers(), pytest.raises(ShapeError, match="'bias'"):
            q4gsw.linear(np.ones((1, 64), np.float32), pw, bias)

    def test_huge_weights_wrong_k(self, runtime, no_new_buffers):
        """Weights of 2^40 rows whose row bytes (32) are neither ceil(K/2) = 35 nor a padding of K = 70 raise
        ShapeError, allocating nothing."""
        weights = fake_huge(np.zeros(32, np.uint8), 2**40)
        with no_new_buffers(), pytest.raises(ShapeError, match="'weights'"):
            q4gsw.PackedWeight(weights, np.ones((1, 4), np.float32), 64, in_features=70)

    def test_huge_x_contiguous_shape_is_checked(self, runtime, no_new_buffers, fake_limits):
        """A contiguous x is never copied: past a (fake) limit it is refused at once."""
        pw = q4gsw.quantize(np.ones((4, 64), np.float32), 32)
        x = np.ones((64, 64), np.float32)
        with fake_limits(max_storage_buffer_binding_size=4 * 64 * 64 - 4), no_new_buffers():
            tracemalloc.start()
            try:
                with pytest.raises(SizeLimitError, match="'x'"):
                    q4gsw.linear(x, pw)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
        assert peak < 64 * 64 * 4


class TestGroupSizeBeyondU32:
    def test_runs_or_refused(self, runtime, no_new_buffers):
        """A group size >= 2^32 (one group, valid per the format) runs like group_size = K."""
        pw = q4gsw.quantize(np.ones((4, 64), np.float32), 64)
        big = q4gsw.PackedWeight(pw.weights, pw.scales, 2**40, in_features=64)
        x = np.ones((1, 64), np.float32)
        np.testing.assert_allclose(q4gsw.linear(x, big), q4gsw.linear(x, pw))

    def test_u32_max_runs(self, runtime):
        """group_size = 2^32 - 1 (the largest a u32 holds) runs like group_size = K."""
        pw = q4gsw.quantize(np.ones((4, 64), np.float32), 64)
        big = q4gsw.PackedWeight(pw.weights, pw.scales, 2**32 - 1, in_features=64)
        x = np.ones((1, 64), np.float32)
        np.testing.assert_allclose(q4gsw.linear(x, big), q4gsw.linear(x, pw))
