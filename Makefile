# The README's two commands: `make demo` and `make test`. Both build .venv from the repo's own files.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO   ?= runs/demo
TEST_WORKERS ?= 2   # pytest-xdist processes; tests/conftest.py says how the files are shared

.PHONY: demo test data venv

venv: $(STAMP)

# The package itself last, editable (--no-build-isolation: built by requirements.txt's setuptools,
# nothing downloaded): the console scripts (cce-train, ...) and python -m cce_tf.train then work from
# any folder, running this checkout's code.
$(STAMP): requirements.txt requirements-autoattack.txt requirements-cluster.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q -r requirements-autoattack.txt
	$(PY) -m pip install -q -r requirements-cluster.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Fashion-MNIST, the embedded default, comes from Debian's dataset-fashion-mnist.
data:
	@if [ ! -f $(FMNIST)/t10k-labels-idx1-ubyte.gz ]; then \
	  if command -v apt-get >/dev/null; then \
	    $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist; \
	  else echo "install Fashion-MNIST's IDX files under $(FMNIST) (Debian: dataset-fashion-mnist)"; exit 2; fi; \
	fi

test: $(STAMP) data
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=20 tests

# A small CCE-RM ensemble on Fashion-MNIST (5000 training images, 3 epochs, without the random
# shifts that slow Fashion-MNIST's training: docs/studies.md), a fast subset of the attack suite on
# 500 test images, entropy detection and its figures. Re-running reuses what is done.
# The demo's training logs one line per epoch (--verbose 2), which would also show TensorFlow's C++
# log (cce_tf.cli_flags.quiet_tf_log); a CPU-only machine's "failed call to cuInit" reads as a failure.
demo: export TF_CPP_MIN_LOG_LEVEL ?= 3
demo: $(STAMP) data
	$(PY) -m cce_tf.train --train_subset 5000 --epochs 3 --noaugment --verbose 2 --out_dir $(DEMO)
	$(PY) -m eval.attack_suite --run_dir $(DEMO) --attacks fgsm,pgd,bim,mim,mul_pgd --n_samples 500 --nb_iter 20
	$(PY) -m eval.analyses.detection --run_dir $(DEMO) --n_samples 500
	$(PY) -m figures.entropy_histogram --run_dir $(DEMO) --n_samples 500
	$(PY) -m figures.roc_attacks --run_dir $(DEMO) --n_samples 500
	$(PY) -m figures.roc_eps --run_dir $(DEMO) --n_samples 500
