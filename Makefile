# Two commands for a newcomer: `make book` and `make test`. Everything else is a helper.
SHELL := /bin/bash
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# Each notebook runs in its own kernel; loadfile keeps a notebook's cells together.
XDIST  := -n 2 --dist loadfile

.PHONY: help venv book test unit nbval browser pdfcheck notebooks bench clean

help:
	@echo "make book       set up .venv and build the book into _build/html"
	@echo "make test       set up .venv and run every test (unit, notebooks, browser)"
	@echo "make notebooks  re-execute every notebook in place (refreshes stored outputs)"
	@echo "make bench      run the batch-norm benchmark"
	@echo "make pdf        build the whole book as one PDF (_build/pdf/batchnorm-book.pdf)"

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

venv: $(STAMP)

book: $(STAMP)
	rm -rf _build
	$(VENV)/bin/jupyter-book build . -nW --keep-going

unit: $(STAMP)
	$(PY) -m pytest $(XDIST) -m "not browser and not pdf" tests

nbval: $(STAMP)
	$(PY) -m pytest $(XDIST) --nbval notebooks --nbval-sanitize-with tests/sanitize.cfg -p no:cacheprovider

browser: book
	$(PY) -m pytest -m browser tests -p no:cacheprovider

# After `browser`: `make book` clears _build, the PDF included.
pdfcheck: browser
	$(MAKE) pdf
	$(PY) -m pytest -m pdf tests/test_pdf.py -p no:cacheprovider

test: unit nbval browser pdfcheck

notebooks: $(STAMP)
	$(PY) tests/execute_notebooks.py notebooks/*.ipynb

bench: $(STAMP)
	$(PY) benchmarks/bench_batchnorm.py

clean:
	rm -rf _build .pytest_cache .hypothesis

# The whole book as one PDF, _build/pdf/batchnorm-book.pdf: Jupyter Book's single-page HTML
# (built with -nW like `make book`), printed by Debian's Chromium through Playwright
# (tests/build_pdf.py). Check it with `$(PY) -m pytest -m pdf tests/test_pdf.py`.
.PHONY: pdf
pdf: $(STAMP)
	$(PY) tests/build_pdf.py
