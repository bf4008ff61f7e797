# The map of the project: data -> runs -> figures -> HTML (see README.md).
#   make setup   .venv with requirements.txt and a Jupyter kernel named "aevb"
#   make data    data files into $(VAE_DATA_DIR), checksums verified
#   make test    the tests
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
KERNEL := aevb
export VAE_DATA_DIR ?= $(CURDIR)/data

.PHONY: setup data test

setup: $(VENV)/.installed
$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (aevb)"
	touch $@

data: setup
	$(PY) scripts/fetch_data.py

test: setup data
	$(PY) -m pytest -q tests
