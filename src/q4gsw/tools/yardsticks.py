"""Yardsticks for the benchmarks: the shipped dense fp32 kernels (q4gsw.dense_linear's gemv and
gemm), (where torch with CUDA is installed) torch's int4 tinygemm and cuBLAS fp16, timed with
CUDA events, and (where onnxruntime has its WebGPU execution provider) ONNX Runtime's
MatMulNBits, timed by its profiler."""

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


# --- ONNX Runtime WebGPU: MatMulNBits (bits 4, symmetric), the same PackedWeight -----------------
#: (row name, accuracy_level, activation dtype): level 4 quantizes A to int8 (ORT WebGPU's
#: DP4AMatMulNBits, dot4I8Packed), level 0 multiplies in the activation dtype.
ORT_CONFIGS = (("acc4_fp32", 4, "fp32"), ("acc0_fp32", 0, "fp32"), ("acc4_fp16", 4, "fp16"), ("acc0_fp16", 0, "fp16"))
ORT_WEBGPU = "WebGpuExecutionProvider"


def matmul_nbits_model(weight, *, accuracy_level: int = 4, fp16: bool = False):
    """A one-node ONNX model Y = MatMulNBits(A, B, scales) of a PackedWeight: com.microsoft
    MatMulNBits, bits 4, block_size = the group size, no zero points (ORT's default 8: the
    symmetric format, the same nibbles as ExecuTorch's bytes). A is (M, K) with M symbolic.

    Args:
        weight: the PackedWeight; K must be a multiple of its group size, which must be a
            power of two >= 16 (MatMulNBits' blocks).
        accuracy_level: 4 (int8 activations) or 0..3.
        fp16: A, scales and Y in float16 (else float32).
    Returns:
        the onnx.ModelProto (IR version 10, opsets 21 and com.microsoft 1).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k, n, bs = weight.in_features, weight.out_features, weight.group_size
    if k % bs or bs < 16 or bs & (bs - 1):
        raise ValueError(f"matmul_nbits_model: expected K a multiple of a power-of-two group size >= 16, "
                         f"got K={k}, group_size={bs}")
    dtype, elem = (np.float16, TensorProto.FLOAT16) if fp16 else (np.float32, TensorProto.FLOAT)
    blocks = k // bs
    b = np.ascontiguousarray(weight.weights).reshape(n, blocks, bs // 2)
    scales = np.ascontiguousarray(weight.scales[:blocks, :n].T).reshape(-1).astype(dtype)
    node = helper.make_node("MatMulNBits", ["A", "B", "scales"], ["Y"], domain="com.microsoft", K=k, N=n, bits=4,
                            block_size=bs, accuracy_level=accuracy_level)
    graph = helper.make_graph([node], "q4gsw_matmul_nbits", [helper.make_tensor_value_info("A", elem, ["M", k])],
                              [helper.make_tensor_value_info("Y", elem, ["M", n])],
                              [numpy_helper.from_array(b, "B"), numpy_helper.from_array(scales, "scales")])
    model = helper.make_model(graph, ir_version=10,
                              opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
    onnx.checker.check_model(model)
    return model


def ort_matmul_nbits(x: np.ndarray, weight, *, provider: str = ORT_WEBGPU, accuracy_level: int = 4,
                     fp16: bool = False, iterations: int = 0, warmup: int = 3) -> dict:
    """Run matmul_nbits_model on x with one ONNX Runtime execution provider.

    Returns {"y": (M, N) float32, "provider": where the node ran}; with iterations > 0 also
    the profiler's GPU times after `warmup` runs: {"programs": {program: median µs}, "median_us":
    their sum per run, "timing": how}. ORT's WebGPU profiler reports Dawn timestamps per
    dispatch in whole µs (events 'Api', named '&MatMulNBits&<program>'); where there are none
    (the CPU EP), median_us is the profiler's kernel time of the node (host time).
    The weight is the same every run (prefill is arithmetic-bound, so L2 residency matters little).
    """
    import json
    import os
    import tempfile

    import onnxruntime as ort

    dtype = np.float16 if fp16 else np.float32
    so = ort.SessionOptions()
    so.log_severity_level = 3
    tmp = tempfile.mkdtemp(prefix="q4gsw-ort-")
    if iterations:
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tmp, "profile")
    model = matmul_nbits_model(weight, accuracy_level=accuracy_level, fp16=fp16).SerializeToString()
    # the CPU EP after it: a node the provider refuses runs there, and result["provider"] says so
    providers = list(dict.fromkeys([provider, "CPUExecutionProvider"]))
    sess = ort.InferenceSession(model, so, providers=providers)
    feed = {"A": np.ascontiguousarray(x, dtype)}
    y = sess.run(None, feed)[0]
    for _ in range(warmup + iterations - 1 if iterations else 0):
        sess.run(None, feed)
    result = {"y": y.astype(np.float32)}
    if not iterations:
        return result
    with open(sess.end_profiling()) as f:
        events = json.load(f)
    nodes = [e for e in events if e.get("cat") == "Node" and e.get("args", {}).get("op_name") == "MatMulNBits"]
    result["provider"] = nodes[-1]["args"].get("provider") if nodes else None
    gpu = [e for e in events if e.get("cat") == "Api" and str(e.get("name", "")).startswith("&MatMulNBits&")]
    if gpu:
        programs: dict[str, list[float]] = {}
        for e in gpu:
            programs.setdefault(e["name"].rsplit("&", 1)[1], []).append(float(e["dur"]))
        result["programs"] = {p: statistics.median(d[-iterations:]) for p, d in programs.items()}
        result["median_us"] = sum(result["programs"].values())
        result["timing"] = f"ORT profiler, Dawn GPU timestamps per dispatch (whole µs), median of {iterations} runs"
    else:
        result["median_us"] = statistics.median(float(e["dur"]) for e in nodes[-iterations:])
        result["timing"] = f"ORT profiler, node kernel time (host), median of {iterations} runs"
    return result


def ort_webgpu(m: int, k: int, n: int, group_size: int, rng, *, iterations: int = 30) -> dict:
    """ONNX Runtime WebGPU's MatMulNBits on a random weight of the q4gsw format (bits 4,
    symmetric, block = group size) and x ~ N(0, 1): per ORT_CONFIGS row, median GPU µs (its
    profiler), TFLOP/s and max |y - ref| / max |ref| against the exact float64 linear (fp16
    rows include the rounding of x to fp16). {} where onnxruntime has no WebGPU EP (the
    `onnxruntime-webgpu` package provides it); a row says 'skipped' where the shape does not fit."""
    try:
        import onnxruntime as ort
    except ImportError:
        return {}
    if ORT_WEBGPU not in ort.get_available_providers():
        return {}
    from .bench import reference_rel_error
    from .workload import random_weight

    weight = random_weight(rng, n, k, group_size)
    x = rng.standard_normal((m, k)).astype(np.float32)
    result = {"onnxruntime": ort.__version__}
    for row, level, dtype in ORT_CONFIGS:
        try:
            r = ort_matmul_nbits(x, weight, accuracy_level=level, fp16=dtype == "fp16", iterations=iterations)
        except Exception as exc:  # an ORT build or shape ORT refuses: reported, not fatal
            result[row] = {"skipped": f"{type(exc).__name__}: {exc}"[:300]}
            continue
        result[row] = {"median_us": r["median_us"], "tflop_per_s": 2 * m * k * n / r["median_us"] / 1e6,
                       "rel_error": reference_rel_error(r["y"], x, weight), "provider": r.get("provider"),
                       "programs": r.get("programs"), "timing": r["timing"]}
    return result
