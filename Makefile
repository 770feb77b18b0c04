# Two commands for a fresh machine:
#   make study   set up .venv, run the whole study (dvc repro), print the report's path
#   make test    set up .venv if missing, run the test suite
PYTHON ?= python3
VENV := .venv
# Stages call papermill, python and jupyter: they must resolve to the venv's.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup study test lint gpu-setup

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

study: setup
	dvc repro
	@echo "Report: $(CURDIR)/reports/index.html"

test: setup
	pytest

lint: setup
	ruff check . && ruff format --check deepfm_lib tests benchmarks

# Optional, for a machine with an NVIDIA GPU and driver: the CUDA 11 runtime wheels (~2 GB).
gpu-setup: setup
	$(VENV)/bin/python -m pip install --quiet -e '.[gpu]'
	$(VENV)/bin/python -m deepfm_lib.device check
