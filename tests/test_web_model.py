"""Tests of q4gsw.web's model bundles: export_model_web writes what the Python runtime runs
(weights split as it splits them, the RoPE table it computes), and in headless Chromium the
generate page gives Python's greedy ids for tiny random Llama and Qwen2 checkpoints (the
Qwen2 bundle with every weight split over several bindings), q4gsw.js records the chains
Python records (keys, grids, params words), samples and computes logits as Python does, keeps
files in the Cache API, and throws typed errors for corrupt bundles, bad arguments and a lost
device. Sized for SwiftShader on a loaded 2-core machine: hidden 64, 2 layers, vocab 300."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import shutil
from importlib.resources import files
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pytest

import q4gsw
from q4gsw import cli
from q4gsw.errors import UnsupportedShapeError
from q4gsw.llm import DecoderConfig, Llama3RopeScaling, load_checkpoint, write_random_checkpoint
from q4gsw.llm.sampling import Sampling
from q4gsw.runtime.dispatch import fold_grid
from q4gsw.runtime.weights import features_per_chunk
from q4gsw.web import export_model_web

from .browser import BrowserUnavailable, run_page
from .test_web import _no_browser

HARNESS = Path(__file__).parent / "web" / "model_harness.html"
TINY = dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_layers=2, max_position_embeddings=256)
#: The tiny models: a Llama (GQA 4/2, Llama 3 RoPE scaling, untied LM head) and a Qwen2 (q/k/v
#: biases, GQA 4/1, a sliding window of 8 on layer 1, tied embeddings).
CONFIGS = {
    "llama": DecoderConfig("LlamaForCausalLM", **TINY, num_heads=4, num_kv_heads=2, head_dim=16, rms_norm_eps=1e-5,
                           rope_scaling=Llama3RopeScaling(8.0, 1.0, 4.0, 64)),
    "qwen2": DecoderConfig("Qwen2ForCausalLM", **TINY, num_heads=4, num_kv_heads=1, head_dim=16, qkv_bias=True,
                           tie_word_embeddings=True, sliding_window=8, sliding_layers=(1,), rope_theta=1e6),
}
SEEDS = {"llama": 3, "qwen2": 5}
GROUP_SIZE = 32
MAX_POSITIONS = 128  # the decode step's attention in 2 splits (attention_combine)
NEW_TOKENS = 20
PROMPT = "Once upon a time there was a small language model"
#: The Qwen2 bundle's chunk size: every weight (2 KiB and more) is split along N.
SPLIT_CHUNK_BYTES = 1024
SAMPLING = dict(temperature=0.8, top_k=50, top_p=0.9, seed=7)
#: Max |logit difference| between q4gsw.js and Python, as a fraction of max |logit|: the same
#: float32 kernels, summing in other orders where the subgroup size differs (4 vs 8).
LOGITS_RTOL = 1e-4


@dataclasses.dataclass
class Tiny:
    """A tiny checkpoint, its bundle, and what Python's runtime does with it."""

    kind: str
    checkpoint: Path
    bundle: Path
    prompt: list[int]
    greedy: list[int]  # Python's generate(prompt, NEW_TOKENS) with the config's eos
    margin: float  # the smallest top-1 minus top-2 logit over the greedy steps / max |logit|
    model: object  # the Python CausalLM


def _python_side(kind: str, checkpoint: Path, bundle: Path) -> Tiny:
    model = q4gsw.load_model(checkpoint, group_size=GROUP_SIZE, max_positions=MAX_POSITIONS)
    prompt = model.encode(PROMPT)
    greedy = model.generate(prompt, NEW_TOKENS)
    logits = model.logits(prompt + greedy[:-1])[len(prompt) - 1:]
    top2 = np.sort(logits, axis=-1)[:, -2:]
    margin = float((top2[:, 1] - top2[:, 0]).min() / np.abs(logits).max())
    return Tiny(kind, checkpoint, bundle, prompt, greedy, margin, model)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """{kind: Tiny}: each checkpoint exported (the Qwen2 one in chunks of SPLIT_CHUNK_BYTES)."""
    os.environ["Q4GSW_TUNE"] = "0"  # Python routes by the cost model alone, as q4gsw.js does
    out = {}
    for kind, config in CONFIGS.items():
        checkpoint = tmp_path_factory.mktemp(f"{kind}-checkpoint")
        write_random_checkpoint(checkpoint, config, seed=SEEDS[kind])
        bundle = tmp_path_factory.mktemp(f"{kind}-bundle")
        chunk = SPLIT_CHUNK_BYTES if kind == "qwen2" else 128 << 20
        export_model_web(bundle, checkpoint, group_size=GROUP_SIZE, max_positions=MAX_POSITIONS, chunk_bytes=chunk)
        out[kind] = _python_side(kind, checkpoint, bundle)
    yield out
    os.environ.pop("Q4GSW_TUNE", None)


