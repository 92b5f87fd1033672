# Two commands do all the set-up on a fresh machine: `make serve` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install install-dev serve test lint bench train-default-head eval clean

install:  ## venv, pinned requirements, converted weights (idempotent, fast when done)
	VENV=$(VENV) scripts/install.sh

install-dev:
	VENV=$(VENV) scripts/install.sh --dev

serve: install  ## install everything, then run gunicorn on HOST:PORT (default 127.0.0.1:8000)
	exec $(VENV)/bin/gunicorn -c gunicorn.conf.py wsgi:app

test: install-dev  ## install what the tests need, then run them
	$(PY) -m pytest

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/hadolint --no-color --failure-threshold warning Dockerfile

bench: install-dev  ## raw model vs real server vs naive Flask, both runtimes, same run; figures in bench/results/*.json
	$(PY) -m bench.run --image-encoder all --runtime all --rounds 3

train-default-head: install  ## train the default fusion head again (fixed seed) into MODEL_DIR/fusion_head
	$(PY) -m models.default_head --force

eval: install-dev  ## image-text matching on the real photos of evaluation/photos.json
	$(PY) -m evaluation.run

clean:
	rm -rf model_store runs .pytest_cache
