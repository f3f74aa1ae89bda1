# twoafc: `make demo` and `make test` work on a fresh machine; each installs what it needs.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: demo test install chromium lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch and torchvision come from this machine's disk through pip (see README).
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[test]"
	# The trained shift-tolerant AlexNet: only its weight file is used (its code has broken imports).
	$(PY) -m pip install -q --no-deps stlpips-pytorch==0.0.2
	# Learned codecs. compressai pins numpy<2 but runs on numpy 2; its run-time imports are
	# in pyproject.toml.
	$(PY) -m pip install -q --no-deps compressai==1.2.8
	touch $(STAMP)

install: $(STAMP)

# Debian's Chromium for the browser tests (Playwright's own download cannot work offline).
chromium:
	@command -v /usr/bin/chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

demo: $(STAMP)
	$(PY) manage.py demo $(ARGS)

test: $(STAMP) chromium
	$(PY) -m pytest $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf var .pytest_cache
