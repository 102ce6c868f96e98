# make demo: set up .venv and run the demo job; make test: set up .venv and run the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@echo "make: $$(date -u +%T) setting up $(VENV)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lut-tvm demo

# Where the emulated ARM64 device can be provisioned (root with apt-get), provision it first as CI
# does (about 3 min the first time, cached in ~/.cache/lut_tvm/arm64) and require it, so the deploy
# tests run; elsewhere they are skipped and pytest's last lines say how to enable them. Provisioning
# is bounded (LUT_TVM_PROVISION_TIMEOUT seconds, default 1200): a slow mirror skips the device tests
# instead of eating the run. Each stage prints the time, and pytest lists its slowest tests.
PROVISION_TIMEOUT ?= $(or $(LUT_TVM_PROVISION_TIMEOUT),1200)
test: $(STAMP)
	@require="$${LUT_TVM_REQUIRE_ARM64_DEVICE:-}"; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "make test: $$(date -u +%T) provisioning the emulated ARM64 device for the deploy tests, as CI does" \
			"(lut-tvm device provision; about 3 min the first time, then cached; at most $(PROVISION_TIMEOUT) s)"; \
		if timeout $(PROVISION_TIMEOUT) $(VENV)/bin/lut-tvm device provision; then require=1; \
		else echo "make test: $$(date -u +%T) the emulated ARM64 device could not be provisioned" \
			"(the reason is above; the limit is $(PROVISION_TIMEOUT) s): its tests will be skipped"; fi; \
	fi; \
	echo "make test: $$(date -u +%T) $(PY) -m pytest -q --durations=15 tests"; \
	LUT_TVM_REQUIRE_ARM64_DEVICE="$$require" $(PY) -m pytest -q --durations=15 tests; \
	status=$$?; echo "make test: $$(date -u +%T) pytest exited $$status"; exit $$status

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
