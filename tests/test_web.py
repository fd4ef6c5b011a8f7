"""Tests of q4gsw.web's layer bundles: the bundle holds Python's kernels and bytes, q4gsw.js in
Chromium matches Python (x in JS memory or on the GPU, weights split along N), routes like
Python's select() and says what it skips, and Chromium's compiler (Tint) accepts every kernel
q4gsw ships. Model bundles: tests/test_web_model.py; pure JS (routing, tokenizer) under node:
tests/test_web_js.py."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest

import q4gsw
from q4gsw import cli
from q4gsw.kernels import INT8_KERNELS, KERNELS, Problem, select
from q4gsw.kernels.dense import DENSE_KERNELS, DenseProblem
from q4gsw.kernels.decode import DecodeNarrow
from q4gsw.runtime.dispatch import fold_grid
from q4gsw.runtime.pipelines import KernelKey, PipelineCache
from q4gsw.runtime.weights import features_per_chunk
from q4gsw.web.export import STATIC_FILES, WebLayer, export_web, load_npz_layer, random_layer

from .browser import BrowserUnavailable, PageFailed, PageRun, run_page, serve, wait_for_report
from .test_int8 import assert_matches_int8_reference
from .utils import assert_matches_reference, fake_capabilities, random_problem, tolerance

HARNESS = Path(__file__).parent / "web" / "harness.html"
#: The test bundle's chunk size: "tall" (128 KiB of weights) splits into two chunks.
CHUNK_BYTES = 64 << 10

#: Browser cases: (id, layer, M, kernel forced or None, bias, grid limit or None, on the GPU).
#: Layers: "wide" N=256, K=512, group_size 64; "odd" N=67, K=45, group_size 7 (only general
#: runs it); "tall" N=1024, K=256, group_size 64 (two chunks of 512 features); "deep" N=16,
#: K=8448, group_size 64 (decode needs 288 invocations, SwiftShader allows 256). A grid limit
#: is createRuntime's maxWorkgroupsPerDimension: the grid folds as only 65 535+ workgroups
#: would on the device's limit, at a size SwiftShader runs in milliseconds. "On the GPU":
#: x and bias are GpuTensors and the output stays one (read back by the page).
CASES = [
    ("decode-M1", "wide", 1, None, True, None, False),
    ("decode-workgroup-M1", "wide", 1, "decode_workgroup", False, None, False),
    ("decode-workgroup-M3-fold", "wide", 3, "decode_workgroup", True, 7, False),  # 16 x 3 = 48 workgroups: 7 x 7
    ("decode-batch-M8", "wide", 8, "decode_batch", True, None, True),
    ("tiled-M130", "wide", 130, "tiled", True, None, False),
    ("tiled-split-M64", "wide", 64, "tiled_split", True, None, True),
    ("general-odd-M5", "odd", 5, None, True, None, False),
    ("general-odd-fold", "odd", 7, None, False, 12, False),  # 67 x 2 = 134 workgroups: 12 x 12, 10 of them idle
    ("split-weight-M3", "tall", 3, None, False, None, True),
    ("deep-M1", "deep", 1, None, False, None, False),
]
#: Cases run with activations "int8" (decode_int8 routed, as Python routes them): (id, layer, M, bias).
INT8_CASES = [("int8-decode-M3", "wide", 3, True), ("int8-decode-M1-two-chunks", "tall", 1, False)]
#: What q4gsw.js skips for "deep" at M=1 (and why): general stands in for decode.
DEEP_FALLBACKS = {"decode_subgroup": 288, "decode_workgroup": 288, "decode_narrow_subgroup": 544,
                  "decode_x2_subgroup": 288, "decode_batch": 544}


def _require_browser() -> bool:
    return os.environ.get("Q4GSW_REQUIRE_BROWSER") == "1"


def _no_browser(reason) -> None:
    """Skip for want of a browser, or fail when Q4GSW_REQUIRE_BROWSER=1 (make test, .ci/run)."""
    if _require_browser():
        pytest.fail(f"Q4GSW_REQUIRE_BROWSER=1, but the browser test could not run: {reason}")
    pytest.skip(f"no headless Chromium with WebGPU: {reason}")


def browser_caps(caps: dict):
    """Python Capabilities of what the page's Runtime reported (report["caps"]), for select()."""
    return fake_capabilities(
        adapter_name="SwiftShader (Chromium)", driver="Chromium",
        features=frozenset({"subgroup"} if caps["hasSubgroups"] else set()),
        limits={"max-storage-buffer-binding-size": caps["maxBindingSize"], "max-compute-workgroups-per-dimension": 65535,
                "max-compute-workgroup-storage-size": caps["maxWorkgroupStorage"],
                "max-compute-invocations-per-workgroup": caps["maxInvocations"]},
        subgroup_min_size=caps["subgroupMinSize"])


