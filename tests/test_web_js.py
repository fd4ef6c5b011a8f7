"""Tests of q4gsw.js's pure modules under node: kernels.js decides as the Python kernel specs
and select() do (keys, tiles, splits, predicted times, reasons, the choice) over a grid of
problems and devices, and routes around what a browser cannot run; tokenizer.js encodes and
decodes as the tokenizers library does, for q4gsw's random checkpoints' tokenizer and a Llama
3 style one (a Split regex with a case-insensitive group, a BOS template, NFC)."""

from __future__ import annotations

import itertools
import json
import math
import shutil
import subprocess
from importlib.resources import files
from pathlib import Path

import pytest

from q4gsw.kernels import INT8_KERNELS, KERNELS, Problem, select
from q4gsw.errors import UnsupportedShapeError
from q4gsw.web.export import routing

from .test_web import _no_browser
from .utils import fake_capabilities

NODE_CHECK = Path(__file__).parent / "web" / "node_check.mjs"
STATIC = files("q4gsw.web").joinpath("static")

#: Devices: (q4gsw.js caps, the same device as Python Capabilities). 1024 invocations: no
#: browser-only skip, so the choice must be select()'s exactly.
DEVICES = {
    "swiftshader-like": dict(hasSubgroups=True, subgroupMinSize=4, maxBindingSize=1 << 30, maxWorkgroupStorage=32768,
                             isCpu=True),
    "no-subgroups": dict(hasSubgroups=False, subgroupMinSize=4, maxBindingSize=1 << 27, maxWorkgroupStorage=16384,
                         isCpu=False),
    "wide-subgroups": dict(hasSubgroups=True, subgroupMinSize=32, maxBindingSize=1 << 27, maxWorkgroupStorage=16384,
                           isCpu=False),
    "gpu": dict(hasSubgroups=True, subgroupMinSize=32, maxBindingSize=1 << 31, maxWorkgroupStorage=49152, isCpu=False),
}
PROBLEMS = [list(p) for p in itertools.product(
    (1, 2, 3, 4, 5, 8, 16, 17, 33, 64, 65, 100, 128, 130, 257, 512, 1000, 1024, 1025),
    (1, 67, 256, 4096, 14336, 128256), (45, 64, 512, 4096, 8192, 8448, 14336, 32768, 40000), (7, 32, 64, 128),
    (False, True))]


def python_caps(caps: dict):
    return fake_capabilities(
        adapter_name="a browser", driver="a browser", features=frozenset({"subgroup"} if caps["hasSubgroups"] else set()),
        limits={"max-storage-buffer-binding-size": caps["maxBindingSize"], "max-compute-workgroups-per-dimension": 65535,
                "max-compute-workgroup-storage-size": caps["maxWorkgroupStorage"]},
        subgroup_min_size=caps["subgroupMinSize"], adapter_type="CPU" if caps["isCpu"] else "DiscreteGPU")


