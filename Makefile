# lensinfer — two entry points: `make run` (demo pipeline) and `make test` (test suite).
# Both create .venv (Python 3.11) once and install ONLY from requirements.lock (every distribution pinned with its
# hashes; no resolver at install time). A second `make` reuses .venv; a changed lock re-syncs it.
# `make lock` regenerates the lock from requirements.in (maintainers, to upgrade: see requirements.in).

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.lock
CORES ?= 2
# pytest-xdist workers of `make test` (each test module is one unit of work, the longest first: tests/conftest.py)
TEST_WORKERS ?= 2
# where the torch CPU wheel lies (see requirements.in); hash-checked against the lock
TORCH_WHEELS ?= /opt/wheels
# the resolver of `make lock` sees only distributions uploaded before this date: the same inputs give the same
# lock next month too; move it forward to upgrade
LOCK_DATE := 2026-12-03T00:00:00Z
UV_LOCK := $(BIN)/uv pip compile requirements.in --override lock-overrides.txt --generate-hashes \
	--python-version 3.11 --python-platform x86_64-manylinux_2_28 --find-links $(TORCH_WHEELS) \
	--exclude-newer $(LOCK_DATE) --no-header --annotation-style split --quiet

.PHONY: run test bench report dag lock clean

$(STAMP): $(LOCK) pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# uv itself comes from the lock's hashed pin (pip installs that one file, no dependencies, hash checked)
	awk '/^uv==/{p=1} p{print} p&&!/\\$$/{exit}' $(LOCK) > $(VENV)/uv.req
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes -r $(VENV)/uv.req
	$(BIN)/uv pip sync --quiet --python $(BIN)/python --require-hashes --find-links $(TORCH_WHEELS) $(LOCK)
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps --no-build-isolation -e .
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/snakemake --report results/report.html

test: $(STAMP)
	$(BIN)/python -m pytest tests -q -n $(TEST_WORKERS) --dist loadscope

# the benchmarks' peers (caustics, sbi) are in the lock (extra "bench"), so the same install serves them
bench: $(STAMP)
	@echo "installed; run e.g. $(BIN)/python bench/simulate.py (bench/*.py, README 'Results')"

report: $(STAMP)
	$(BIN)/snakemake --report results/report.html

dag: $(STAMP)
	@# via a file: a missing or failing dot (Debian: apt-get install graphviz) leaves the committed figure intact
	$(BIN)/snakemake --rulegraph > $(VENV)/rulegraph.dot
	dot -Tpng $(VENV)/rulegraph.dot -o docs/rulegraph.png

# regenerate requirements.lock from requirements.in (deterministic: same inputs and LOCK_DATE, same file)
lock: $(STAMP)
	$(UV_LOCK) --upgrade -o $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)
	$(BIN)/python tools/make_envs.py

clean:
	rm -rf results logs .snakemake
