# On a fresh machine `make demo` and `make test` are the whole set-up: each creates .venv if it
# is missing, installs bmr-jax into it, then runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Transparent huge pages for malloc: measured here, ViT-small and Mixer-small training steps
# ran 1.6-1.7x faster with it (scripts/bench_train_step.py --hugetlb-ab); harmless where unsupported.
export GLIBC_TUNABLES ?= glibc.malloc.hugetlb=1

.PHONY: demo test test-slow lint docs clean

# The packages go in with uv (installed into the venv by pip): from empty caches it put the
# ~110 packages of '.[dev]' in place in 30 s where pip took 171 s (measured here side by side,
# with background load). uv does not read pip's configuration files: behind a private index,
# `make INSTALLER=pip test` installs with pip alone.
INSTALLER ?= uv
ifeq ($(INSTALLER),uv)
BOOTSTRAP := $(BIN)/python -m pip install --quiet uv
INSTALL := $(BIN)/uv pip install --quiet --python $(BIN)/python
else
BOOTSTRAP := $(BIN)/python -m pip install --quiet --upgrade pip
INSTALL := $(BIN)/python -m pip install --quiet
endif

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "bmr-jax needs Python >= 3.11 (set PYTHON=...)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BOOTSTRAP)
	$(INSTALL) -e '.[dev]'
	touch $(STAMP)

# the BMR quickstart: BMR-S&S on the embedded mnist_mini, a LeNet-5, 4 blocks (configs/quickstart.yaml)
demo: $(STAMP)
	rm -rf runs/quickstart
	$(BIN)/bmr-jax run configs/quickstart.yaml --out runs/quickstart

# Three pytest workers (pytest-xdist) on the two cores, each test file on one of them so that
# module fixtures are built once: compilation runs on one core and many tests wait on a child
# process (the CLI, Ray, submitit, the multi-process runs), so a third worker fills the gaps.
# The 20 slowest are listed at the end.
TEST_WORKERS ?= 3
test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=20

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

lint: $(STAMP)
	$(BIN)/ruff check bmr_jax tests scripts

# the documentation site (site/): pages in docs/, API reference generated from the docstrings
docs: $(STAMP)
	$(INSTALL) -e '.[docs]'
	$(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) .pytest_cache .jax_cache build dist *.egg-info site