def run_node(job: dict) -> dict:
    """node tests/web/node_check.mjs on job (skips, or fails under Q4GSW_REQUIRE_BROWSER=1, without node)."""
    node = shutil.which("node")
    if node is None:
        _no_browser("no node on PATH (Debian: apt-get install nodejs)")
    done = subprocess.run([node, str(NODE_CHECK)], input=json.dumps({"static": str(STATIC), **job}),
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def assert_specs_match(got: dict, specs: list, p: Problem, caps) -> int:
    """kernels.js's view of p (got["specs"]) has every spec of `specs`, in order, with Python's
    reason and, where it runs p, Python's key, tiles, split, reduction key and predicted time.
    Returns how many specs run p."""
    assert list(got["specs"]) == [spec.name for spec in specs]
    runs = 0
    for spec in specs:
        js = got["specs"][spec.name]
        assert js["reason"] == spec.supports(p, caps), (spec.name, p)
        if js["reason"] is None:
            split = spec.split(p)
            assert (js["key"], js["tiles"], js["split"]) == (str(spec.key(p)), list(spec.tiles(p)), split), (spec.name, p)
            assert js["reduce"] == (str(spec.reduce_key(p)) if split > 1 else None)
            want = spec.predicted_seconds(p)
            assert (js["predicted"] is None) == (want is None)
            assert want is None or math.isclose(js["predicted"], want, rel_tol=1e-12)
            runs += 1
    return runs


@pytest.fixture(scope="module")
def routed():
    """{device: [what kernels.js made of each of PROBLEMS]}."""
    jobs = [{"costs": routing(), "caps": {**caps, "maxInvocations": 1024}, "problems": PROBLEMS}
            for caps in DEVICES.values()]
    return dict(zip(DEVICES, run_node({"routing": jobs})["routing"]))


@pytest.fixture(scope="module")
def routed_int8():
    """{device: [what kernels.js made of each of PROBLEMS with activations "int8"]}."""
    jobs = [{"costs": routing(), "caps": {**caps, "maxInvocations": 1024}, "problems": PROBLEMS, "activations": "int8"}
            for caps in DEVICES.values()]
    return dict(zip(DEVICES, run_node({"routing": jobs})["routing"]))


class TestKernelsJs:
    @pytest.mark.parametrize("device", list(DEVICES))
    def test_specs_match_python(self, routed, device):
        """Every kernel's reason, key, tiles, split, reduction key and predicted time is the
        Python spec's, for every problem of the grid."""
        caps = python_caps(DEVICES[device])
        specs = [spec.bind(caps) for spec in KERNELS.values() if not spec.baseline]
        checked = sum(assert_specs_match(got, specs, Problem(*problem), caps)
                      for problem, got in zip(PROBLEMS, routed[device]))
        assert checked > len(PROBLEMS)

    @pytest.mark.parametrize("device", list(DEVICES))
    def test_select_matches_python(self, routed, device):
        """The kernel chosen (or the error and its reasons) is select()'s, with nothing skipped."""
        caps = python_caps(DEVICES[device])
        for (m, n, k, gs, bias), got in zip(PROBLEMS, routed[device]):
            p = Problem(m, n, k, gs, bias)
            try:
                want = {"kernel": select(p, caps).name, "fallbacks": []}
            except UnsupportedShapeError as exc:
                want = {"error": f"UnsupportedShapeError: {exc}"}
            assert got["select"] == want, p

    @pytest.mark.parametrize("device", list(DEVICES))
    def test_int8_specs_and_choice_match_python(self, routed_int8, device):
        """kernels.js's int8 kernels (decode_int8 only) decide as Python's DecodeInt8 for every
        problem; the int8 choice is select(activations="int8")'s wherever that is decode_int8,
        and an UnsupportedShapeError naming decode_int8's reasons where Python takes an int8 GEMM
        (M > 8, K past 32768), which q4gsw.js does not have."""
        caps = python_caps(DEVICES[device])
        specs = [spec.bind(caps) for spec in INT8_KERNELS.values() if spec.name.startswith("decode_int8")]
        chosen = 0
        for (m, n, k, gs, bias), got in zip(PROBLEMS, routed_int8[device]):
            p = Problem(m, n, k, gs, bias)
            assert_specs_match(got, specs, p, caps)
            try:
                want = select(p, caps, activations="int8").name
            except UnsupportedShapeError:
                want = None
            if want is not None and want.startswith("decode_int8"):
                assert got["select"] == {"kernel": want, "fallbacks": []}, p
                chosen += 1
            else:
                assert got["select"]["error"].startswith("UnsupportedShapeError: no kernel runs"), (p, got["select"])
        assert chosen > 100

    def test_routes_around_the_device(self):
        """Over 256 invocations (SwiftShader) decode is skipped and listed, general stands in for
        it at M=1 (not a 128-row tile), decode still runs where it fits; a kernel that failed to
        compile is skipped and listed with the compiler's message."""
        caps = {**DEVICES["swiftshader-like"], "maxInvocations": 256}
        problems = [[1, 4096, 14336, 128, False], [1, 4096, 4096, 128, False], [4, 4096, 14336, 128, False],
                    [512, 4096, 14336, 128, False]]
        small, broken = run_node({"routing": [
            {"costs": routing(), "caps": caps, "problems": problems},
            {"costs": routing(), "caps": {**caps, "maxInvocations": 1024}, "broken": {"decode_subgroup": "Tint: no"},
             "problems": [[1, 4096, 4096, 128, False]]}]})["routing"]
        wide, fits, batch, big = (r["select"] for r in small)
        assert wide["kernel"] == "general"
        assert wide["fallbacks"] == [
            {"kernel": "decode_subgroup", "reason": "needs 448 invocations per workgroup, the device has 256"},
            {"kernel": "decode_workgroup", "reason": "needs 448 invocations per workgroup, the device has 256"},
            {"kernel": "decode_narrow_subgroup", "reason": "needs 896 invocations per workgroup, the device has 256"},
            {"kernel": "decode_x2_subgroup", "reason": "needs 448 invocations per workgroup, the device has 256"},
            {"kernel": "decode_batch", "reason": "needs 896 invocations per workgroup, the device has 256"}]
        assert fits == {"kernel": "decode_subgroup", "fallbacks": []}
        assert batch["kernel"] == "general"
        assert big == {"kernel": "tiled", "fallbacks": []}  # prefill: select()'s choice, nothing skipped
        assert broken[0]["select"] == {"kernel": "decode_workgroup", "fallbacks": [
            {"kernel": "decode_subgroup", "reason": "failed to compile on this device: Tint: no"}]}


#: Llama 3's pre-tokenizer split (tokenizer.json of Meta-Llama-3).
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
TEXTS = ["Once upon a time there was a small language model", "The quick brown fox jumps over the lazy dog.",
         "Hello, world! 0123456789", "naïve café, 東京 and 🙂 — “quotes”", "  spaced\n\n out\tTabs  ", "",
         "<s>The fox</s> DON'T I'LL we've", "caf\u0065\u0301 (an e and a combining accent)"]


def _tokenizers(tmp_path) -> dict[str, Path]:
    """{name: tokenizer.json}: q4gsw's random-checkpoint tokenizer and a Llama 3 style one."""
    tokenizers = pytest.importorskip("tokenizers")
    from q4gsw.llm import DecoderConfig, write_random_checkpoint
    from q4gsw.llm.synthetic import SENTENCES

    write_random_checkpoint(tmp_path / "random", DecoderConfig("LlamaForCausalLM", 300, 64, 128, 1, 4, 2, 16))
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(ignore_merges=True))
    tok.normalizer = tokenizers.normalizers.NFC()
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Sequence([
        tokenizers.pre_tokenizers.Split(tokenizers.Regex(LLAMA3_PATTERN), behavior="isolated"),
        tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=420, special_tokens=["<|begin_of_text|>", "<|end_of_text|>"],
                                             show_progress=False, initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([*SENTENCES, *TEXTS] * 3, trainer)
    tok.post_processor = tokenizers.processors.Sequence([
        tokenizers.processors.ByteLevel(trim_offsets=False),
        tokenizers.processors.TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 0)])])
    tok.save(str(tmp_path / "llama3.json"))
    return {"random": tmp_path / "random" / "tokenizer.json", "llama3": tmp_path / "llama3.json"}


