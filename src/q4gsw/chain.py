"""Device-resident chains: GpuTensor, and a Chain that records ops once and replays them in one submit."""

from __future__ import annotations

import math

import numpy as np

from .arith import ceil_div
from .checks import as_array, describe, positive_int
from .errors import DTypeError, ShapeError
from .format import DenseWeight, PackedWeight
from .kernels import Problem
from .kernels.dense import DenseProblem
from .ops.dense import choose_dense, plan_dense
from .ops.plan import choose_kernel, gpu_placeholder, plan_linear
from .runtime import get_runtime
from .runtime.dispatch import Dispatch, bind
from .runtime.pipelines import KernelKey
from .runtime.submit import record_pass, submit

#: Invocations per workgroup of the elementwise kernels and of rms_norm.
ELEMENTWISE_WG = 256
RMS_NORM_WG = 128


#: The element types a GpuTensor can hold ("float16": a half-precision KV cache).
DTYPES = ("float32", "uint32", "float16")


class GpuTensor:
    """A tensor that lives in a GPU buffer: made by upload() / empty() or returned by Chain ops.

    Attributes:
        shape: the tensor's shape (row-major, contiguous).
        buffer: the wgpu buffer (at least nbytes, rounded up to a multiple of 4).
        runtime: the Runtime whose device holds the buffer.
        dtype: "float32" (every op's data), "uint32" (token ids, positions) or "float16"
            (a KV cache stored in half precision, CausalLM(kv_cache="f16")).
    """

    __slots__ = ("shape", "buffer", "runtime", "dtype", "__weakref__")

    def __init__(self, buffer, shape: tuple[int, ...], runtime, dtype: str = "float32"):
        self.buffer = buffer
        self.shape = tuple(int(s) for s in shape)
        self.runtime = runtime
        self.dtype = dtype

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return np.dtype(self.dtype).itemsize * self.size

    def numpy(self) -> np.ndarray:
        """Read back: a new ndarray of `shape` and `dtype` (waits for the GPU work submitted so far)."""
        return self.runtime.buffers.read(self.buffer, self.nbytes, np.dtype(self.dtype)).reshape(self.shape)

    def write(self, array) -> None:
        """Overwrite the contents with an array (ndarray or CPU torch.Tensor) of `shape` and `dtype`."""
        arr = as_array("GpuTensor.write", "array", array, np.dtype(self.dtype))
        if arr.shape != self.shape:
            raise ShapeError("GpuTensor.write", "array", f"shape {self.shape}", describe(array))
        self.runtime.device.queue.write_buffer(self.buffer, 0, arr)

    def release(self) -> None:
        """Free the GPU buffer now (it is also freed when garbage-collected)."""
        self.runtime.buffers.destroy(self.buffer)

    def __repr__(self) -> str:
        return f"GpuTensor(shape={self.shape}, dtype={self.dtype})"


def _usage(runtime):
    u = runtime.wgpu.BufferUsage
    return u.STORAGE | u.COPY_SRC | u.COPY_DST


def upload(x, *, runtime=None) -> GpuTensor:
    """Copy a float32 (or uint32) array to the GPU.

    Args:
        x: float32 or uint32 ndarray, or CPU torch.Tensor, of any shape with at least one element.
        runtime: the Runtime (default: the process's).
    Returns:
        a GpuTensor of x's shape and dtype.
    """
    dtype = np.uint32 if isinstance(x, np.ndarray) and x.dtype == np.uint32 else np.float32
    arr = as_array("upload", "x", x, dtype)
    if arr.size == 0:
        raise ShapeError("upload", "x", "at least one element", describe(x))
    runtime = runtime or get_runtime()
    return GpuTensor(runtime.buffers.upload(arr, _usage(runtime), "q4gsw/tensor"), arr.shape, runtime, arr.dtype.name)


def empty(shape, *, dtype: str = "float32", runtime=None) -> GpuTensor:
    """An uninitialized GpuTensor of `shape` (e.g. an input a Chain is fed through)."""
    shape = tuple(shape)
    for s in shape:
        positive_int("empty", "shape", s, ShapeError)
    if dtype not in DTYPES:
        raise DTypeError("empty", "dtype", f"one of {DTYPES}", repr(dtype))
    runtime = runtime or get_runtime()
    nbytes = np.dtype(dtype).itemsize * math.prod(shape)
    return GpuTensor(runtime.buffers.create(nbytes, _usage(runtime), "q4gsw/tensor"), shape, runtime, dtype)


