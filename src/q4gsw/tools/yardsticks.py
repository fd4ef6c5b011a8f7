"""Yardsticks for the benchmarks: the shipped dense fp32 kernels (q4gsw.dense_linear's gemv and
gemm), and (where torch with CUDA is installed) torch's int4 tinygemm and cuBLAS fp16, timed
with CUDA events."""

from __future__ import annotations

import statistics

import numpy as np

from ..arith import ceil_div
from ..format import DenseWeight
from ..kernels.dense import DenseProblem
from ..ops.dense import plan_dense
from ..ops.plan import gpu_placeholder
from ..runtime.submit import submit
from ..runtime.timing import time_chain, time_dispatch

#: dense_gemm.wgsl's output tile (rows of x and output features per workgroup).
GEMM_TILE = 128
#: Device memory the GEMM yardstick may hold (x, out and every weight copy together).
GEMM_MEMORY_CAP = 2_000_000_000


class DenseRun:
    """The shipped dense_linear kernels (q4gsw.dense_linear, fp32 weights) on one x and `copies`
    uploads of one weight (distinct DenseWeight objects over the same array, for L2 rotation):
    dispatches (one per copy), run_once() and release()."""

    def __init__(self, rt, x: np.ndarray, w: np.ndarray, copies: int = 1, kernel: str | None = None):
        m, k = x.shape
        n, k_w = w.shape
        if k_w != k or k % 4:
            raise ValueError(f"dense_gemm: expected x (M, K) and w (N, K) with K % 4 == 0, got {x.shape} and {w.shape}")
        usage = rt.wgpu.BufferUsage
        self.rt, self.m, self.n, self.k = rt, m, n, k
        w32 = np.ascontiguousarray(w, np.float32)
        self.weights = [DenseWeight(w32) for _ in range(copies)]
        self.x = rt.buffers.upload(x.astype(np.float32), usage.STORAGE, "dense/x", align=16)
        self.out = rt.buffers.create(4 * m * n, usage.STORAGE | usage.COPY_SRC | usage.COPY_DST, "dense/out")
        self.bias = gpu_placeholder(rt)
        p = DenseProblem(m, n, k, "float32", False)
        self.plans = [plan_dense(rt, "dense_gemm", wc, p, self.x, self.out, self.bias, kernel=kernel)
                      for wc in self.weights]
        if any(len(plan.dispatches) != 1 for plan in self.plans):
            self.release()
            raise ValueError(f"dense_gemm: the {4 * n * k}-byte weight does not fit one binding")
        self.dispatches = [plan.dispatches[0] for plan in self.plans]
        self.key = self.dispatches[0].key

    def run_once(self) -> np.ndarray:
        """(M, N) float32 out after one dispatch; out is filled with NaN first, so an element
        the kernel does not write shows as NaN."""
        self.rt.device.queue.write_buffer(self.out, 0, np.full(self.m * self.n, np.nan, np.float32))
        submit(self.rt, self.dispatches[:1], label="dense/gemm")
        return self.rt.buffers.read(self.out, 4 * self.m * self.n).reshape(self.m, self.n)

    def release(self) -> None:
        self.rt.buffers.destroy(self.x, self.out, self.bias)
        for plan in self.plans:
            plan.release(self.rt)
        for wc in self.weights:
            self.rt.weights.release(wc)


def dense_gemv(rt, m: int, k: int, n: int, rng, rotate_bytes: int) -> dict:
    """Median µs of the shipped dense gemv kernel (fp32 weights) over rotating weight copies, and its error."""
    w = rng.standard_normal((n, k)).astype(np.float32)
    x = rng.standard_normal((m, k)).astype(np.float32)
    copies = 1 if rt.caps.is_cpu else max(1, ceil_div(rotate_bytes, w.nbytes))
    if w.nbytes > rt.caps.max_binding_size:
        return {"skipped": f"{w.nbytes} bytes of fp32 weight exceed one binding"}
    if k % 4:
        return {"kernel": "dense_gemv", "skipped": f"K={k} is not a multiple of 4 (gemv reads x as vec4)"}
    run = DenseRun(rt, x, w, copies, kernel="gemv")
    try:
        y = run.run_once()
        single = statistics.median(time_dispatch(rt, run.dispatches, repeats=30, warmup_s=0.3))
        chained = statistics.median(time_chain(rt, run.dispatches))
        ref = x.astype(np.float64) @ w.T.astype(np.float64)
        rel = float(np.abs(y - ref).max() / np.abs(ref).max())
    finally:
        run.release()
    return {"kernel": "dense_gemv", "median_us": single / 1e3, "chained_us": chained / 1e3,
            "bytes": run.dispatches[0].nbytes, "weight_copies": copies, "rel_error": rel}


