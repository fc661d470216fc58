# Two commands on a fresh machine with Python 3.11: `make demo` and `make test`.
# Each creates .venv on first use. torch is pinned to the CPU build first, so that the
# range in pyproject.toml installs nothing larger.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test docs install clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,cluster]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/hwlat demo

test: $(VENV)/.installed
	$(PY) -m pytest -q

# The documentation site (site/index.html), built strictly: a broken link or reference fails it.
docs: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[docs]'
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) build site *.egg-info
