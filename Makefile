# The two commands of the README: `make demo` and `make test`. Everything else is what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DURATION_S ?= 60

.PHONY: demo test setup system-packages lint kafka-start kafka-stop

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

system-packages:
	bash scripts/install_system_packages.sh

demo: setup
	bash scripts/install_system_packages.sh demo
	$(BIN)/python scripts/demo.py --duration-s $(DURATION_S)

# pytest-xdist workers, one broker for all (tests/conftest.py); plain `pytest` runs the same tests in one process.
# worksteal: a worker that runs out takes queued tests from the other (with the default scheduling, the plain tests
# queued behind the first worker's exclusive and timing ones ran last, on it alone, while the other stood idle)
TEST_WORKERS ?= 2

test: setup system-packages lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal

lint: setup
	$(BIN)/ruff check app tests scripts
	$(BIN)/mypy app

kafka-start:
	$(PYTHON) scripts/kafka_local.py start

kafka-stop:
	$(PYTHON) scripts/kafka_local.py stop
