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

# The engines side by side on this machine (keras, saved_model, tflite, onnxruntime, openvino; float32 and
# bfloat16), each figure a ratio to the same run's matmul rate of its precision, for slim RefineNet-101, LW-50 and
# the multi-task model, with each engine's labels against the keras float32 engine's; the agreement on a trained
# model and the real sample images when they are there (`make demo` first). See docs/benchmarks.md.
AGREEMENT_MODEL ?= checkpoints/demo/run
AGREEMENT_IMAGES ?= $(wildcard ../shared/data/voc_sample/VOCdevkit/VOC2012/JPEGImages/*.jpg)
bench: install
	$(BIN)/refinenet-tf benchmark --models slim_resnet101 lw_resnet50 \
		$(if $(wildcard $(AGREEMENT_MODEL)),--agreement-model $(AGREEMENT_MODEL)) \
		$(if $(and $(wildcard $(AGREEMENT_MODEL)),$(AGREEMENT_IMAGES)),--agreement-images $(AGREEMENT_IMAGES)) \
		--json benchmarks/last_run.json

clean:
	rm -rf $(VENV) build site *.egg-info .pytest_cache