class Chain:
    """Ops recorded once against GpuTensors, replayed by run() in one compute pass and one submit.

    Recording creates every output buffer, params buffer and bind group; run() only encodes
    the recorded dispatches (set_pipeline, set_bind_group, dispatch_workgroups each) and
    submits, so replaying a chain allocates nothing on the GPU. Outputs are distinct buffers
    that stay valid (and hold the latest run's values) until release().

    Example:
        chain = Chain()
        x = chain.input((1, 4096))
        h = chain.add(x, chain.linear(chain.rms_norm(x, norm_w), pw))
        chain.run({x: x_np})
        y = h.numpy()
    """

    def __init__(self, *, runtime=None, label: str = "q4gsw/chain"):
        self.runtime = runtime or get_runtime()
        self.label = label
        self.dispatches: list[Dispatch] = []
        self._owned: list = []  # buffers freed by release()
        self._outputs: list[GpuTensor] = []
        self._zero = None

    # --- tensors -----------------------------------------------------------------------------

    def input(self, shape, *, dtype: str = "float32") -> GpuTensor:
        """A tensor owned by the chain, filled through run(feeds) or GpuTensor.write."""
        t = empty(shape, dtype=dtype, runtime=self.runtime)
        self._owned.append(t.buffer)
        return t

    def constant(self, array) -> GpuTensor:
        """A float32 array uploaded once and owned by the chain (norm weights, biases, …)."""
        t = upload(array, runtime=self.runtime)
        self._owned.append(t.buffer)
        return t

    # --- for op modules (q4gsw.llm.ops): outputs, params, dispatches ------------------------

    def output(self, shape, *, dtype: str = "float32") -> GpuTensor:
        """A new tensor owned by the chain that an op writes (poisoned before each run when the
        runtime poisons outputs)."""
        t = empty(shape, dtype=dtype, runtime=self.runtime)
        self._owned.append(t.buffer)
        self._outputs.append(t)
        return t

    def params(self, words) -> object:
        """A uniform buffer holding `words` (a kernel's params struct), owned by the chain."""
        buf = self.runtime.buffers.upload(np.asarray(words, np.uint32), self.runtime.wgpu.BufferUsage.UNIFORM,
                                          "q4gsw/params")
        self._owned.append(buf)
        return buf

    def tensor(self, fn: str, name: str, t, *, dtype: str = "float32") -> GpuTensor:
        """t checked: a GpuTensor of this chain's device and of `dtype` (else DTypeError)."""
        if not isinstance(t, GpuTensor):
            raise DTypeError(fn, name, "a q4gsw.chain.GpuTensor (see upload, Chain.input)", describe(t))
        if t.runtime is not self.runtime:
            raise DTypeError(fn, name, "a GpuTensor of this chain's device", "one of another Runtime")
        if t.dtype != dtype:
            raise DTypeError(fn, name, f"a {dtype} GpuTensor", repr(t))
        return t

    def record(self, name: str, constants: tuple, buffers, workgroups: int, nbytes: int, *,
               family: str = "chain", files: tuple = ()) -> None:
        """Record <family>/<name>.wgsl (or `files` joined, see KernelKey) over `buffers`
        (bindings 0, 1, ...) on `workgroups` workgroups."""
        key = KernelKey(name, constants, family=family, files=files)
        self.dispatches.append(bind(self.runtime, key, buffers, workgroups, nbytes=nbytes))

    # --- ops ---------------------------------------------------------------------------------

    def linear(self, x: GpuTensor, weight: PackedWeight, bias=None, *, kernel=None,
               activations: str = "f32") -> GpuTensor:
        """out = x @ dequantize(weight).T (+ bias), as q4gsw.linear computes it.

        Args:
            x: (..., K) GpuTensor.
            weight: the PackedWeight (uploaded once per device, kept by the runtime).
            bias: optional (N,) float32 ndarray / CPU torch.Tensor (uploaded now), or a GpuTensor.
            kernel: force a kernel by name or KernelSpec (default: chosen as q4gsw.linear chooses).
            activations: "f32" (exact, default) or "int8" (x quantized on the GPU per row and
                group, as q4gsw.linear(activations="int8")).
        Returns:
            (..., N) GpuTensor.
        """
        fn = "Chain.linear"
        x = self.tensor(fn, "x", x)
        if not isinstance(weight, PackedWeight):
            raise DTypeError(fn, "weight", "a q4gsw.PackedWeight", describe(weight))
        k, n = weight.in_features, weight.out_features
        bias_t, bias_arr = self._linear_args(fn, x, k, n, bias)
        m = math.prod(x.shape[:-1])
        p = Problem(m, n, k, weight.group_size, bias is not None)
        spec = choose_kernel(self.runtime, fn, p, kernel, activations=activations)  # the checks, before any buffer
        if bias_arr is not None:
            bias_t = self.constant(bias_arr)
        out = self.output((*x.shape[:-1], n))
        bias_buf = bias_t.buffer if bias is not None else self._zero_buffer()
        plan = plan_linear(self.runtime, fn, weight, p, x.buffer, out.buffer, bias_buf, kernel=spec,
                           activations=activations)
        self._owned += plan.owned
        self.dispatches += plan.dispatches
        return out

    def _linear_args(self, fn: str, x: GpuTensor, k: int, n: int, bias):
        """Check x (..., K) and bias (N,) of a linear op: (bias GpuTensor or None, bias array to
        upload once the kernel is chosen, or None)."""
        if x.shape[-1] != k:
            raise ShapeError(fn, "x", f"(..., K) with K = {k} (the weight's in_features)", f"shape {x.shape}")
        if isinstance(bias, GpuTensor):
            bias_t = self.tensor(fn, "bias", bias)
            if bias_t.shape != (n,):
                raise ShapeError(fn, "bias", f"shape ({n},) (the weight's out_features)", describe(bias))
            return bias_t, None
        if bias is None:
            return None, None
        bias_arr = as_array(fn, "bias", bias, np.float32)
        if bias_arr.shape != (n,):
            raise ShapeError(fn, "bias", f"shape ({n},) (the weight's out_features)", describe(bias))
        return None, bias_arr

    def _elementwise(self, fn: str, name: str, a, b) -> GpuTensor:
        a, b = self.tensor(fn, "a", a), self.tensor(fn, "b", b)
        if a.shape != b.shape:
            raise ShapeError(fn, "b", f"shape {a.shape} (the shape of the first argument)", f"shape {b.shape}")
        out = self.output(a.shape)
        count = a.size
        params = self.params([count, 0, 0, 0])
        self.record(name, (("WG", ELEMENTWISE_WG),), (out.buffer, a.buffer, b.buffer, params),
                       ceil_div(count, ELEMENTWISE_WG), 12 * count)
        return out

    def add(self, a: GpuTensor, b: GpuTensor) -> GpuTensor:
        """a + b, elementwise (same shapes)."""
        return self._elementwise("Chain.add", "add", a, b)

    def silu_mul(self, gate: GpuTensor, up: GpuTensor) -> GpuTensor:
        """silu(gate) * up, elementwise (same shapes): SwiGLU's glue, silu(g) = g / (1 + exp(-g))."""
        return self._elementwise("Chain.silu_mul", "silu_mul", gate, up)

    def rms_norm(self, x: GpuTensor, weight, *, eps: float = 1e-6) -> GpuTensor:
        """x / sqrt(mean(x**2, axis=-1) + eps) * weight, per row of the last axis.

        Args:
            x: (..., D) GpuTensor.
            weight: (D,) float32 ndarray / CPU torch.Tensor (uploaded now) or GpuTensor.
            eps: added to the mean square, > 0.
        """
        fn = "Chain.rms_norm"
        x = self.tensor(fn, "x", x)
        d = x.shape[-1]
        w = self.tensor(fn, "weight", weight) if isinstance(weight, GpuTensor) else None
        if w is None:
            arr = as_array(fn, "weight", weight, np.float32)
            if arr.shape != (d,):
                raise ShapeError(fn, "weight", f"shape ({d},) (x's last dimension)", describe(weight))
            w = self.constant(arr)
        elif w.shape != (d,):
            raise ShapeError(fn, "weight", f"shape ({d},) (x's last dimension)", f"shape {w.shape}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0 or not math.isfinite(eps):
            raise DTypeError(fn, "eps", "a finite float > 0", describe(eps))
        rows = x.size // d
        out = self.output(x.shape)
        params = np.array([rows, d, 0, 0], np.uint32)
        params[2] = np.float32(eps).view(np.uint32)
        params_buf = self.params(params)
        self.record("rms_norm", (("WG", RMS_NORM_WG),), (out.buffer, x.buffer, w.buffer, params_buf),
                       rows, 8 * x.size + 4 * d)
        return out

    def repeat_heads(self, x: GpuTensor, *, head_dim: int, repeats: int) -> GpuTensor:
        """Grouped-query attention's expansion: (..., H * head_dim) -> (..., H * repeats * head_dim),
        output head h being input head h // repeats."""
        fn = "Chain.repeat_heads"
        x = self.tensor(fn, "x", x)
        head_dim = positive_int(fn, "head_dim", head_dim, ShapeError)
        repeats = positive_int(fn, "repeats", repeats, ShapeError)
        if x.shape[-1] % head_dim:
            raise ShapeError(fn, "head_dim", f"a divisor of x's last dimension {x.shape[-1]}", repr(head_dim))
        out_row = x.shape[-1] * repeats
        out = self.output((*x.shape[:-1], out_row))
        count = out.size
        params = self.params([count, head_dim, repeats, out_row])
        self.record("repeat_heads", (("WG", ELEMENTWISE_WG),), (out.buffer, x.buffer, params),
                       ceil_div(count, ELEMENTWISE_WG), 4 * x.size + 4 * count)
        return out

    def _zero_buffer(self):
        if self._zero is None:
            self._zero = gpu_placeholder(self.runtime)
            self._owned.append(self._zero)
        return self._zero

    # --- replay ------------------------------------------------------------------------------

    def run(self, feeds: dict | None = None, *, copies: tuple = ()) -> None:
        """Write `feeds` ({GpuTensor: array}) and run every recorded op, in order.

        One command encoder, one compute pass (dispatches in a pass see each other's writes),
        one submit; returns without waiting (read results with GpuTensor.numpy()). Inside
        q4gsw.profile() each dispatch gets its own timed pass instead. `copies` are buffer
        copies (source, offset, destination, offset, size) encoded after the pass.
        """
        for tensor, value in (feeds or {}).items():
            self.tensor("Chain.run", "feeds", tensor, dtype=getattr(tensor, "dtype", "float32")).write(value)
        for t in self._outputs:
            self.runtime.poison(t.buffer, t.nbytes // 4)
        submit(self.runtime, self.dispatches, label=self.label, one_pass=True, copies=copies)

    def command_buffer(self, *, copies: tuple = ()):
        """The recorded ops (and `copies` after them) encoded as one finished command buffer in
        one compute pass, outputs poisoned first when the runtime poisons; the caller submits
        it (e.g. runtime.submit.submit_for_index). Not for use inside q4gsw.profile()."""
        for t in self._outputs:
            self.runtime.poison(t.buffer, t.nbytes // 4)
        encoder = self.runtime.device.create_command_encoder(label=self.label)
        cpass = encoder.begin_compute_pass(label=self.label)
        record_pass(cpass, self.dispatches)
        cpass.end()
        for copy in copies:
            encoder.copy_buffer_to_buffer(*copy)
        return encoder.finish()

    def release(self) -> None:
        """Free every buffer the chain owns (its inputs, constants, outputs and params)."""
        self.runtime.buffers.destroy(*self._owned)
        self._owned.clear()
        self._outputs.clear()
        self.dispatches.clear()
        self._zero = None

    def __enter__(self) -> "Chain":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __len__(self) -> int:
        """The number of recorded dispatches."""
        return len(self.dispatches)

    # --- mixed precision ---------------------------------------------------------------------

    def dense_linear(self, x: GpuTensor, weight, bias=None, *, kernel=None) -> GpuTensor:
        """out = x @ weight.T (+ bias) with a dense fp32 or fp16 weight, as q4gsw.dense_linear
        computes it: for the layers a checkpoint keeps in high precision.

        Args:
            x: (..., K) GpuTensor.
            weight: a DenseWeight (uploaded once per device, kept by the runtime while it lives).
            bias: optional (N,) float32 ndarray / CPU torch.Tensor (uploaded now), or a GpuTensor.
            kernel: force a kernel by name ("gemv", "gemm", "general") or DenseSpec.
        Returns:
            (..., N) GpuTensor.
        """
        fn = "Chain.dense_linear"
        x = self.tensor(fn, "x", x)
        if not isinstance(weight, DenseWeight):
            raise DTypeError(fn, "weight", "a q4gsw.DenseWeight", describe(weight))
        k, n = weight.in_features, weight.out_features
        bias_t, bias_arr = self._linear_args(fn, x, k, n, bias)
        p = DenseProblem(math.prod(x.shape[:-1]), n, k, weight.dtype, bias is not None)
        spec = choose_dense(self.runtime, fn, p, kernel)  # the checks, before any buffer
        if bias_arr is not None:
            bias_t = self.constant(bias_arr)
        out = self.output((*x.shape[:-1], n))
        bias_buf = bias_t.buffer if bias is not None else self._zero_buffer()
        plan = plan_dense(self.runtime, fn, weight, p, x.buffer, out.buffer, bias_buf, kernel=spec)
        self._owned += plan.owned
        self.dispatches += plan.dispatches
        return out