def shipped_kernel_keys() -> list[KernelKey]:
    """The configurations the browser compiles: every linear kernel (decode with both unpacks,
    decode_int8, the routed int8 GEMMs with their quantize dispatch,
    the dense kernels with fp32 and fp16 weights, rope_kv and attention with f32 and f16 caches,
    and its variants: K split with x staged, decode_narrow; decode_batch with blocks of 2, 4 and
    8 rows of x and with K split; tiled_split with its split and reduction) and every other
    .wgsl file with an entry point, at its defaults."""
    wide = Problem(1, 256, 512, 64, True)
    keys = []
    for spec in KERNELS.values():
        if spec.name in ("decode_subgroup", "decode_workgroup"):
            keys += [spec.with_settings({"unpack": u}).key(wide) for u in ("shift", "imad")]
            variant = spec.with_settings({"k_per_workgroup": 1024, "x_staged": True, "features_per_workgroup": 32})
            split = Problem(1, 256, 4096, 64, True)
            keys += [variant.key(split), DecodeNarrow(spec.reduction, spec.partial_capacity).key(wide)]
        elif spec.name == "decode_batch":
            keys += [spec.key(Problem(m, 256, 512, 64, True)) for m in (2, 4, 8)]
            split = Problem(8, 256, 8192, 64, True)
            keys += [spec.key(split), spec.reduce_key(split)]
        elif spec.name == "tiled_split":
            split = Problem(64, 256, 4096, 64, True)
            keys += [spec.key(split), spec.reduce_key(split)]
        else:
            keys.append(spec.key(wide))
    for spec in INT8_KERNELS.values():  # decode_int8 with either reduction; the routed int8 GEMMs and their quantize pass
        if spec.name.startswith("decode_int8"):
            keys.append(spec.key(wide))
        elif spec.name in ("tiled_int8", "bcast_int8_k64"):
            prefill, limits = Problem(256, 256, 512, 64, True), fake_capabilities()  # 32 KiB of workgroup memory
            keys += [spec.bind(limits).key(prefill), spec.quantize_key(prefill)]
    for spec in DENSE_KERNELS.values():  # mixed precision: each dense kernel with both weight storages
        keys += [spec.key(DenseProblem(m, 256, 512, dtype, True)) for dtype in ("float32", "float16")
                 for m in ((1,) if spec.name == "gemv" else (64,))]
    for stem in ("rope_kv", "attention"):  # the KV cache's kernels, after either element-type file
        keys += [KernelKey(stem, family="q4gsw", files=(kv, stem)) for kv in ("kv_f32", "kv_f16")]
    entry_files = {f for key in keys for f in key.sources}
    for path in sorted(files("q4gsw.kernels").iterdir(), key=lambda p: p.name):
        stem = path.name.removesuffix(".wgsl")
        if path.name.endswith(".wgsl") and stem not in entry_files and re.search(r"\bfn main\(", path.read_text()):
            keys.append(KernelKey(stem, family="q4gsw"))
    return list(dict.fromkeys(keys))  # (str(key) leaves the files out: a dense kernel's f32 and f16 keys share it)


def _invocations(code: str, constants: dict) -> int:
    """Invocations per workgroup of `main`: @workgroup_size with overrides resolved (constants,
    else the declaration's value)."""
    declared = dict(re.findall(r"(?:override|const)\s+(\w+)\s*:\s*u32\s*=\s*(\d+)u?\s*;", code))
    dims = [d.strip() for d in re.search(r"@workgroup_size\(([^)]*)\)", code)[1].split(",") if d.strip()]
    return math.prod(int(constants.get(d, declared.get(d, d.rstrip("u")))) for d in dims)


