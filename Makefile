# The two commands of the README: `make demo` and `make test`. Both create .venv on first use
# and install the project into it; nothing has to be installed by hand.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip

.PHONY: demo test lint format install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Editable installs: the folders of this checkout are the package (see setup.py).
$(VENV)/.installed-demo: setup.py pyproject.toml | $(BIN)/python
	$(PIP) install -e ".[demo]"
	touch $@

$(VENV)/.installed-dev: setup.py pyproject.toml | $(BIN)/python
	$(PIP) install -e ".[dev]"
	touch $@ $(VENV)/.installed-demo

install: $(VENV)/.installed-demo

demo: $(VENV)/.installed-demo
	$(BIN)/resvision demo

test: $(VENV)/.installed-dev
	$(BIN)/pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) build *.egg-info runs
