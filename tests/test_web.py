"""Tests of q4gsw.web: the bundle's kernels are Python's, and q4gsw.js in Chromium matches Python."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest

import q4gsw
from q4gsw import cli
from q4gsw.kernels import KERNELS, Problem, select
from q4gsw.runtime.dispatch import fold_grid
from q4gsw.runtime.pipelines import KernelKey, PipelineCache
from q4gsw.web.export import WebLayer, export_web, load_npz_layer, random_layer

from .browser import BrowserUnavailable, run_page
from .utils import assert_matches_reference, random_problem, tolerance

HARNESS = Path(__file__).parent / "web" / "harness.html"

#: Browser cases: (id, layer, M, kernel forced or None, bias). Layer "wide": N=256, K=512,
#: group_size 64; "odd": N=67, K=45, group_size 7 (only the general kernel runs it).
CASES = [
    ("decode-M1", "wide", 1, None, True),
    ("decode-workgroup-M1", "wide", 1, "decode_workgroup", False),
    ("tiled-M130", "wide", 130, "tiled", True),
    ("general-odd-M5", "odd", 5, None, True),
    ("general-odd-fold", "odd", 3920, None, False),  # 980 x 67 = 65 660 workgroups: grid folds
]

#: Tint's (Chromium's) uniformity analysis rejects decode.wgsl as of this commit: main reads
#: workgroup_id through the Invocation struct, which also holds per-invocation builtins, so
#: the early return makes the later workgroupBarrier non-uniform. naga does not check this.
UNIFORMITY = "must only be called from uniform control flow"
DECODE_XFAIL = ("decode.wgsl fails Chromium's uniformity analysis (fix: take workgroup_id and "
                "num_workgroups as separate @builtin parameters of main, not Invocation members)")


def _require_browser() -> bool:
    return os.environ.get("CI") == "true" or os.environ.get("Q4GSW_REQUIRE_BROWSER") == "1"


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


@pytest.fixture(scope="module")
def layers():
    rng = np.random.default_rng(20261201)
    wide = random_problem(rng, 1, 256, 512, 64)
    odd = random_problem(rng, 1, 67, 45, 7)
    return {"wide": WebLayer("wide", wide.pw, wide.bias), "odd": WebLayer("odd", odd.pw, odd.bias)}


@pytest.fixture(scope="module")
def bundle(layers, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle")
    export_web(out, list(layers.values()))
    return out


class TestExportWeb:
    def test_files(self, bundle):
        """The bundle holds the manifest, q4gsw.js, index.html, kernels and each layer's bytes."""
        manifest = json.loads((bundle / "manifest.json").read_text())
        assert (manifest["format"], manifest["version"]) == ("q4gsw-web", 1)
        for name in ("q4gsw.js", "index.html"):
            assert (bundle / name).read_bytes() == files("q4gsw.web").joinpath("static", name).read_bytes()
        for layer in manifest["layers"]:
            for meta in layer["files"].values():
                assert (bundle / meta["file"]).stat().st_size == meta["nbytes"]

    def test_weights_roundtrip(self, bundle, layers):
        """weights.bin, scales.bin and bias.bin are the PackedWeight's arrays, byte for byte."""
        manifest = json.loads((bundle / "manifest.json").read_text())
        for entry in manifest["layers"]:
            layer = layers[entry["name"]]
            w = layer.weight
            assert (entry["N"], entry["K"], entry["group_size"]) == (w.out_features, w.in_features, w.group_size)
            assert (entry["scale_rows"], entry["padded_N"]) == w.scales.shape
            assert (bundle / entry["files"]["weights"]["file"]).read_bytes() == w.weights.tobytes()
            assert (bundle / entry["files"]["scales"]["file"]).read_bytes() == w.scales.astype("<f4").tobytes()
            assert (bundle / entry["files"]["bias"]["file"]).read_bytes() == layer.bias.astype("<f4").tobytes()

    def test_kernels_byte_identical(self, bundle):
        """Each key's .wgsl file and constants are exactly what Python's PipelineCache compiles."""
        manifest = json.loads((bundle / "manifest.json").read_text())
        checked = 0
        for layer in manifest["layers"]:
            for entry in layer["kernels"]:
                if "unsupported" in entry:
                    continue
                spec = KERNELS[entry["name"]]
                for variant, has_bias in (("no_bias", False), ("bias", True)):
                    key = spec.key(Problem(1, layer["N"], layer["K"], layer["group_size"], has_bias))
                    assert entry["keys"][variant] == str(key)
                    kernel = manifest["kernels"][str(key)]
                    code, constants = _python_compiles(key)
                    assert (bundle / kernel["source"]).read_bytes() == code.encode("utf-8")
                    assert {k: float(v) for k, v in kernel["constants"].items()} == constants
                    checked += 1
        assert checked == 2 * (4 + 1)  # wide: decode x2, tiled, general; odd: general

    def test_unsupported_reasons(self, bundle):
        """Kernels that cannot run a layer carry select()'s reason, for q4gsw.js's errors."""
        manifest = json.loads((bundle / "manifest.json").read_text())
        odd = next(layer for layer in manifest["layers"] if layer["name"] == "odd")
        reasons = {e["name"]: e.get("unsupported") for e in odd["kernels"]}
        assert reasons["tiled"] == KERNELS["tiled"].supports(Problem(1, 67, 45, 7), None)
        assert reasons["general"] is None

    def test_params_fields_match_wgsl(self):
        """q4gsw.js packs params in the field order of every kernel's WGSL struct Params."""
        js = files("q4gsw.web").joinpath("static", "q4gsw.js").read_text()
        js_fields = re.findall(r'"(\w+)"', re.search(r"PARAMS_FIELDS = Object.freeze\(\[(.*?)\]\)", js, re.S)[1])
        for name in ("decode", "tiled", "general"):
            wgsl = files("q4gsw.kernels").joinpath(f"{name}.wgsl").read_text()
            body = re.search(r"struct Params \{(.*?)\}", wgsl, re.S)[1]
            assert re.findall(r"(\w+)\s*:\s*u32", body) == js_fields, name

    def test_bad_layers(self, tmp_path, layers):
        """Duplicate or reserved layer names are refused, naming the argument."""
        with pytest.raises(q4gsw.ShapeError, match="'layers'"):
            export_web(tmp_path, [layers["odd"], layers["odd"]])
        with pytest.raises(q4gsw.ShapeError, match="'name'"):
            WebLayer("kernels", layers["odd"].weight)
        with pytest.raises(q4gsw.ShapeError, match="'bias'"):
            WebLayer("x", layers["odd"].weight, np.zeros(3, np.float32))

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
        assert [(l["name"], l["N"], l["K"]) for l in manifest["layers"]] == [("random_64x96", 64, 96)]
        assert "wrote" in capsys.readouterr().out

    def test_random_layer(self):
        """random_layer quantizes a seeded normal weight (same seed, same bytes)."""
        a, b = random_layer("a", 8, 64, group_size=32, seed=3), random_layer("b", 8, 64, group_size=32, seed=3)
        assert np.array_equal(a.weight.weights, b.weight.weights) and a.bias.shape == (8,)


