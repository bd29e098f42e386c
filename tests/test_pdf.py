"""Check the PDF of the book that ``make pdf`` builds (``tools/build_pdf.py``).

Run after ``make pdf``: ``pytest -m pdf tests``. Opens the PDF with pypdf and checks that
it is the whole book — a sensible number of pages, every chapter of ``_toc.yml`` by the
title of its notebook — and that its formulas were typeset: every chapter's pages use
MathJax's fonts, no TeX delimiter is left in the text, and none of the TeX commands the
prose uses (and no code shows) appears raw.

Set ``BOOK_PDF`` to check a PDF built elsewhere.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from book_testing import toc_files

pytestmark = pytest.mark.pdf

ROOT = Path(__file__).resolve().parents[1]
PDF = Path(os.environ.get("BOOK_PDF", ROOT / "_build" / "pdf" / "batchnorm-book.pdf"))
MIN_PAGES = 30
TEX_COMMAND = re.compile(r"\\([A-Za-z]+)")
MATH = re.compile(r"\$\$(.+?)\$\$|\$([^$\n]+)\$", re.S)
CODE_FENCE = re.compile(r"```.*?```", re.S)


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _notebook(path: str) -> dict:
    return json.loads((ROOT / f"{path}.ipynb").read_text(encoding="utf8"))


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def chapter_titles() -> list[str]:
    """The first ``# `` heading of every notebook the TOC lists, in TOC order."""
    titles = []
    for path in toc_files(include_root=False):
        if not (ROOT / f"{path}.ipynb").is_file():
            continue
        for cell in _notebook(path)["cells"]:
            if cell["cell_type"] != "markdown":
                continue
            heading = next((line for line in _source(cell).splitlines()
                            if line.startswith("# ")), None)
            if heading:
                titles.append(heading[2:].strip())
                break
    return titles


def prose_only_tex_commands() -> set[str]:
    """TeX commands used in the prose's math but in no code the book shows.

    If one of them appears in the PDF's text, a formula was printed as raw TeX. Code
    (bnkit's sources shown by literalinclude, notebook code cells, code fences) may
    legitimately show TeX, so every command found there is left out.
    """
    in_prose: set[str] = set()
    in_code: set[str] = set()
    for path in toc_files(include_root=False):
        if (ROOT / f"{path}.ipynb").is_file():
            cells = _notebook(path)["cells"]
            texts = [_source(c) for c in cells if c["cell_type"] == "markdown"]
            for cell in cells:
                if cell["cell_type"] == "code":
                    in_code |= set(TEX_COMMAND.findall(_source(cell)))
                    for output in cell.get("outputs", []):
                        in_code |= set(TEX_COMMAND.findall(json.dumps(output)))
        else:
            texts = [(ROOT / f"{path}.md").read_text(encoding="utf8")]
        for text in texts:
            for fence in CODE_FENCE.findall(text):
                in_code |= set(TEX_COMMAND.findall(fence))
            for display, inline in MATH.findall(CODE_FENCE.sub("", text)):
                in_prose |= set(TEX_COMMAND.findall(display or inline))
    for source in (ROOT / "bnkit").rglob("*.py"):
        in_code |= set(TEX_COMMAND.findall(source.read_text(encoding="utf8")))
    return in_prose - in_code


@pytest.fixture(scope="module")
def pdf(request):
    if not PDF.is_file():
        # Asked for (`-m pdf`, as after `make pdf`): a missing PDF is a failure. In a general
        # run (the unit tests, which do not build the book) it is only a skip.
        if re.search(r"(?<!not )\bpdf\b", request.config.option.markexpr or ""):
            pytest.fail(f"{PDF} does not exist: run `make pdf` first", pytrace=False)
        pytest.skip(f"{PDF} not built (run `make pdf`, then `pytest -m pdf tests/test_pdf.py`)")
    from pypdf import PdfReader

    reader = PdfReader(str(PDF))
    texts = [page.extract_text() or "" for page in reader.pages]
    mathjax_pages = set()
    for index, page in enumerate(reader.pages):
        fonts = page.get("/Resources", {}).get("/Font", {})
        for font in fonts.values():
            font = font.get_object()
            descriptor = font.get("/FontDescriptor")
            name = str(font.get("/BaseFont") or (descriptor.get_object().get("/FontName")
                                                 if descriptor else ""))
            if "MathJax" in name:
                mathjax_pages.add(index)
    return dict(pages=len(reader.pages), texts=[_squash(t) for t in texts],
                mathjax_pages=mathjax_pages)


def test_pdf_has_a_sensible_number_of_pages(pdf):
    assert pdf["pages"] > MIN_PAGES


def test_toc_lists_chapters():
    titles = chapter_titles()
    assert titles, "no notebook in _toc.yml has a '# ' title"
    assert all(t.startswith("Chapter ") for t in titles), titles


def _chapter_starts(pdf) -> dict:
    """Page index where each chapter's title appears as a heading (after the contents page)."""
    starts = {}
    for title in chapter_titles():
        # page 0 carries the table of contents, which lists the titles too
        pages = [i for i, text in enumerate(pdf["texts"]) if i > 0 and _squash(title) in text]
        starts[title] = pages[0] if pages else None
    return starts


def test_every_chapter_of_the_toc_is_in_the_pdf(pdf):
    starts = _chapter_starts(pdf)
    missing = [title for title, page in starts.items() if page is None]
    assert not missing, f"chapters not found in {PDF.name}: {missing}"
    order = [starts[t] for t in chapter_titles()]
    assert order == sorted(order), "chapters are not in the order of _toc.yml"


def test_every_chapter_has_typeset_math(pdf):
    starts = _chapter_starts(pdf)
    order = sorted(p for p in starts.values() if p is not None)
    for title, first in starts.items():
        assert first is not None, title
        later = [p for p in order if p > first]
        last = later[0] if later else pdf["pages"]
        assert pdf["mathjax_pages"] & set(range(first, last)), \
            f"no page of {title!r} uses a MathJax font: its formulas were not typeset"


def test_no_tex_delimiters_left_in_the_text(pdf):
    for index, text in enumerate(pdf["texts"]):
        assert "$$" not in text, f"page {index + 1}: raw $$ (an untypeset display formula)"


def test_no_raw_tex_commands_from_the_prose(pdf):
    commands = prose_only_tex_commands()
    assert len(commands) >= 5, f"too few prose-only TeX commands to check: {commands}"
    pattern = re.compile(r"\\(" + "|".join(sorted(commands)) + r")(?![A-Za-z])")
    raw = [(index + 1, m.group(0)) for index, text in enumerate(pdf["texts"])
           for m in pattern.finditer(text)]
    assert not raw, f"raw TeX in the PDF (page, command): {raw[:10]}"
