# lensinfer — two entry points: `make run` (demo pipeline) and `make test` (test suite).
# Both create .venv (Python 3.11) once; a second `make` reuses it without reinstalling.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= 2

.PHONY: run test report dag clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps paltas==0.2.0
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/snakemake --report results/report.html

test: $(STAMP)
	$(BIN)/python -m pytest tests -q

report: $(STAMP)
	$(BIN)/snakemake --report results/report.html

dag: $(STAMP)
	$(BIN)/snakemake --rulegraph | dot -Tpng > docs/rulegraph.png

clean:
	rm -rf results logs .snakemake