def manifest_of(t: Tiny) -> dict:
    return json.loads((t.bundle / "manifest.json").read_text())


class TestExportModelWeb:
    def test_manifest(self, tiny):
        """The manifest holds the config q4gsw.js reads, every weight (no lm_head when tied),
        the norms and biases, and the tokenizer."""
        for kind, t in tiny.items():
            m = manifest_of(t)
            c = CONFIGS[kind]
            assert (m["format"], m["version"], m["kind"]) == ("q4gsw-web", 2, "model")
            assert m["model"]["max_positions"] == MAX_POSITIONS and m["model"]["num_layers"] == c.num_layers
            assert m["model"]["windows"] == [c.window(i) or 0 for i in range(c.num_layers)]
            names = {"embed"} | {f"layers.{i}.{n}" for i in range(2) for n in ("qkv", "o", "gate_up", "down")}
            assert set(m["weights"]) == (names if c.tie_word_embeddings else names | {"lm_head"})
            assert ("layers.1.qkv_bias" in m["tensors"]) == c.qkv_bias
            assert m["tokenizer"]["file"] == "tokenizer.json"
            assert (t.bundle / "tokenizer.json").read_bytes() == (t.checkpoint / "tokenizer.json").read_bytes()

    def test_split_like_python(self, tiny):
        """Each weight is split along N as the Python runtime splits it for a binding of
        chunk_bytes; in the Qwen2 bundle every weight is in several chunks."""
        for kind, t in tiny.items():
            m = manifest_of(t)
            weights = t.model.weights
            named = {"embed": weights.embed, "lm_head": weights.lm_head}
            named.update({f"layers.{i}.{n}": getattr(layer, n) for i, layer in enumerate(weights.layers)
                          for n in ("qkv", "o", "gate_up", "down")})
            for name, entry in m["weights"].items():
                w = named[name]
                step = features_per_chunk(w, m["chunk_bytes"])
                assert [c["n"] for c in entry["chunks"]] == [min(step, w.out_features - n0)
                                                             for n0 in range(0, w.out_features, step)], name
                if kind == "qwen2":
                    assert len(entry["chunks"]) >= 2, name

    def test_rope_table(self, tiny):
        """rope.cos_sin is the Python runtime's (cos, sin) table for max_positions."""
        t = tiny["llama"]
        ref = manifest_of(t)["tensors"]["rope.cos_sin"]
        with open(t.bundle / ref["file"], "rb") as f:
            f.seek(ref["offset"])
            table = np.frombuffer(f.read(ref["nbytes"]), "<f4").reshape(ref["shape"])
        cos, sin = CONFIGS["llama"].rope_cos_sin(np.arange(MAX_POSITIONS))
        assert np.array_equal(table, np.stack([cos, sin], axis=-1))

    def test_dense_refused(self, tiny, tmp_path):
        """A linear kept dense is refused before anything is written."""
        weights = load_checkpoint(tiny["llama"].checkpoint, group_size=GROUP_SIZE,
                                  keep_dense=lambda name: name.endswith("o_proj.weight"))
        with pytest.raises(UnsupportedShapeError, match="layers.0.o, layers.1.o kept dense"):
            export_model_web(tmp_path / "b", weights)
        assert not (tmp_path / "b").exists()

    def test_cli(self, tiny, tmp_path, capsys):
        """`q4gsw export-web OUT --model PATH` writes a model bundle."""
        out = tmp_path / "b"
        assert cli.main(["export-web", str(out), "--model", str(tiny["llama"].checkpoint), "--group-size", "32",
                         "--chunk-mib", "1"]) == 0
        m = json.loads((out / "manifest.json").read_text())
        assert m["kind"] == "model" and m["chunk_bytes"] == 1 << 20 and (out / "generate.html").exists()
        assert "generate.html" in capsys.readouterr().out

    def test_cli_refuses(self, tiny, tmp_path, capsys):
        """--model with layers, a zero chunk size or a path that is no checkpoint are refused in
        one line (exit 2), and no folder is written."""
        model = str(tiny["llama"].checkpoint)
        for argv, fragment in ((["--model", model, "--random", "8x8"], "argument --model"),
                               (["--model", model, "--chunk-mib", "0"], "argument --chunk-mib"),
                               (["--model", str(tmp_path / "nothing")], "no such file or directory")):
            assert cli.main(["export-web", str(tmp_path / "b"), *argv]) == 2
            assert fragment in capsys.readouterr().err
            assert not (tmp_path / "b").exists()