@pytest.fixture(scope="module")
def browser_run(bundle, layers):
    """Run CASES through q4gsw.js in headless Chromium; (report, {id: x})."""
    rng = np.random.default_rng(7)
    (bundle / "cases").mkdir(exist_ok=True)
    cases, inputs = [], {}
    for case_id, layer, m, kernel, bias in CASES:
        x = rng.standard_normal((m, layers[layer].weight.in_features)).astype(np.float32)
        (bundle / "cases" / f"{case_id}.bin").write_bytes(x.tobytes())
        inputs[case_id] = x
        cases.append({"id": case_id, "layer": layer, "m": m, "kernel": kernel, "bias": bias, "x": f"cases/{case_id}.bin"})
    (bundle / "cases.json").write_text(json.dumps(cases))
    shutil.copy(HARNESS, bundle / "harness.html")
    try:
        report = json.loads(run_page(bundle, "harness.html", timeout=50))
    except BrowserUnavailable as exc:
        if _require_browser():
            pytest.fail(f"CI=true or Q4GSW_REQUIRE_BROWSER=1, but the browser test could not run: {exc}")
        pytest.skip(f"no headless Chromium with WebGPU: {exc}")
    assert report["fatal"] is None, report["fatal"]
    return report, inputs


class TestBrowser:
    @pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
    def test_matches_python(self, browser_run, layers, runtime, case):
        """q4gsw.js in Chromium (SwiftShader) gives Python's result within fp32 tolerance, with
        the same kernel, key and folded grid."""
        report, inputs = browser_run
        case_id, layer_name, m, kernel, with_bias = case
        got = next(c for c in report["cases"] if c["id"] == case_id)
        if got["error"]:
            if UNIFORMITY in got["error"] and (kernel or "").startswith("decode"):
                pytest.xfail(f"{DECODE_XFAIL}: {got['error'][:400]}")
            pytest.fail(got["error"])
        layer = layers[layer_name]
        bias = layer.bias if with_bias else None
        x = inputs[case_id]
        y_js = np.frombuffer(base64.b64decode(got["out"]), np.float32).reshape(m, layer.weight.out_features)
        y_py = q4gsw.linear(x, layer.weight, bias, kernel=kernel)
        p = Problem(m, layer.weight.out_features, layer.weight.in_features, layer.weight.group_size, with_bias)
        spec = KERNELS[got["kernel"]]
        assert got["key"] == str(spec.key(p))
        n_tiles, m_tiles = spec.tiles(p)
        assert tuple(got["grid"]) == fold_grid(n_tiles * m_tiles, 65535)
        assert_matches_reference(y_js, x, layer.weight, bias)
        assert (np.abs(y_js - y_py) <= tolerance(x, layer.weight, bias)).all()
        assert got["timing"]["method"] in ("timestamp-query", "wall-clock") and got["timing"]["ns"] >= 0
        if kernel is None:
            py_choice = select(p, runtime.caps).name
            skipped = {f["kernel"]: f["reason"] for f in got["fallbacks"]}
            if py_choice in skipped and UNIFORMITY in skipped[py_choice]:
                pytest.xfail(f"ran {got['kernel']} instead: {DECODE_XFAIL}")
            if "subgroups" in report["features"] or py_choice != "decode_subgroup":
                assert got["kernel"] == py_choice

    def test_decode_uses_subgroups_when_offered(self, browser_run):
        """Where the browser offers `subgroups`, the default M=1 kernel is decode_subgroup."""
        report, _ = browser_run
        got = next(c for c in report["cases"] if c["id"] == "decode-M1")
        if any(UNIFORMITY in f["reason"] for f in got["fallbacks"]):
            pytest.xfail(DECODE_XFAIL)
        assert got["kernel"] == ("decode_subgroup" if "subgroups" in report["features"] else "decode_workgroup")

    def test_errors_name_the_argument(self, browser_run):
        """q4gsw.js throws the same error classes as Python, naming the argument."""
        errors = browser_run[0]["errors"]
        expected = {
            "x_dtype": ("DTypeError", "x"), "x_shape": ("ShapeError", "x"), "bias_shape": ("ShapeError", "bias"),
            "weight_type": ("DTypeError", "weight"), "unknown_kernel": ("UnsupportedShapeError", None),
            "tiled_odd": ("UnsupportedShapeError", None), "packed_scales": ("ShapeError", "weight_scales"),
        }
        for name, (cls, argument) in expected.items():
            assert (errors[name]["name"], errors[name]["argument"]) == (cls, argument), (name, errors[name])
            assert errors[name]["isQ4gswError"]
        assert "K=45 is not a multiple of 32" in errors["tiled_odd"]["message"]
