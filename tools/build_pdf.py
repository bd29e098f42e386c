"""Build a PDF of the whole book (``make pdf``): HTML by Jupyter Book, printed by Chromium.

1. ``jupyter-book build . --builder singlehtml -nW --keep-going`` puts every page that
   ``_toc.yml`` lists, in its order, into one HTML page (``_build/singlehtml/``), with the
   same configuration as the HTML book: offline MathJax, stored notebook outputs. It
   shares ``_build/.doctrees`` with ``make book``: after the HTML build (``make pdf``
   depends on ``make book``) Sphinx reads nothing again and only writes the single page.
2. The Chromium of ``make chromium`` (``tools/chromium.py``: ``CHROMIUM=/path``, else
   Debian's ``chromium``), driven by Playwright (never ``playwright install``), opens that
   page from disk with every network request blocked, waits until MathJax has typeset
   every formula and every image has loaded, opens the dropdowns (exercise solutions,
   source listings), hides the navigation, starts each chapter on a new page and prints
   to ``_build/pdf/batchnorm-book.pdf``.

Usage::

    python tools/build_pdf.py                     # what `make pdf` runs (after `make book`)
    python tools/build_pdf.py --allow-warnings    # print even if the HTML build warns
    python tools/build_pdf.py --toc other_toc.yml # a trial build with another TOC (own tree)

No Chromium: the script stops with the command to run (``make chromium`` installs
Debian's when it can).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from chromium import find_chromium, missing_message

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "_build"  # shared with `make book`: _build/html, _build/.doctrees
TRIAL = BUILD / "toc-trial"  # --toc: a tree of its own, so the book's doctrees stay as built
PDF = BUILD / "pdf" / "batchnorm-book.pdf"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
TIMEOUT_MS = 180_000

# Print layout: no navigation, code that wraps instead of running off the page, each
# chapter (each document of the TOC) on a new page, figures never split across pages.
PRINT_CSS = """
@page { size: A4; margin: 16mm 14mm 16mm 14mm; }
.bd-header, .bd-header-article, .bd-sidebar-primary, .bd-sidebar-secondary,
.bd-footer, .bd-footer-article, .bd-footer-content, .prev-next-area, .header-article,
.toggle-button, .headerlink, .copybtn, .bd-search, .skip-link, .search-button-field,
#pst-back-to-top, .sidebar-toggle, .primary-toggle, .secondary-toggle { display: none !important; }
.bd-main, .bd-content, .bd-article-container, .bd-page-width, .bd-container,
.bd-container__inner, .bd-article { max-width: none !important; width: 100% !important;
  padding: 0 !important; margin: 0 !important; }