def generate_page_run(t: Tiny, **extra):
    """generate.html on t's bundle with the prompt, NEW_TOKENS and the query `extra`: (the page
    run, its report, which may hold an error); skips (or fails under Q4GSW_REQUIRE_BROWSER=1)
    without a browser or WebGPU device."""
    query = urlencode({"ids": ",".join(map(str, t.prompt)), "max_new_tokens": NEW_TOKENS, "report": "/result",
                       "progress": "/progress", **extra})
    try:
        page = run_page(t.bundle, f"generate.html?{query}")
    except BrowserUnavailable as exc:
        _no_browser(exc)
    report = json.loads(page.report)
    if report.get("error", {}).get("name") == "DeviceError":
        _no_browser(report["error"]["message"])
    return page, report


def generate_page(t: Tiny, **extra) -> dict:
    """generate_page_run's report, which must hold no error."""
    _, report = generate_page_run(t, **extra)
    assert "error" not in report, report["error"]
    return report


@pytest.fixture(scope="module")
def pages(tiny):
    """{kind: the generate page's report} for each tiny model."""
    return {kind: generate_page(t) for kind, t in tiny.items()}


class TestGeneratePage:
    @pytest.mark.parametrize("kind", list(CONFIGS))
    def test_greedy_matches_python(self, tiny, pages, kind):
        """The generate page's greedy ids are Python's model.generate ids (the steps' top two
        logits far enough apart that float32 summation order cannot swap them)."""
        t = tiny[kind]
        assert t.margin > 1e-3, f"a near tie in Python's logits ({t.margin:.1e}): pick another seed"
        assert len(t.greedy) >= NEW_TOKENS // 2
        assert pages[kind]["ids"] == t.greedy
        assert pages[kind]["prompt_ids"] == t.prompt

    def test_reports_tokens_per_second(self, pages):
        """The page reports prefill and decode tokens/s and the adapter it ran on."""
        for report in pages.values():
            assert report["prefill_tokens_per_s"] > 0 and report["decode_tokens_per_s"] > 0
            assert report["new_tokens"] == len(report["ids"])
            assert report["adapter"]["isFallbackAdapter"] in (True, False)

    def test_text(self, tiny, pages):
        """The page decodes the new ids to text with the bundle's tokenizer.json as Python does."""
        for kind, t in tiny.items():
            assert pages[kind]["text"] == t.model.decode(t.greedy)


def python_chain(model, rows: int) -> list[dict]:
    """[{key, grid, params}] of each dispatch of the greedy chain Python's CausalLM records over
    `rows` tokens (bind() and the params uploads watched while it records)."""
    import q4gsw.chain as chain_module
    import q4gsw.ops.plan as plan_module

    rt = model.runtime
    calls, words = [], {}
    bind, upload = chain_module.bind, rt.buffers.upload

    def watched_upload(array, usage, label, **kwargs):
        buf = upload(array, usage, label, **kwargs)
        if "params" in label:
            words[id(buf)] = np.asarray(array).view(np.uint32).ravel().tolist()
        return buf

    def watched_bind(runtime, key, buffers, workgroups, **kwargs):
        calls.append((str(key), list(fold_grid(workgroups, runtime.caps.max_workgroups_per_dimension)), id(buffers[-1])))
        return bind(runtime, key, buffers, workgroups, **kwargs)

    chain_module.bind = plan_module.bind = watched_bind
    rt.buffers.upload = watched_upload
    try:
        chain, _ = model._record(rows, all_logits=False, choose=Sampling())
    finally:
        chain_module.bind = plan_module.bind = bind
        del rt.buffers.upload
    described = [{"key": key, "grid": grid, "params": words.get(buf)} for key, grid, buf in calls]
    chain.release()
    return described


def _lanes(chain: list[dict]) -> list[dict]:
    """The chain with MIN_LANES (the device's smallest subgroup: 8 on lavapipe, 4 on SwiftShader) left out of keys."""
    return [{**d, "key": re.sub(r",MIN_LANES=\d+", "", d["key"])} for d in chain]


