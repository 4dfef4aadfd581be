# Quick start: `make run` (demo PBX) and `make test` (everything CI runs).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PKGS   := sip rtp media ivr softswitch

.PHONY: run test lint bench venv system-deps format clean

RUNSTAMP := $(VENV)/.installed-run
PIP    := $(PY) -m pip install -q --disable-pip-version-check -c constraints.txt

# `make run` needs the package alone; `make test` adds the test, lint and bench tools.
# Each prints one line when it has work to do, then how long it took.
$(RUNSTAMP): pyproject.toml constraints.txt
	@echo "setting up $(VENV) (once, under a minute)..."; start=$$(date +%s); \
	{ test -x $(PY) || $(PYTHON) -m venv $(VENV) || \
		{ rm -rf $(VENV) && scripts/system-deps.sh venv && $(PYTHON) -m venv $(VENV); }; } && \
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip && \
	$(PIP) -e . && touch $@ && \
	echo "$(VENV) ready in $$(( $$(date +%s) - start )) s"

$(STAMP): $(RUNSTAMP)
	@echo "adding the test, lint and benchmark tools to $(VENV)..."; start=$$(date +%s); \
	$(PIP) -e '.[test,dev,bench]' && touch $@ && \
	echo "$(VENV) ready for tests in $$(( $$(date +%s) - start )) s"

venv: $(STAMP)

# the browser SIP library the tests drive (JsSIP, pinned by js/package-lock.json)
JSSTAMP := js/node_modules/.installed
$(JSSTAMP): js/package.json js/package-lock.json
	@echo "installing js/ (npm ci, then the browser bundle)..."; cd js && npm ci --silent --no-audit --no-fund && npm run build --silent && touch node_modules/.installed

# Foreign SIP peers and audio tools the interop tests drive (apt-get when missing).
system-deps:
	scripts/system-deps.sh

# make run ARGS="--listen 0.0.0.0:5060" lets phones on the LAN in; ARGS="--help" lists options
run: $(RUNSTAMP)
	@{ command -v npm >/dev/null && $(MAKE) -s $(JSSTAMP); } || \
		echo "no npm: the portal's browser phone is off (scripts/system-deps.sh installs it)"
	@$(VENV)/bin/softswitch run $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy $(PKGS) examples benchmarks tests

# two workers side by side (most tests wait on phones and timers, not on the CPU; each
# worker has its own ports: tests/netutil.py), then the tests that time something alone
test: $(STAMP) system-deps
	$(MAKE) $(JSSTAMP)
	$(MAKE) lint
	$(VENV)/bin/pytest -q --durations=20 -n 2 --dist worksteal -m "not serial"
	$(VENV)/bin/pytest -q --durations=5 -m serial

bench: $(STAMP) system-deps
	scripts/system-deps.sh bench
	$(PY) benchmarks/sip_parse.py
	$(PY) benchmarks/sip_cps.py
	$(PY) benchmarks/mixer.py
	$(PY) benchmarks/rtp_fanout.py
	$(PY) benchmarks/moh_fanout.py
	$(PY) benchmarks/call_relay.py --calls 200 --seconds 20
	$(PY) benchmarks/conference_load.py
	$(PY) benchmarks/queue_load.py
	$(PY) benchmarks/web_stall.py
	$(PY) benchmarks/webrtc_legs.py
	$(PY) benchmarks/gil_convoy.py --ticks 50

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