html, body { font-size: 10pt; }
pre { white-space: pre-wrap !important; word-break: break-word; font-size: 8pt; }
/* a code cell stays on one page when it fits; a longer one breaks inside its code */
div.cell { break-inside: avoid; }
pre, div.highlight, div.cell_input, div.cell_output { break-inside: auto !important; }
img, figure, .cell_output img { max-width: 100% !important; break-inside: avoid; }
span[id^="document-"] + section { break-before: page; }
h1, h2, h3 { break-after: avoid; }
"""

OPEN_DROPDOWNS_JS = """() => {
  document.querySelectorAll('.toggle-hidden').forEach(e => e.classList.remove('toggle-hidden'));
  document.querySelectorAll('details').forEach(d => { d.open = true; });
}"""

MATHJAX_DONE_JS = """async () => {
  if (!window.MathJax || !MathJax.startup || !MathJax.startup.promise) return -1;
  await MathJax.startup.promise;
  if (MathJax.typesetPromise) await MathJax.typesetPromise();
  await document.fonts.ready;
  return document.querySelectorAll('mjx-container').length;
}"""

IMAGES_DONE_JS = """() => Array.from(document.images).every(img => img.complete)"""

# TeX left in the prose (code listings, which may quote TeX in docstrings, do not count)
RAW_TEX_JS = """() => {
  const body = document.body.cloneNode(true);
  body.querySelectorAll('pre, code, .highlight, mjx-container, script, style, textarea')
      .forEach(e => e.remove());
  const text = body.textContent;
  return ['$$', '\\\\frac', '\\\\begin{', '\\\\sqrt'].filter(t => text.includes(t));
}"""


def build_html(strict: bool, toc=None) -> Path:
    """Run the singlehtml build; return the page that holds the whole book."""
    command = [str(ROOT / ".venv" / "bin" / "jupyter-book"), "build", str(ROOT),
               "--builder", "singlehtml"]
    html_dir = BUILD / "singlehtml"
    if toc:
        command += ["--toc", str(toc), "--path-output", str(TRIAL)]
        html_dir = TRIAL / "_build" / "singlehtml"
    if not Path(command[0]).exists():
        command[0] = shutil.which("jupyter-book") or "jupyter-book"
    if strict:
        command += ["-nW", "--keep-going"]
    print("$", " ".join(command), flush=True)
    done = subprocess.run(command, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"the HTML build failed (exit code {done.returncode}); see its warnings "
                         "above, or run with --allow-warnings to print anyway")
    # singlehtml writes the whole book into the TOC's root page (book/intro.html, which
    # index.html redirects to) but writes every link in it relative to the build's top
    # folder (_static/..., _images/...): a copy at the top resolves them all.
    redirect = (html_dir / "index.html").read_text(encoding="utf8")
    target = re.search(r'url=([^"\']+)', redirect)
    built = html_dir / target.group(1) if target else html_dir / "index.html"
    if not built.is_file():
        raise SystemExit(f"the single-page book {built} was not built")
    page = html_dir / "whole-book.html"
    shutil.copyfile(built, page)
    return page


def chromium() -> str:
    path = find_chromium()
    if path is None:
        raise SystemExit(missing_message())
    return path


def print_pdf(page: Path, pdf: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1100, "height": 1400})
            context.set_default_timeout(TIMEOUT_MS)
            # an offline book: anything that would leave the machine is refused
            context.route(re.compile(r"^(?!file:|data:|blob:|about:)"), lambda route: route.abort())
            tab = context.new_page()
            errors = []
            tab.on("pageerror", lambda exc: errors.append(str(exc)))
            tab.goto(page.as_uri(), wait_until="load")
            tab.add_style_tag(content=PRINT_CSS)
            tab.evaluate(OPEN_DROPDOWNS_JS)
            formulas = tab.evaluate(MATHJAX_DONE_JS)
            if formulas < 0:
                raise SystemExit("MathJax did not load: formulas would print as raw TeX")
            tab.wait_for_function(IMAGES_DONE_JS)
            raw = tab.evaluate(RAW_TEX_JS)
            if raw:
                raise SystemExit(f"untypeset TeX left on the page: {raw}")
            if errors:
                raise SystemExit("JavaScript errors on the page:\n" + "\n".join(errors))
            print(f"typeset {formulas} formulas; printing {pdf.relative_to(ROOT)}", flush=True)
            tab.emulate_media(media="print")
            tab.pdf(path=str(pdf), format="A4", print_background=True,
                    prefer_css_page_size=True, display_header_footer=True,
                    header_template="<span></span>",
                    footer_template='<div style="font-size:8px;width:100%;text-align:center;">'
                                    '<span class="pageNumber"></span> / '
                                    '<span class="totalPages"></span></div>')
        finally:
            browser.close()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--allow-warnings", action="store_true",
                        help="build the HTML without -nW (print even if Sphinx warns)")
    parser.add_argument("--toc", help="another table of contents than _toc.yml (a trial build)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    page = build_html(strict=not args.allow_warnings, toc=args.toc)
    PDF.parent.mkdir(parents=True, exist_ok=True)
    print_pdf(page, PDF)
    from pypdf import PdfReader

    pages = len(PdfReader(str(PDF)).pages)
    print(f"{PDF.relative_to(ROOT)}: {pages} pages, {PDF.stat().st_size / 1e6:.1f} MB, "
          f"built in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
