# The README's two commands: `make demo` and `make test`. Each does all set-up first (a .venv with the package).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test demo docs bench clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "refinenet_tf needs Python 3.10 or newer; run with PYTHON=/path/to/python3.10+")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest

demo: install
	$(BIN)/refinenet-tf demo --output checkpoints/demo

# The documentation site from docs/ and the docstrings, into site/ (a broken link or stale reference fails).
docs: install
	$(BIN)/mkdocs build --strict

# The benchmark table of this machine, each figure a ratio to the fp32 matmul rate of the same run: the two models
# with speed targets, the official LW-50 structure beside its PyTorch code (--peer), the multi-task row, the soak;
# see docs/benchmarks.md (`--models all --precision float32 mixed` for every preset in both precisions).
bench: install
	$(BIN)/refinenet-tf benchmark --models slim_resnet101 lw_resnet50 lw_resnet50_official --peer \
		--json benchmarks/last_run.json

clean:
	rm -rf $(VENV) build site *.egg-info .pytest_cache
