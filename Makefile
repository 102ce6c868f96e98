# make demo: set up .venv and run the demo job; make test: set up .venv and run the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lut-tvm demo

test: $(STAMP)
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) demo_out

# The emulated ARM64 phone: a real aarch64 TVM RPC server under qemu on 127.0.0.1:9090
# (provisioned on first use into ~/.cache/lut_tvm/arm64). QEMU_CPU=max enables every extension.
.PHONY: arm64-device arm64-tracker arm64-device-stop
arm64-device: $(STAMP)
	$(VENV)/bin/lut-tvm device start --emulated --port $(or $(ARM64_PORT),9090) --qemu-cpu $(or $(QEMU_CPU),cortex-a72)

# The same device registered with its own RPC tracker (key arm64-emulated), for remote tuning.
arm64-tracker: $(STAMP)
	$(VENV)/bin/lut-tvm device start --emulated --tracker --port $(or $(ARM64_PORT),9090) --qemu-cpu $(or $(QEMU_CPU),cortex-a72)

arm64-device-stop: $(STAMP)
	$(VENV)/bin/lut-tvm device stop
