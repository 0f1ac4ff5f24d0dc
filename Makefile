# Two entry points, each creating its own virtual environment idempotently:
#   make demo   device install (no torch) and the access-control demo on bundled clips
#   make test   full install (train + export extras, CPU torch) and the test suite
PYTHON ?= python3
DEV_VENV := .venv
DEVICE_VENV := .venv-device
# The CPU build of torch this machine carries; a plain `torch` would pull CUDA wheels.
TORCH_PIN := torch==2.13.0
# Installed without their dependencies: their metadata pulls torch (silero-vad) or an
# unpinned torch plus the `typing` backport (resemblyzer). Their real needs are in pyproject.
NODEPS := silero-vad==6.2.3
NODEPS_TRAIN := resemblyzer==0.1.4

.PHONY: demo test lint clean

$(DEVICE_VENV)/.stamp: pyproject.toml Makefile
	$(PYTHON) -m venv $(DEVICE_VENV)
	$(DEVICE_VENV)/bin/python -m pip install -q --upgrade pip
	$(DEVICE_VENV)/bin/python -m pip install -q -e .
	$(DEVICE_VENV)/bin/python -m pip install -q --no-deps $(NODEPS)
	touch $@

$(DEV_VENV)/.stamp: pyproject.toml Makefile
	$(PYTHON) -m venv $(DEV_VENV)
	$(DEV_VENV)/bin/python -m pip install -q --upgrade pip
	$(DEV_VENV)/bin/python -m pip install -q $(TORCH_PIN)
	$(DEV_VENV)/bin/python -m pip install -q -e '.[train,export,dev]' $(TORCH_PIN)
	$(DEV_VENV)/bin/python -m pip install -q --no-deps $(NODEPS) $(NODEPS_TRAIN)
	touch $@

demo: $(DEVICE_VENV)/.stamp
	$(DEVICE_VENV)/bin/edgepin demo $(if $(wildcard ../shared/data/lfw),--door ../shared/data)

test: $(DEV_VENV)/.stamp
	$(DEV_VENV)/bin/ruff check .
	$(DEV_VENV)/bin/python -m pytest -q

clean:
	rm -rf $(DEV_VENV) $(DEVICE_VENV)
