# The two commands: `make demo` and `make test`. Both create .venv on first use and reuse it after.
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
# torch first, pinned: the package must never pull a newer (CUDA) torch (docs/installation.md)
TORCH  := torch==2.14.1 torchvision==0.29.1
# The real data beside the repository, unless the caller points elsewhere
SHARED := $(abspath ../shared/data)
export HIST2ST_TK_DATA ?= $(if $(wildcard $(SHARED)/her2st),$(SHARED),)
export MPLBACKEND ?= Agg

.PHONY: install test demo docs lint clean

install: $(STAMP)

$(PY):
	python3 -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install $(TORCH)
	$(PIP) install -e ".[dev]"
	touch $(STAMP)

# pytest exits 5 when it collected nothing: that is a broken suite here, not a pass
test: install
	@$(PY) -m pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "error: pytest collected no tests"; exit 1; fi; \
	exit $$status

demo: install
	$(VENV)/bin/hist2st demo --out demo_output

docs: install
	$(PIP) install -e ".[docs]"
	rm -rf docs/_build docs/generated
	$(VENV)/bin/sphinx-build -M html docs docs/_build -W

lint: install
	$(VENV)/bin/ruff check src tests

clean:
	rm -rf demo_output docs/_build docs/generated .pytest_cache
