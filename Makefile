# `make demo` and `make test` each create .venv when missing and install seradv with its
# test extras (torch pinned to the CPU build 2.13.0 by constraints.txt), then run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.seradv-installed

.PHONY: demo test install clean browser

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[test]"
	# the reference APGD for tests/attacks/test_apgd.py; --no-deps: it asks for torchvision, unused
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps torchattacks==3.5.1
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/seradv run

# Headless Chromium for the report's browser test (Debian packages chromium, chromium-driver),
# installed when missing: as root with apt-get, otherwise with password-less sudo. Where neither
# works (or apt-get is absent) nothing fails: the browser test skips and says why.
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then \
	  echo "browser: chromium and chromedriver present"; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
	  echo "browser: no apt-get here; chromium/chromedriver not installed, the browser test will skip"; \
	else \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; \
	  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
	  else SUDO="none"; fi; \
	  if [ "$$SUDO" = none ]; then \
	    echo "browser: not root and no password-less sudo; chromium not installed, the browser test will skip"; \
	  else \
	    echo "browser: installing chromium and chromium-driver with apt-get"; \
	    ( $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null && \
	      $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null ) \
	    || echo "browser: installing chromium failed; the browser test will skip"; \
	  fi; \
	fi

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
