# The set-up and check commands of the README. `make install` creates .venv when missing and installs
# gliofit with all its extras in one pip call, under the versions pinned in constraints.txt.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: dicom3tools demo test test-fast lint typecheck format-check bench install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[all,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/gliofit demo

lint: $(STAMP)
	$(BIN)/ruff check .

format-check: $(STAMP)
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The DICOM validator the DICOM tests use when present (Debian dicom3tools); never fails the build.
dicom3tools:
	@command -v dciodvfy >/dev/null || apt-get install -y -qq dicom3tools >/dev/null 2>&1 || echo "dicom3tools not installed: the dciodvfy test will skip"

# The tests, and the examples in the package's docstrings (doctests). --dist loadscope keeps a module's tests
# on one worker, so a module-scoped fixture (one `gliofit run`, one cohort) is built once.
test: lint format-check typecheck dicom3tools
	$(BIN)/python -m pytest -n auto --dist loadscope --doctest-modules tests gliofit

test-fast: lint format-check typecheck dicom3tools
	$(BIN)/python -m pytest -n auto --dist loadscope -m "not slow" --doctest-modules tests gliofit

bench: $(STAMP)
	@for b in benchmarks/[a-z]*.py; do echo "== $$b"; $(BIN)/python $$b --quick || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
