# The two set-up commands: `make demo` and `make test`. Each creates .venv if it is missing,
# installs the package with its compiled kernels (again whenever a source of the build
# changes), then runs.
PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
BUILD_SOURCES := setup.py pyproject.toml protos/detector.proto $(wildcard ext/*.pyx ext/*.pxd ext/*.h)

.PHONY: demo test install clean

demo: $(VENV)/.installed
	$(VENV)/bin/detector demo
	@echo "The detector command is in $(VENV)/bin: 'source $(VENV)/bin/activate' puts it on your PATH."

test: $(VENV)/.installed $(VENV)/.reference $(VENV)/.onnxruntime $(VENV)/.browser
	$(PY) -m pytest

install: $(VENV)/.installed

$(PY):
	$(PYTHON) -m venv $(VENV)

# The build requirements of pyproject.toml go into the venv so that rebuilds skip build
# isolation: faster, and Cython's generated C in build/ is reused when a .pyx is unchanged.
$(VENV)/.installed: $(PY) $(BUILD_SOURCES)
	$(PIP) install -q --upgrade pip "setuptools>=69" wheel "cython>=3.0.10" "scipy-openblas32>=0.3.27" "grpcio-tools>=1.60"
	$(PIP) install -q --no-build-isolation -e ".[test]"
	touch $@

# PyTorch is an optional reference for the tests. It is installed only when a CPU build
# lies on this machine (pip's find-links); elsewhere those tests are skipped, rather than
# pulling gigabytes of CUDA packages.
$(VENV)/.reference: $(PY)
	@if $(PIP) install -q --no-index --no-deps "torch==2.13.0" 2>/dev/null; then \
		$(PIP) install -q "torch==2.13.0"; \
	else \
		echo "No local CPU build of torch 2.13.0: the PyTorch reference tests will be skipped."; \
	fi
	touch $@

# ONNX Runtime (with onnx, to build its graph) is the other reference of the tests and of
# `detector bench fcn`; its wheels are CPU-only. The test extra brings it where wheels are
# published; this rule also covers a venv made before, and where pip cannot get it those
# tests are skipped rather than failing.
$(VENV)/.onnxruntime: $(VENV)/.installed
	@if ! $(PY) -c "import onnx, onnxruntime" 2>/dev/null; then \
		$(PIP) install -q "onnx>=1.15" "onnxruntime>=1.17" 2>/dev/null \
		|| echo "pip could not install onnx and onnxruntime: the ONNX Runtime reference tests will be skipped."; \
	fi
	touch $@

# Chromium and chromedriver, from Debian's packages, for the test of the page in a real browser
# (tests/test_page.py). Installed where apt-get runs as root; elsewhere that test is skipped
# with its reason.
$(VENV)/.browser: $(PY)
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then touch $@; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "Installing chromium and chromedriver for the browser test (apt-get)"; \
		if apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			chromium chromium-driver >/dev/null; then touch $@; \
		else echo "apt-get could not install chromium: the browser test will be skipped (tried again next time)."; fi; \
	else \
		echo "No chromium and chromedriver, and no apt-get as root: the browser test will be skipped."; touch $@; \
	fi

clean:
	rm -rf $(VENV) build *.egg-info detector/_ext/*.so
