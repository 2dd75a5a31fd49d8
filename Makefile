# Two entry points on a fresh machine (README): `make demo` and `make test`.
# Both create or refresh the virtual environment in .venv when pyproject.toml changes.
SHELL  := /bin/bash
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo demo-edges test lint typecheck venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/sparcs run --config config/demo.yaml

# The same demo with six sites behind two edges over a local Mosquitto (docs/edges.md "Demo").
demo-edges: $(STAMP)
	$(BIN)/python -m sparcs.edge_demo --data-dir data/demo-edges

lint: $(STAMP) typecheck
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy reads the package as it installs: build/typecheck/sparcs holds links to app/'s modules and
# to the top-level folders (see [tool.mypy] in pyproject.toml); paths are reported as in the repo.
TYPECHECK := build/typecheck/sparcs
typecheck: $(STAMP)
	rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)
	ln -s $(CURDIR)/app/*.py $(TYPECHECK)/
	for p in config controller drivers edge optimizer simulators twin; do ln -s $(CURDIR)/$$p $(TYPECHECK)/$$p; done
	$(BIN)/mypy 2>&1 | sed -e 's#^$(TYPECHECK)/\(config\|controller\|drivers\|edge\|optimizer\|simulators\|twin\)/#\1/#' \
		-e 's#^$(TYPECHECK)/#app/#'; exit $${PIPESTATUS[0]}

test: lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache build
