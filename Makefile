# Two commands do all the set-up on a fresh machine with Python 3.11:
#   make demo   # separate a reverberant speech mixture, write wavs, print SI-SDR improvement
#   make test   # lint + the fast test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-all lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	$(PY) -m pip install -q -c constraints.txt --no-deps splifft==0.0.9
	$(PY) -m pip install -q -c constraints.txt --no-deps museval==0.4.1
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m torchbss.cli.main demo --out out/demo

test: $(STAMP)
	$(PY) -m ruff check torchbss tests bench train scripts
	$(PY) -m pytest -q -m "not slow"

test-all: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check torchbss tests bench train scripts
	$(PY) -m ruff format --check torchbss tests bench train scripts

bench: $(STAMP)
	$(PY) -m bench.run_all

clean:
	rm -rf $(VENV) out bench/results .pytest_cache
