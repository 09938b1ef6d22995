# The single entry point. The README's two commands:
#   make repro   install what is missing, then run the default pipeline (`dvc repro`)
#   make test    install what is missing, then run the tests (this is what .ci/run calls)
# and for developers: make test-fast (no slow, no browser tests), make lint (ruff, nbstripout),
# make lock (refresh requirements.lock from pyproject.toml).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
# Stages run notebooks through papermill's `python3` kernel, which must be this venv's python.
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
# The venv is installed without compiling every module (--no-compile below: a minute less on 2 cores);
# Python then writes the bytecode of what is imported on first use. A shell with PYTHONDONTWRITEBYTECODE
# set would compile torch & co. from source in every stage's processes, so the recipes run without it.
unexport PYTHONDONTWRITEBYTECODE
DVC := $(BIN)/dvc
STAMP := $(VENV)/.installed

# Every transitive package at the exact version CI tested (pip-compile's output, see `lock` below).
LOCK := requirements.lock

.PHONY: install placeholder repro test test-fast test-all lint lock bench ceiling probe-representations browser clean-venv

install: $(STAMP)

# pip, not uv/poetry: pip takes torch from the machine's local wheel cache instead of downloading GBs.
# The lock was resolved on Linux x86_64 (CUDA torch wheels from PyPI, its nvidia-* packages), so there it
# is installed as it is, without a resolution step (--no-deps); elsewhere pip resolves pyproject.toml
# with the lock's versions as constraints. open_flamingo 2.0.1 pins torch 2.0.1, so it goes in last
# with --no-deps (a requirements file cannot say that); its real needs are pinned in pyproject.toml.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-deps "$$(grep -m1 '^pip==' $(LOCK))"
ifeq ($(shell uname -sm),Linux x86_64)
	$(BIN)/python -m pip install --quiet --no-compile --no-deps -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
else
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[test]'
endif
	$(BIN)/python -m pip install --quiet --no-compile --no-deps open_flamingo==2.0.1
	touch $@

# Refresh the lock after changing pyproject.toml: pins kept where still allowed, new packages resolved
# on PyPI alone (--isolated: no local index or mirror of this machine can leak into it). To move
# versions: make lock LOCK_FLAGS=--upgrade, or LOCK_FLAGS='--upgrade-package numpy'.
LOCK_FLAGS ?=
lock: install
	$(BIN)/pip-compile --quiet --extra test --strip-extras --allow-unsafe --all-build-deps \
	  --no-emit-index-url --no-emit-find-links --index-url https://pypi.org/simple --pip-args=--isolated \
	  $(LOCK_FLAGS) --output-file $(LOCK) pyproject.toml

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
	  else echo "chromium not installed and not root: the browser test will be skipped (it fails when CI is set)"; fi; }

test: install browser
	$(BIN)/python -m pytest -q

# What a developer runs between edits (under 3 minutes on 2 cores): no subprocess, torchrun, papermill
# or browser test (those are marked slow / browser; `make test` runs them all).
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow and not browser"

# `make test` plus every backbone and ablation target as end-to-end DVC experiments (about 25 minutes)
test-all: install browser
	GAZEVLM_E2E_ALL=1 $(BIN)/python -m pytest -q

# ruff's findings and formatting, notebooks without outputs (not yet part of .ci/run).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/nbstripout --keep-id --verify notebooks/*.ipynb

bench: install
	$(BIN)/python -m bench

# The world ceiling on the default run's shards (after `make repro`; about 40 minutes on 2 cores): a small
# classifier on the frozen pretrained encoder and on pixels, lambda 0 / the VLM runs' 100 / 10 (the
# ceiling's KL is summed over patches), 3 seeds, validation split -> reports/ceiling.{json,md}; then the
# same classifier with a free way to the frames around the gaze block -> reports/ceiling_paths.{json,md}; and
# without its trainable layer over the patches before the block (as the VLMs' paper block reads the encoder)
# -> reports/ceiling_patch_layer.{json,md}
ceiling: install
	$(BIN)/python -m gazevlm.ceiling --tasks future activity --encoders pretrained scratch --steps 500 \
	  --seeds 0 1 2 --lambdas 0 1.5625 10 --out reports/ceiling
	$(BIN)/python -m gazevlm.ceiling --tasks future --encoders pretrained --reads block block+patches \
	  --steps 500 --seeds 0 1 2 --lambdas 0 1.5625 --out reports/ceiling_paths
	$(BIN)/python -m gazevlm.ceiling --tasks future --encoders pretrained --reads block-no-patch-layer \
	  --steps 500 --seeds 0 1 2 --lambdas 0 1.5625 --out reports/ceiling_patch_layer

# What the default run's trained models carry (after `make repro`; about 3 minutes): linear probes for the
# first object on the gaze block's token and on what the LM's cross-attention reads, base vs gaze, validation
# split -> reports/representation_probe.{json,md}
probe-representations: install
	$(BIN)/python -m gazevlm.representation_probe --task future --runs base gaze --seeds 0 1 2 \
	  --out reports/representation_probe

clean-venv:
	rm -rf $(VENV)

-include ablations.mk
