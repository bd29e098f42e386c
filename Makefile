# Two commands for a newcomer: `make book` and `make test`. Everything else is a helper.
SHELL := /bin/bash
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# Each notebook runs in its own kernel; loadfile keeps a notebook's cells together.
XDIST  := -n 2 --dist loadfile

.PHONY: help venv book test unit nbval chromium browser pdf pdfcheck notebooks bench clean

help:
	@echo "make book       set up .venv and build the book into _build/html"
	@echo "make test       set up .venv and run every test (unit, notebooks, browser, PDF)"
	@echo "make notebooks  re-execute every notebook in place (refreshes stored outputs)"
	@echo "make bench      run the batch-norm benchmark"
	@echo "make pdf        build the whole book as one PDF (_build/pdf/batchnorm-book.pdf)"
	@echo "make chromium   find Chromium for the browser test and the PDF, or install Debian's"
	@echo "                (CHROMIUM=/path/to/chromium uses that one)"

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

venv: $(STAMP)

# Always a fresh build: an incremental Sphinx build would not repeat the warnings of pages
# it does not re-read, and -W must see them all. Within one `make` run this happens once:
# the browser test reads _build/html, and the PDF's single-page build reuses _build/.doctrees.
book: $(STAMP)
	rm -rf _build
	$(VENV)/bin/jupyter-book build . -nW --keep-going

# Checked first, so that a missing browser stops `make test` at once, with the command to run.
test: chromium unit nbval browser pdfcheck

unit: $(STAMP)
	$(PY) -m pytest $(XDIST) -m "not browser and not pdf and not notebooks" tests

# Every notebook under strict nbval, and tests/test_portable_outputs.py: no compared output
# shows the torch build or the GPU, and the notebooks that could show them also validate
# under a torch that reports a CUDA build (and a GPU, as far as a CPU can follow).
nbval: $(STAMP)
	$(PY) -m pytest $(XDIST) --nbval notebooks tests/test_portable_outputs.py \
	    --nbval-sanitize-with tests/sanitize.cfg -p no:cacheprovider

# The Chromium that the browser test drives and that prints the PDF (tools/chromium.py):
# CHROMIUM=/path if given, else `chromium` on PATH, else Debian's package installed with apt
# when we are root; otherwise it stops with the one command to run. Never `playwright install`.
chromium:
	@$(PYTHON) tools/chromium.py

browser: chromium book
	$(PY) -m pytest -m browser tests -p no:cacheprovider

# The whole book as one PDF, _build/pdf/batchnorm-book.pdf: Jupyter Book's single-page HTML
# (built with -nW like `make book`, from the same doctrees), printed by Chromium through
# Playwright (tools/build_pdf.py).
pdf: chromium book
	$(PY) tools/build_pdf.py

pdfcheck: pdf
	$(PY) -m pytest -m pdf tests/test_pdf.py -p no:cacheprovider

notebooks: $(STAMP)
	$(PY) tools/execute_notebooks.py notebooks/*.ipynb

bench: $(STAMP)
	$(PY) benchmarks/bench_batchnorm.py

clean:
	rm -rf _build .pytest_cache .hypothesis
