# Quick start: `make run` (demo PBX) and `make test` (everything CI runs).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PKGS   := sip rtp media ivr softswitch

.PHONY: run test lint bench venv system-deps format clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || \
		(rm -rf $(VENV) && scripts/system-deps.sh venv && $(PYTHON) -m venv $(VENV))
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test,dev,bench]'
	touch $(STAMP)

venv: $(STAMP)

# Foreign SIP peers and audio tools the interop tests drive (apt-get when missing).
system-deps:
	scripts/system-deps.sh

run: $(STAMP)
	$(VENV)/bin/softswitch run $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy $(PKGS) examples benchmarks tests

test: $(STAMP) system-deps
	$(MAKE) lint
	$(VENV)/bin/pytest -q

bench: $(STAMP) system-deps
	$(PY) benchmarks/sip_parse.py
	$(PY) benchmarks/sip_cps.py
	$(PY) benchmarks/mixer.py
	$(PY) benchmarks/rtp_fanout.py
	$(PY) benchmarks/moh_fanout.py
	$(PY) benchmarks/conference_load.py

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
