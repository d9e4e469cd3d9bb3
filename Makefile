# dsc — the two commands a new user runs on a fresh machine:
#   make demo   set up, then compile and run an example model, compared with onnxruntime
#   make test   set up, then run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-zoo bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,torch]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	mkdir -p out
	$(BIN)/dsc zoo resnet18 -o out/resnet18.onnx
	$(BIN)/dsc check out/resnet18.onnx
	$(BIN)/dsc compile out/resnet18.onnx --emit graph -o out/resnet18.mlir
	head -n 12 out/resnet18.mlir
	$(BIN)/dsc compile out/resnet18.onnx -o out/resnet18.dsc --timing
	$(BIN)/dsc inspect out/resnet18.dsc
	$(BIN)/dsc run out/resnet18.dsc
	$(BIN)/dsc run out/resnet18.onnx --compare onnxruntime

test: $(STAMP)
	$(BIN)/python -m pytest tests -p no:warnings

bench: $(STAMP)
	$(BIN)/python -m dsc.tools.bench --batch 1,8

clean:
	rm -rf $(VENV) out .pytest_cache

test-zoo: $(STAMP)
	DSC_FULL_ZOO=1 $(BIN)/python -m pytest tests/test_zoo_models.py -p no:warnings