@pytest.fixture(scope="module")
def harness(tiny):
    """The model harness's report on the Llama bundle, with corrupt copies of it beside it."""
    t = tiny["llama"]
    served = t.bundle
    m = manifest_of(t)
    first = sorted(m["files"])[0]
    for name in ("bad-sha", "truncated", "bad-version"):
        shutil.rmtree(served / name, ignore_errors=True)
        (served / name / "data").mkdir(parents=True)
        shutil.copy(served / "manifest.json", served / name / "manifest.json")
        for f in m["files"]:
            shutil.copy(served / f, served / name / f)
    data = bytearray((served / first).read_bytes())
    data[len(data) // 2] ^= 0x55
    (served / "bad-sha" / first).write_bytes(bytes(data))
    (served / "truncated" / first).write_bytes(bytes(data[: len(data) // 2]))
    (served / "bad-version" / "manifest.json").write_text(json.dumps({**m, "version": 99}))
    cases = {"prompt_ids": t.prompt, "prompt_text": PROMPT, "max_new_tokens": NEW_TOKENS, "max_positions": MAX_POSITIONS,
             "vocab_size": CONFIGS["llama"].vocab_size, "corrupted_file": first, "small_binding": 1024,
             "sampling": {"temperature": SAMPLING["temperature"], "topK": SAMPLING["top_k"],
                          "topP": SAMPLING["top_p"], "seed": SAMPLING["seed"]}}
    (served / "model_cases.json").write_text(json.dumps(cases))
    shutil.copy(HARNESS, served / "model_harness.html")
    try:
        page = run_page(served, "model_harness.html")
    except BrowserUnavailable as exc:
        _no_browser(exc)
    report = json.loads(page.report)
    if (report["fatal"] or "").startswith("DeviceError"):
        _no_browser(report["fatal"])
    assert report["fatal"] is None, report["fatal"]
    return report, page


class TestModelHarness:
    def test_sampled_matches_python(self, tiny, harness):
        """Sampling (temperature, top-k, top-p, seed) draws Python's tokens."""
        t = tiny["llama"]
        assert harness[0]["sampled"] == t.model.generate(t.prompt, NEW_TOKENS, **SAMPLING)

    def test_tokenizer(self, tiny, harness):
        """The bundle's tokenizer.json encodes and decodes in Chromium as in Python."""
        t = tiny["llama"]
        assert harness[0]["encoded"] == t.prompt and harness[0]["decoded"] == t.model.decode(t.prompt)

    def test_logits_match_python(self, tiny, harness):
        """Every position's logits are Python's within float32 summation-order differences."""
        t = tiny["llama"]
        got = np.frombuffer(base64.b64decode(harness[0]["logits"]), np.float32).reshape(len(t.prompt), -1)
        want = t.model.logits(t.prompt)
        assert np.abs(got - want).max() <= LOGITS_RTOL * np.abs(want).max()

    def test_chains_match_python(self, tiny, harness):
        """The decode and prefill chains run Python's kernels, grids and params words, in
        Python's order (the decode step: attention in 2 splits and attention_combine)."""
        t = tiny["llama"]
        decode = harness[0]["decode"]
        assert decode == python_chain(t.model, 1)
        assert sum(d["key"].startswith("llm/attention_combine") for d in decode) == CONFIGS["llama"].num_layers
        assert _lanes(harness[0]["prefill"]) == _lanes(python_chain(t.model, len(t.prompt)))

    def test_int8_decode(self, tiny, harness):
        """decodeActivations "int8": the decode chain is Python's with decode_activations="int8"
        (decode_int8 for every linear but the LM head, same grids and params); the logits of a prompt of
        DECODE_INT8_ROWS tokens are Python's int8 ones within what a flipped rounding of the
        quantized x moves (the browser's 127 / amax may differ by an ulp) and within int8
        error of the f32 model's; the greedy ids are Python's."""
        from q4gsw.llm.model import DECODE_INT8_ROWS

        t = tiny["llama"]
        report = harness[0]
        int8 = q4gsw.load_model(t.checkpoint, group_size=GROUP_SIZE, max_positions=MAX_POSITIONS,
                                decode_activations="int8")
        try:
            decode = report["int8Decode"]
            assert decode == python_chain(int8, 1)
            linears = [d["key"] for d in decode if d["key"].startswith("linear_q4gsw/")]
            # every linear but the LM head (f32 activations always: exact logits of h)
            assert len(linears) > 1 and all(key.startswith("linear_q4gsw/decode_int8") for key in linears[:-1])
            assert not linears[-1].startswith("linear_q4gsw/decode_int8")
            prompt = t.prompt[:DECODE_INT8_ROWS]
            got = np.frombuffer(base64.b64decode(report["int8Logits"]), np.float32).reshape(len(prompt), -1)
            want = int8.logits(prompt)
            scale = np.abs(want).max()
            assert np.abs(got - want).max() <= 2e-3 * scale
            exact = t.model.logits(prompt)
            assert 0 < np.abs(got - exact).max() / np.abs(exact).max() < 5e-2
            assert report["int8Greedy"] == int8.generate(t.prompt, NEW_TOKENS, eos_token_ids=())
        finally:
            int8.release()

    def test_cache(self, tiny, harness):
        """The first load fetches every file, the second reads them from the Cache API and
        generates the same ids; no data file is requested twice."""
        report, page = harness
        assert report["firstLoadFromCache"] == [False] and report["secondLoadFromCache"] == [True]
        t = tiny["llama"]
        assert report["cachedGreedy"] == t.model.generate(t.prompt, NEW_TOKENS, eos_token_ids=())
        gets = [what for what, _ in page.events if re.match(r"GET /data/", what)]
        assert sorted(gets) == [f"GET /{f}" for f in sorted(manifest_of(t)["files"])]

    def test_corrupt_bundles(self, harness, tiny):
        """A changed byte or a truncated file is an IntegrityError naming the file (and never
        cached); another format version or kind is a BundleError."""
        errors = harness[0]["errors"]
        first = sorted(manifest_of(tiny["llama"])["files"])[0]
        assert (errors["bad_sha"]["name"], errors["bad_sha"]["file"]) == ("IntegrityError", first)
        assert "sha256" in errors["bad_sha"]["message"]
        assert (errors["truncated"]["name"], errors["truncated"]["file"]) == ("IntegrityError", first)
        assert "truncated" in errors["truncated"]["message"]
        assert errors["bad_version"]["name"] == "BundleError" and "version 99" in errors["bad_version"]["message"]
        assert errors["layers_kind"]["name"] == "BundleError"
        assert all(errors[k]["isQ4gswError"] for k in ("bad_sha", "truncated", "bad_version"))
        assert harness[0]["badFileCached"] is False

    def test_argument_errors(self, harness):
        """Bad arguments throw q4gsw errors naming the argument; a device whose binding limit is
        below the bundle's chunks is refused with SizeLimitError before anything is fetched."""
        errors = harness[0]["errors"]
        expected = {"max_positions": ("ArgumentError", "maxPositions"), "id_range": ("ArgumentError", "inputIds"),
                    "too_long": ("ShapeError", "inputIds"), "max_new_tokens": ("ArgumentError", "maxNewTokens"),
                    "top_k_greedy": ("ArgumentError", "temperature"), "binding": ("SizeLimitError", "bundle"),
                    "decode_activations": ("ArgumentError", "decodeActivations")}
        for name, (cls, argument) in expected.items():
            assert (errors[name]["name"], errors[name]["argument"]) == (cls, argument), (name, errors[name])

    def test_device_lost(self, harness):
        """generate() on a lost device throws DeviceLostError, and the callback saw it."""
        report = harness[0]
        assert report["errors"]["lost"]["name"] == "DeviceLostError", report["errors"]["lost"]
        assert report["lostCallback"] == "DeviceLostError"


def test_every_python_kernel_in_bundle(tiny):
    """The bundle ships every .wgsl file the Python runtime has (so every kernel it runs)."""
    m = manifest_of(tiny["llama"])
    stems = {p.name.removesuffix(".wgsl") for p in files("q4gsw.kernels").iterdir() if p.name.endswith(".wgsl")}
    assert set(m["kernels"]) == stems


class TestKvCacheF16:
    def test_generate_page(self, tiny):
        """generate.html?kv_cache=f16: where the browser's adapter offers shader-f16, the greedy
        ids are Python's with kv_cache="f16"; where it does not (Chromium 156's SwiftShader), the
        page reports a FeatureError naming kvCache and shader-f16, raised before any data file
        of the bundle was requested."""
        t = tiny["llama"]
        page, report = generate_page_run(t, kv_cache="f16")
        if "shader-f16" in report["features"]:
            assert "error" not in report, report["error"]
            model = q4gsw.load_model(t.checkpoint, group_size=GROUP_SIZE, max_positions=MAX_POSITIONS, kv_cache="f16")
            assert report["kv_cache"] == "f16" and report["ids"] == model.generate(t.prompt, NEW_TOKENS)
            model.release()
        else:
            error = report["error"]
            assert (error["name"], error["argument"], error["feature"]) == ("FeatureError", "kvCache", "shader-f16")
            assert "shader-f16" in error["message"] and "got \"f16\"" in error["message"]
            assert not [what for what, _ in page.events if what.startswith("GET /data/")]
