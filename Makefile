# The two commands of the README: `make demo` and `make test`. Each builds .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.tritonmix-installed
EXT_STAMP := $(VENV)/.tritonmix-ext
PYTEST_ARGS ?=

.PHONY: demo test bench install ext clean help

help:
	@echo "make demo   - start a local Triton fleet, run a workload through tritonmix, print a report"
	@echo "make test   - run the test suite"
	@echo "make bench  - run the pytest-benchmark suites in benches/"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel

# Reinstall when the dependency list or the pins change.
$(STAMP): $(PY) setup.py pyproject.toml constraints.txt
	$(PIP) install -q -c constraints.txt "Cython>=3,<4" "setuptools>=68" wheel
	$(PIP) install -q -c constraints.txt --no-build-isolation -e ".[export,dev,bench]"
	touch $@

# Rebuild the compiled dispatch core when its sources change; fail loudly if it does not build.
$(EXT_STAMP): $(STAMP) $(wildcard dispatch_core/*.pyx dispatch_core/*.pxd)
	TRITONMIX_REQUIRE_EXTENSIONS=1 $(PY) setup.py -q build_ext --inplace
	touch $@

install: $(EXT_STAMP)

ext: $(EXT_STAMP)

demo: install
	$(PY) -m tritonmix.demo

test: install
	@# tests/reliability/test_tls.py puts a TLS-terminating nginx in front of a local Triton (HTTP over TLS)
	@command -v nginx >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1 || \
		(DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light openssl >/dev/null || (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light openssl >/dev/null)) || \
		echo 'warning: could not install nginx-light; the HTTP-over-TLS tests will be skipped'
	@# tests/test_k8s_prometheus.py runs each rendered KEDA query in a real Prometheus (Debian's, 2.42, with promtool)
	@command -v prometheus >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1 || \
		(DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null || (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null)) || \
		echo 'warning: could not install prometheus; the KEDA query test will be skipped'
	TRITONMIX_EXPECT_COMPILED=1 $(PY) -m pytest -q tests $(PYTEST_ARGS)

bench: install
	$(PY) -m pytest benches --benchmark-only --benchmark-autosave --benchmark-storage=bench-results $(PYTEST_ARGS)

clean:
	rm -rf build *.egg-info dispatch_core/*.so dispatch_core/*.c $(EXT_STAMP)