class _RecordingDevice:
    """Stands in for a GPUDevice: records what PipelineCache would compile."""

    def __init__(self):
        self.code = None
        self.constants = None

    def create_shader_module(self, *, label, code):
        self.code = code
        return object()

    def create_compute_pipeline(self, *, label, layout, compute):
        self.constants = compute["constants"]
        return object()


def _python_compiles(key: KernelKey) -> tuple[str, dict]:
    device = _RecordingDevice()
    PipelineCache(device).get(key)
    return device.code, device.constants


def read_ref(bundle: Path, ref: dict) -> bytes:
    """The bytes a manifest reference {file, offset, nbytes} points at."""
    with open(bundle / ref["file"], "rb") as f:
        f.seek(ref["offset"])
        return f.read(ref["nbytes"])


@pytest.fixture(scope="module")
def layers():
    rng = np.random.default_rng(20261201)
    made = {"wide": random_problem(rng, 1, 256, 512, 64), "odd": random_problem(rng, 1, 67, 45, 7),
            "tall": random_problem(rng, 1, 1024, 256, 64), "deep": random_problem(rng, 1, 16, 8448, 64)}
    return {name: WebLayer(name, p.pw, p.bias) for name, p in made.items()}


@pytest.fixture(scope="module")
def bundle(layers, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle")
    export_web(out, list(layers.values()), chunk_bytes=CHUNK_BYTES)
    return out


@pytest.fixture(scope="module")
def manifest(bundle):
    return json.loads((bundle / "manifest.json").read_text())


class TestExportWeb:
    def test_files(self, bundle, manifest):
        """The bundle holds the manifest, the static files, every kernel file and the data
        files, each of the size and sha256 the manifest gives."""
        assert (manifest["format"], manifest["version"], manifest["kind"]) == ("q4gsw-web", 2, "layers")
        for name in STATIC_FILES:
            assert (bundle / name).read_bytes() == files("q4gsw.web").joinpath("static", name).read_bytes()
        listed = {**manifest["files"], **{k["file"]: k for k in manifest["kernels"].values()}}
        for path, meta in listed.items():
            data = (bundle / path).read_bytes()
            assert (len(data), hashlib.sha256(data).hexdigest()) == (meta["nbytes"], meta["sha256"]), path
        assert all(meta["nbytes"] <= CHUNK_BYTES for meta in manifest["files"].values())

    def test_kernels_byte_identical(self, bundle, manifest):
        """kernels/ holds every .wgsl file of q4gsw/kernels byte for byte, so a key's files
        joined as q4gsw.js joins them are what Python's PipelineCache compiles."""
        stems = sorted(p.name.removesuffix(".wgsl") for p in files("q4gsw.kernels").iterdir() if p.name.endswith(".wgsl"))
        assert sorted(manifest["kernels"]) == stems
        for stem, meta in manifest["kernels"].items():
            assert (bundle / meta["file"]).read_bytes() == files("q4gsw.kernels").joinpath(f"{stem}.wgsl").read_bytes()
        for key in shipped_kernel_keys():
            joined = "\n".join((bundle / manifest["kernels"][f]["file"]).read_text() for f in key.sources)
            assert joined == _python_compiles(key)[0], str(key)

    def test_weights_roundtrip(self, bundle, manifest, layers):
        """Each weight's chunks are the PackedWeight's rows and scales, split as the Python runtime
        splits it for a binding of chunk_bytes; biases are the layers' float32 bytes."""
        for name, layer in layers.items():
            w = layer.weight
            entry = manifest["weights"][name]
            assert (entry["N"], entry["K"], entry["group_size"], entry["padded_N"]) == (
                w.out_features, w.in_features, w.group_size, w.scales.shape[1])
            step = features_per_chunk(w, CHUNK_BYTES)
            assert [(c["n0"], c["n"]) for c in entry["chunks"]] == [
                (n0, min(step, w.out_features - n0)) for n0 in range(0, w.out_features, step)]
            for c in entry["chunks"]:
                rows = slice(c["n0"], c["n0"] + c["n"])
                assert read_ref(bundle, c["weights"]) == w.weights[rows].tobytes()
                scales = w.scales[: w.num_groups] if len(entry["chunks"]) == 1 else w.scales[: w.num_groups, rows]
                assert c["scale_stride"] == scales.shape[1]
                assert read_ref(bundle, c["scales"]) == scales.astype("<f4").tobytes()
            assert read_ref(bundle, manifest["tensors"][f"{name}.bias"]) == layer.bias.astype("<f4").tobytes()
        assert len(manifest["weights"]["tall"]["chunks"]) == 2

    def test_routing_constants(self, manifest):
        """The manifest carries the cost model's constants (kernels/cost.py)."""
        from q4gsw.kernels import cost

        assert manifest["routing"]["decode_seconds_per_mac"] == cost.DECODE_SECONDS_PER_MAC
        assert manifest["routing"]["batch_seconds_per_block_mac"] == {
            str(k): v for k, v in cost.BATCH_SECONDS_PER_BLOCK_MAC.items()}

    def test_params_fields_match_wgsl(self):
        """q4gsw.js packs params in the field order of every linear kernel's WGSL struct Params."""
        js = files("q4gsw.web").joinpath("static", "kernels.js").read_text()
        js_fields = re.findall(r'"(\w+)"', re.search(r"PARAMS_FIELDS = Object.freeze\(\[(.*?)\]\)", js, re.S)[1])
        for name in ("decode", "decode_batch", "tiled", "general"):
            wgsl = files("q4gsw.kernels").joinpath(f"{name}.wgsl").read_text()
            body = re.search(r"struct Params \{(.*?)\}", wgsl, re.S)[1]
            assert re.findall(r"(\w+)\s*:\s*u32", body) == js_fields, name

    def test_bad_layers(self, tmp_path, layers):
        """Duplicate or reserved layer names and a tiny chunk size are refused, naming the argument."""
        with pytest.raises(q4gsw.ShapeError, match="'layers'"):
            export_web(tmp_path, [layers["odd"], layers["odd"]])
        with pytest.raises(q4gsw.ShapeError, match="'name'"):
            WebLayer("kernels", layers["odd"].weight)
        with pytest.raises(q4gsw.ShapeError, match="'bias'"):
            WebLayer("x", layers["odd"].weight, np.zeros(3, np.float32))
        with pytest.raises(q4gsw.ShapeError, match="'chunk_bytes'"):
            export_web(tmp_path, [layers["odd"]], chunk_bytes=8)

    def test_npz_layer(self, tmp_path, layers):
        """An .npz of ExecuTorch's tensors becomes the same PackedWeight (odd K via in_features)."""
        w = layers["odd"].weight
        path = tmp_path / "proj.npz"
        np.savez(path, weights=w.weights, weight_scales=w.scales, group_size=w.group_size,
                 in_features=w.in_features, bias=layers["odd"].bias)
        layer = load_npz_layer(path)
        assert layer.name == "proj" and layer.weight.in_features == 45
        assert np.array_equal(layer.weight.weights, w.weights) and np.array_equal(layer.bias, layers["odd"].bias)

    def test_cli(self, tmp_path, capsys):
        """`q4gsw export-web OUT --random NxK` writes a bundle."""
        assert cli.main(["export-web", str(tmp_path / "b"), "--random", "64x96", "--group-size", "32"]) == 0
        manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
        assert [layer["name"] for layer in manifest["layers"]] == ["random_64x96"]
        assert (manifest["weights"]["random_64x96"]["N"], manifest["weights"]["random_64x96"]["K"]) == (64, 96)
        assert "wrote" in capsys.readouterr().out

    def test_random_layer(self):
        """random_layer quantizes a seeded normal weight (same seed, same bytes)."""
        a, b = random_layer("a", 8, 64, group_size=32, seed=3), random_layer("b", 8, 64, group_size=32, seed=3)
        assert np.array_equal(a.weight.weights, b.weight.weights) and a.bias.shape == (8,)


@dataclasses.dataclass
class BrowserRun:
    """The harness's report, the x of each case, compile.json's entries, and the page's progress."""

    report: dict
    inputs: dict
    kernels: list
    page: PageRun

    def case(self, case_id: str) -> dict:
        return next(c for c in self.report["cases"] if c["id"] == case_id)


@pytest.fixture(scope="module")
def browser_run(bundle, layers):
    """Compile every shipped kernel and run CASES through q4gsw.js in headless Chromium."""
    rng = np.random.default_rng(7)
    (bundle / "cases").mkdir(exist_ok=True)
    cases, inputs = [], {}
    for case_id, layer, m, kernel, bias, fold, gpu in CASES:
        x = rng.standard_normal((m, layers[layer].weight.in_features)).astype(np.float32)
        (bundle / "cases" / f"{case_id}.bin").write_bytes(x.tobytes())
        inputs[case_id] = x
        cases.append({"id": case_id, "layer": layer, "m": m, "kernel": kernel, "bias": bias,
                      "x": f"cases/{case_id}.bin", "max_workgroups_per_dimension": fold, "gpu": gpu})
    for case_id, layer, m, bias in INT8_CASES:
        x = rng.standard_normal((m, layers[layer].weight.in_features)).astype(np.float32)
        (bundle / "cases" / f"{case_id}.bin").write_bytes(x.tobytes())
        inputs[case_id] = x
        cases.append({"id": case_id, "layer": layer, "m": m, "kernel": None, "bias": bias, "x": f"cases/{case_id}.bin",
                      "max_workgroups_per_dimension": None, "gpu": False, "activations": "int8"})
    (bundle / "cases.json").write_text(json.dumps(cases))
    (bundle / "compile").mkdir(exist_ok=True)
    compile_list = []
    for i, key in enumerate(shipped_kernel_keys()):
        code, constants = _python_compiles(key)
        (bundle / "compile" / f"{i}.wgsl").write_text(code, encoding="utf-8", newline="")
        compile_list.append({
            "label": str(key), "source": f"compile/{i}.wgsl", "constants": constants,
            "files": [f"{f}.wgsl" for f in key.sources], "invocations": _invocations(code, constants),
        })
    (bundle / "compile.json").write_text(json.dumps(compile_list))
    shutil.copy(HARNESS, bundle / "harness.html")
    try:
        page = run_page(bundle, "harness.html")
    except BrowserUnavailable as exc:
        _no_browser(exc)
    report = json.loads(page.report)
    if (report["fatal"] or "").startswith("DeviceError"):  # a Chromium without WebGPU
        _no_browser(report["fatal"])
    assert report["fatal"] is None, report["fatal"]
    return BrowserRun(report, inputs, compile_list, page)


class TestBrowser:
    @pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
    def test_matches_python(self, browser_run, layers, manifest, case):
        """q4gsw.js in Chromium (SwiftShader) gives Python's result within fp32 tolerance, with
        the kernel Python's select() picks for the browser's capabilities, its key and folded
        grid, the output where it was asked for, and a skip only where the device forces one."""
        case_id, layer_name, m, kernel, with_bias, fold, gpu = case
        got = browser_run.case(case_id)
        assert got["error"] is None, got["error"]
        assert got["gpu"] == gpu
        layer = layers[layer_name]
        w = layer.weight
        bias = layer.bias if with_bias else None
        x = browser_run.inputs[case_id]
        y_js = np.frombuffer(base64.b64decode(got["out"]), np.float32).reshape(m, w.out_features)
        y_py = q4gsw.linear(x, w, bias, kernel=kernel)
        caps = browser_caps(browser_run.report["caps"])
        p = Problem(m, w.out_features, w.in_features, w.group_size, with_bias)
        spec = KERNELS[got["kernel"]].bind(caps)
        first = p.with_n(manifest["weights"][layer_name]["chunks"][0]["n"])
        assert got["key"] == str(spec.key(first))
        n_tiles, m_tiles = spec.tiles(first)
        assert tuple(got["grid"]) == fold_grid(n_tiles * m_tiles, fold or browser_run.report["maxWorkgroupsPerDimension"])
        assert_matches_reference(y_js, x, w, bias)
        assert (np.abs(y_js - y_py) <= tolerance(x, w, bias)).all()
        if gpu:  # a GPU-resident call is not timed unless asked (timing: true)
            assert got["timing"] is None
        else:
            assert got["timing"]["method"] in ("timestamp-query", "wall-clock") and got["timing"]["ns"] >= 0
        if layer_name == "deep":
            assert got["kernel"] == "general"
            assert {f["kernel"]: f["reason"] for f in got["fallbacks"]} == {
                name: f"needs {n} invocations per workgroup, the device has 256" for name, n in DEEP_FALLBACKS.items()}
        else:
            assert got["fallbacks"] == []
            if kernel is None:
                assert got["kernel"] == select(p, caps).name

    @pytest.mark.parametrize("case", INT8_CASES, ids=[c[0] for c in INT8_CASES])
    def test_int8_matches_python(self, browser_run, layers, manifest, case):
        """activations "int8": q4gsw.js routes decode_int8 as Python's select() does for the
        browser's capabilities (same key), and its result is the float64 product of x quantized
        per 32 k (within the tolerance that allows the device's 127 / amax an ulp or three)."""
        case_id, layer_name, m, with_bias = case
        got = browser_run.case(case_id)
        assert got["error"] is None, got["error"]
        layer = layers[layer_name]
        w = layer.weight
        bias = layer.bias if with_bias else None
        x = browser_run.inputs[case_id]
        y_js = np.frombuffer(base64.b64decode(got["out"]), np.float32).reshape(m, w.out_features)
        caps = browser_caps(browser_run.report["caps"])
        p = Problem(m, w.out_features, w.in_features, w.group_size, with_bias)
        spec = select(p, caps, activations="int8")
        assert got["kernel"] == spec.name and got["kernel"].startswith("decode_int8")
        assert got["key"] == str(spec.key(p.with_n(manifest["weights"][layer_name]["chunks"][0]["n"])))
        assert_matches_int8_reference(y_js, x, w, bias, x_group=32)

    def test_grids_fold(self, browser_run):
        """Each case with a lowered limit ran on a grid folded over it (y > 1)."""
        for case_id, *_, fold, _gpu in CASES:
            if fold is not None:
                grid = browser_run.case(case_id)["grid"]
                assert grid[1] > 1 and max(grid) <= fold, (case_id, grid)

    def test_decode_at_m1(self, browser_run):
        """At M=1 the default kernel is decode: decode_subgroup where the browser offers
        `subgroups` (Debian's Chromium does), else decode_workgroup."""
        features = browser_run.report["features"]
        if _require_browser():
            assert "subgroups" in features
        assert browser_run.case("decode-M1")["kernel"] == (
            "decode_subgroup" if "subgroups" in features else "decode_workgroup")

    def test_errors_name_the_argument(self, browser_run):
        """q4gsw.js throws the same error classes as Python, naming the argument."""
        errors = browser_run.report["errors"]
        expected = {
            "x_dtype": ("DTypeError", "x"), "x_shape": ("ShapeError", "x"), "bias_shape": ("ShapeError", "bias"),
            "weight_type": ("DTypeError", "weight"), "unknown_kernel": ("UnsupportedShapeError", None),
            "tiled_odd": ("UnsupportedShapeError", None), "packed_scales": ("ShapeError", "weight_scales"),
            "fold_limit": ("ArgumentError", "maxWorkgroupsPerDimension"), "x_other_device": ("DTypeError", "x"),
            "from_buffer_shape": ("ShapeError", "buffer"),
        }
        for name, (cls, argument) in expected.items():
            assert (errors[name]["name"], errors[name]["argument"]) == (cls, argument), (name, errors[name])
            assert errors[name]["isQ4gswError"]
        assert "K=45 is not a multiple of 32" in errors["tiled_odd"]["message"]

    def test_device_lost(self, browser_run):
        """After device.destroy() the onDeviceLost callback gets a DeviceLostError, and calls on
        the runtime throw DeviceLostError (not the browser's AbortError)."""
        lost = browser_run.report["deviceLost"]
        assert lost["callback"] == {"name": "DeviceLostError", "reason": "destroyed"}
        for call in ("linear", "tensor"):
            assert lost[call]["name"] == "DeviceLostError" and lost[call]["isQ4gswError"], lost[call]

    def test_progress_reported(self, browser_run):
        """The page reported a step for the runtime, every case, every kernel compiled and the lost device."""
        steps = [what for what, _ in browser_run.page.events if not what.startswith("GET ")]
        assert steps == (["runtime"] + [f"case {c[0]}" for c in CASES] + [f"case {c[0]}" for c in INT8_CASES]
                         + [f"compile {k['label']}" for k in browser_run.kernels] + ["device lost"])


class TestKernelsCompileInChromium:
    def test_every_file_listed(self):
        """shipped_kernel_keys() uses every .wgsl file, and splits decode_batch and tiled_split."""
        stems = {p.name.removesuffix(".wgsl") for p in files("q4gsw.kernels").iterdir() if p.name.endswith(".wgsl")}
        keys = shipped_kernel_keys()
        assert {f for key in keys for f in key.sources} == stems
        for name in ("decode_batch", "tiled_split"):
            assert any(key.name == name and dict(key.constants)["SPLIT"] > 1 for key in keys), name

    def test_compiles(self, browser_run):
        """Tint accepts every shipped kernel (parsing, validation, uniformity analysis), and
        builds its pipeline wherever the workgroup fits the device; the f16 KV cache's kernels
        (kv_f16.wgsl first) are skipped exactly where the device lacks shader-f16 (SwiftShader
        in Chromium 156 does)."""
        compiled = browser_run.report["compiled"]
        assert [c["label"] for c in compiled] == [k["label"] for k in browser_run.kernels]
        errors = {c["label"]: c["error"] for c in compiled if c["error"]}
        assert not errors, "\n\n".join(f"{k}: {e}" for k, e in errors.items())
        limit = browser_run.report["maxInvocations"]
        has_f16 = "shader-f16" in browser_run.report["features"]
        for c, kernel in zip(compiled, browser_run.kernels):
            f16 = "kv_f16.wgsl" in kernel["files"]
            assert c["skipped"] == (None if has_f16 or not f16 else "the device lacks shader-f16"), c["label"]
            assert c["pipeline"] == (kernel["invocations"] <= limit and c["skipped"] is None), c["label"]


class TestWaitForReport:
    """tests/browser.py's rule, with a stand-in browser process: fail when the page stops making
    progress or the browser dies, never on the page's total time."""

    @pytest.fixture
    def page(self, tmp_path):
        with serve(tmp_path) as server:
            server.start_clock()
            yield server

    @staticmethod
    def _browser(seconds: float) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])

    @staticmethod
    def _post(server, path: str, body: bytes) -> None:
        url = f"http://127.0.0.1:{server.server_port}{path}"
        urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=30).close()

    def _steps(self, server, count: int, interval: float, report: bool) -> threading.Thread:
        def run():
            for i in range(count):
                time.sleep(interval)
                self._post(server, "/progress", json.dumps({"step": f"s{i}"}).encode())
            if report:
                self._post(server, "/result", b"done")

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def test_slow_page_passes(self, page):
        """A page whose steps keep coming reports after 3x the stall limit, and passes."""
        browser = self._browser(60)
        try:
            self._steps(page, 30, 0.1, report=True)
            run = wait_for_report(browser, page, stall=1.0)
        finally:
            browser.kill()
            browser.wait()
        assert run.report == b"done" and [what for what, _ in run.events] == [f"s{i}" for i in range(30)]
        assert sum(gap for _, gap in run.events) > 2.0

    def test_stalled_page_fails(self, page):
        """A page that stops reporting steps fails once the stall limit passes, naming its last step."""
        browser = self._browser(60)
        try:
            self._steps(page, 2, 0.05, report=False).join()
            with pytest.raises(PageFailed, match="no progress for .* last step: s1"):
                wait_for_report(browser, page, stall=0.5)
        finally:
            browser.kill()
            browser.wait()

    def test_dead_browser(self, page):
        """A browser that exits fails the page: as unavailable before any request, else as failed."""
        browser = self._browser(0)
        browser.wait()
        with pytest.raises(BrowserUnavailable, match="exited with 0"):
            wait_for_report(browser, page, stall=60)
        self._steps(page, 1, 0, report=False).join()
        with pytest.raises(PageFailed, match="exited with 0 .*last step: s0"):
            wait_for_report(browser, page, stall=60)
