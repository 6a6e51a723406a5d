# Two entry points for a fresh machine (see README):
#   make demo   set up .venv and run the whole pipeline on the embedded demo slide
#   make test   set up .venv and run lint, type checks and the tests
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup sysdeps demo test lint typecheck

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,review,ray]'
	touch $@

demo: setup
	$(BIN)/marrowscope demo --out demo-out

lint: setup
	$(BIN)/ruff check src tests benchmarks

typecheck: setup
	$(BIN)/mypy

# System packages some tests need (browser for the review app, Orthanc for DICOMweb, dciodvfy for
# DICOM conformance). Installed when missing and run as root (as CI is); otherwise those tests skip,
# naming the package, except under CI where they fail.
SYSDEPS := chromium chromium-driver orthanc orthanc-dicomweb dicom3tools

sysdeps:
	@missing=""; for p in $(SYSDEPS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing system packages for the tests:$$missing"; \
	  (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null) \
	    || echo "warning: could not install$$missing; the tests that need them will say so"; \
	else echo "note: missing system packages$$missing (run as root, or: sudo apt-get install$$missing)"; fi

test: setup sysdeps lint typecheck
	$(BIN)/python -m pytest -q -n 2 --durations=15