class TestTokenizerJs:
    def test_matches_tokenizers(self, tmp_path):
        """tokenizer.js's ids and text are the tokenizers library's (special tokens, templates,
        unicode, whitespace runs, case-insensitive contractions)."""
        from tokenizers import Tokenizer

        paths = _tokenizers(tmp_path)
        decode = [[0, 5, 77, 1, 200], list(range(2, 60)), [299, 250, 3]]
        got = run_node({"tokenizers": [{"path": str(p), "texts": TEXTS, "decode": decode} for p in paths.values()]})
        for (name, path), js in zip(paths.items(), got["tokenizers"]):
            tok = Tokenizer.from_file(str(path))
            assert js["encoded"] == [tok.encode(t).ids for t in TEXTS], name
            assert js["decoded"] == [tok.decode(ids) for ids in decode], name
            assert any(len(ids) > 3 for ids in js["encoded"])


KV_CHECK = Path(__file__).parent / "web" / "kv_check.mjs"


class TestKvCacheOpsJs:
    def test_files_and_errors_match_python(self, runtime):
        """ops.js records rope_kv and attention with the same keys and files (kv_f32.wgsl or
        kv_f16.wgsl first) as q4gsw.llm.ops for either cache dtype; float16 caches without
        shader-f16 are a FeatureError naming kCache, mixed dtypes a DTypeError naming vCache."""
        import numpy as np

        from q4gsw.chain import Chain, empty, upload
        from q4gsw.llm import ops

        node = shutil.which("node")
        if node is None:
            _no_browser("no node on PATH (Debian: apt-get install nodejs)")
        cases = [{"dtypes": ["float32", "float32"], "features": []},
                 {"dtypes": ["float16", "float16"], "features": ["shader-f16"]},
                 {"dtypes": ["float16", "float16"], "features": []},
                 {"dtypes": ["float16", "float32"], "features": ["shader-f16"]}]
        done = subprocess.run([node, str(KV_CHECK)], input=json.dumps({"static": str(STATIC), "cases": cases}),
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        js = json.loads(done.stdout)
        if not runtime.caps.has_f16:
            pytest.skip("the Python side of the float16 case needs shader-f16")
        for case, got in zip(cases[:2], js[:2]):
            state = runtime.buffers.upload(np.zeros(4, np.uint32), runtime.wgpu.BufferUsage.UNIFORM, "test/state")
            k, v = (empty((2, 128, 16), dtype=d) for d in case["dtypes"])
            with Chain() as chain:
                q = ops.rope_kv(chain, upload(np.zeros((1, 128), np.float32)), upload(np.zeros((128, 8, 2), np.float32)),
                                state, k, v, q_heads=4, kv_heads=2, head_dim=16)
                ops.attention(chain, q, k, v, state, kv_heads=2, head_dim=16, splits=2, split_keys=64)
                python = [{"key": str(d.key), "sources": list(d.key.sources)} for d in chain.dispatches]
            assert got == {"keys": python, "error": None}
        for got, kv in zip(js[:2], ("kv_f32", "kv_f16")):
            assert [key["sources"] for key in got["keys"]] == [[kv, "rope_kv"], [kv, "attention"], ["attention_combine"]]
        assert js[2]["error"] == {"name": "FeatureError", "argument": "kCache", "feature": "shader-f16"}
        assert js[3]["error"] == {"name": "DTypeError", "argument": "vCache", "feature": None}
