# Works Beats — developer entry points. `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test test-quick lint bench faults fuzz soak lock clean

# Both environments install the locked versions (requirements/*.txt, written by `make lock`
# from pyproject.toml's ranges), then the project itself without resolving again.
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements/dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements/dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

# the demo needs only the runtime and the emulators (works-beats[demo]), not the developer set
$(VENV)/.demo-installed: pyproject.toml requirements/demo.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements/demo.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

demo: $(VENV)/.demo-installed
	$(BIN)/beats demo $(ARGS)

# re-resolve the locks after a change to pyproject.toml's dependencies (keeps what still fits)
lock: install
	$(BIN)/uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 -q -o requirements/dev.txt
	$(BIN)/uv pip compile pyproject.toml --extra demo --universal --python-version 3.11 -q -c requirements/dev.txt -o requirements/demo.txt

test: install
	$(BIN)/pytest $(ARGS)

test-quick: install
	$(BIN)/pytest -m "not slow" $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install
	# the FIWARE benchmark compares with the FIWARE PySpark connector, which pins an old
	# pyspark: it goes into the bench environment without its dependencies (pyspark 4 is a
	# dev dependency)
	$(BIN)/pip install --quiet --no-deps fiware-pyspark-connector==0.0.10
	$(BIN)/python -m bench $(ARGS)

# the system-level fault scenarios with the issue's full 60 s outages (make test runs 5 s ones)
faults: install
	BEATS_FAULT_OUTAGE=60 $(BIN)/pytest -s tests/faults $(ARGS)

# property-based and schema-driven fuzzing, 10,000 cases per target (make test runs a few hundred)
fuzz: install
	BEATS_FUZZ_EXAMPLES=10000 $(BIN)/pytest -m fuzz -p no:cacheprovider --timeout 7200 $(ARGS)

# 30 minutes of the demo with Kafka at moderate load; stops by itself (DURATION in seconds)
DURATION ?= 1800
soak: install
	$(BIN)/python -m bench.soak --duration $(DURATION) $(ARGS)

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