def dense_matmul(rt, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x @ w.T through the shipped dense gemm kernel, once.

    Args:
        x: (M, K) float32; w: (N, K) float32, K % 4 == 0.
    Returns:
        (M, N) float32.
    """
    gemm = DenseRun(rt, x, w, kernel="gemm")
    try:
        return gemm.run_once()
    finally:
        gemm.release()


def dense_gemm(rt, m: int, k: int, n: int, rng, rotate_bytes: int) -> dict:
    """Median µs of dense_gemm.wgsl (fp32 weights, the tile design of tiled.wgsl) over rotating
    weight copies, and its error: the prefill (M > 8) counterpart of dense_gemv.

    Copies total >= rotate_bytes where x, out and the copies fit GEMM_MEMORY_CAP (at least
    one copy); 'weight_copies' and 'rotated_bytes' say what was used. 'chained_us' is None
    when one run takes over 2 ms or there are no timestamps.
    """
    if k % 4:
        return {"kernel": "dense_gemm", "skipped": f"K={k} is not a multiple of 4 (dense_gemm.wgsl reads vec4)"}
    w_bytes = 4 * n * k
    if w_bytes > rt.caps.max_binding_size:
        return {"kernel": "dense_gemm", "skipped": f"{w_bytes} bytes of fp32 weight exceed one binding"}
    if 4 * m * max(k, n) > rt.caps.max_binding_size:
        return {"kernel": "dense_gemm", "skipped": f"x or out of M={m} exceeds one binding"}
    w = rng.standard_normal((n, k), dtype=np.float32)
    x = rng.standard_normal((m, k), dtype=np.float32)
    if rt.caps.is_cpu:
        copies = 1
    else:
        room = (GEMM_MEMORY_CAP - 4 * m * (k + n)) // w_bytes
        copies = max(1, min(ceil_div(rotate_bytes, w_bytes), room))
    gemm = DenseRun(rt, x, w, copies, kernel="gemm")
    try:
        y = gemm.run_once()
        ref = x.astype(np.float64) @ w.T.astype(np.float64)
        rel = float(np.abs(y - ref).max() / np.abs(ref).max())
        del ref
        single = statistics.median(time_dispatch(rt, gemm.dispatches, repeats=30, warmup_s=0.3))
        chained = None
        if single < 2e6 and rt.caps.has_timestamps:
            chained = statistics.median(time_chain(rt, gemm.dispatches)) / 1e3
    finally:
        gemm.release()
    d = gemm.dispatches[0]
    return {"kernel": "dense_gemm", "median_us": single / 1e3, "chained_us": chained, "bytes": d.nbytes,
            "weight_copies": copies, "rotated_bytes": copies * w_bytes,
            "tflop_per_s": d.flops / single / 1e3, "rel_error": rel}


def torch_yardsticks(m: int, k: int, n: int, group_size: int, rotate_bytes: int) -> dict:
    """torch int4 tinygemm (_weight_int4pack_mm, bf16 activations), cuBLAS fp16 and fp32
    without TF32 (F.linear), median µs over CUDA events, weights rotated past L2.
    {} without CUDA."""
    try:
        import torch
    except ImportError:
        return {}
    if not torch.cuda.is_available():
        return {}
    dev = torch.device("cuda")
    result = {"torch": torch.__version__, "cuda_device": torch.cuda.get_device_name()}

    def timed(fn, args_list):
        for _ in range(10):
            fn(*args_list[0])
        torch.cuda.synchronize()
        times = []
        for i in range(50):
            a = args_list[i % len(args_list)]
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(*a)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) * 1e3)
        return statistics.median(times)

    x16 = torch.randn(m, k, device=dev, dtype=torch.float16)
    w16 = torch.randn(n, k, device=dev, dtype=torch.float16)
    copies = max(1, ceil_div(rotate_bytes, w16.numel() * 2))
    ws = [w16.clone() for _ in range(copies)]
    result["cublas_fp16_us"] = timed(torch.nn.functional.linear, [(x16, wc) for wc in ws])
    del ws
    torch.backends.cuda.matmul.allow_tf32 = False
    x32, w32 = x16.float(), w16.float()
    copies = max(1, ceil_div(rotate_bytes, w32.numel() * 4))
    ws = [w32.clone() for _ in range(copies)]
    result["cublas_fp32_us"] = timed(torch.nn.functional.linear, [(x32, wc) for wc in ws])
    del ws
    try:
        q = torch.randint(0, 16, (n, k), device=dev, dtype=torch.int32)
        packed_u8 = (q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8)
        packed = torch.ops.aten._convert_weight_to_int4pack(packed_u8, 8)
        sz = torch.randn(k // group_size, n, 2, device=dev, dtype=torch.bfloat16)
        xb = x16.to(torch.bfloat16)
        copies = max(1, ceil_div(rotate_bytes, n * k // 2))
        args = [(xb, packed.clone(), group_size, sz) for _ in range(copies)]
        result["tinygemm_int4_us"] = timed(torch.ops.aten._weight_int4pack_mm, args)
    except Exception as exc:  # the private op's signature moves between torch releases
        result["tinygemm_int4_error"] = f"{type(exc).__name__}: {exc}"[:300]
    return result
