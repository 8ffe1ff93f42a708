# Works Beats — developer entry points. `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test test-quick lint bench faults fuzz soak clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: install
	$(BIN)/beats demo $(ARGS)

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
