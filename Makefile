# The single entry point. The README's two commands:
#   make repro   install what is missing, then run the default pipeline (`dvc repro`)
#   make test    install what is missing, then run the tests (this is what .ci/run calls)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
# Stages run notebooks through papermill's `python3` kernel, which must be this venv's python.
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
DVC := $(BIN)/dvc
STAMP := $(VENV)/.installed

.PHONY: install placeholder repro test test-fast bench browser clean-venv

install: $(STAMP)

# pip, not uv/poetry: pip takes torch from the machine's local wheel cache instead of downloading GBs.
# open_flamingo 2.0.1 pins torch 2.0.1, so it goes in on its own with --no-deps (a requirements file
# cannot say that); its real needs are pinned in pyproject.toml.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-deps open_flamingo==2.0.1
	touch $@

# data.dvc tracks data/ego4d: on a fresh clone an empty placeholder, whose (empty) manifest is put in
# the DVC cache so that `dvc status` is clean. A real download there is never re-registered here.
placeholder: install
	mkdir -p data/ego4d
	@[ -n "$$(ls -A data/ego4d)" ] || $(DVC) commit -q -f data.dvc

repro: install placeholder
	$(DVC) repro

# The explorer's browser test drives Debian's chromium (no browser download); install it when we can.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium not installed and not root: the browser test will be skipped"; fi; }

test: install browser
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow and not browser"

bench: install
	$(BIN)/python -m bench

clean-venv:
	rm -rf $(VENV)

-include ablations.mk
