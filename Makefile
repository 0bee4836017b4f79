# The two set-up commands of the README. Each creates .venv when missing and
# installs gliofit with its extras in one pip call (one resolver run, so the
# large wheels that lie on this machine's disk are used and nothing large is fetched).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# nnunetv2 -> dynamic-network-architectures -> timm needs torchvision; these two
# releases lie on this machine's disk and match each other (one resolver call).
TORCH  ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast bench install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH) -e ".[all,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/gliofit demo

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 -m "not slow" tests

bench: $(STAMP)
	@for b in benchmarks/[a-z]*.py; do echo "== $$b"; $(BIN)/python $$b --quick || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
