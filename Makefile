# gradprobe: `make demo` and `make test` work on a fresh clone (they create .venv if missing).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch 2.13.0 (CPU) is pinned for development and CI; pyproject.toml states the range for users.
CONSTRAINTS := constraints.txt
export OMP_NUM_THREADS ?= 1

.PHONY: demo test bench install install-dev chromium lint clean

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed: $(PY) pyproject.toml $(CONSTRAINTS)
	$(PIP) install --quiet -c $(CONSTRAINTS) -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml $(CONSTRAINTS)
	$(PIP) install --quiet -c $(CONSTRAINTS) -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# Debian's chromium drives the HTML report tests (Playwright uses it, never downloads a browser).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing: run 'sudo apt-get install -y chromium'"; fi; }

demo: install
	$(VENV)/bin/gradprobe run circles-deep

test: install-dev chromium lint
	MPLBACKEND=agg $(PY) -m pytest

bench: install-dev
	$(PY) benchmarks/run.py

lint: install-dev
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy src/gradprobe

clean:
	rm -rf $(VENV) gradprobe-runs
