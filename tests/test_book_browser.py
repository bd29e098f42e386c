"""Open the built book in a real browser and check what a reader would see.

Runs after ``make book`` (``make browser`` = ``pytest -m browser tests``). The Chromium
that ``make chromium`` found or installed (``tools/chromium.py``: ``CHROMIUM=/path``, else
Debian's ``chromium`` on ``PATH``) is driven through Playwright (never ``playwright
install``); no Chromium is a failure that says what to run, never a skip. Every HTML
page of ``_build/html`` is opened from disk over ``file://`` with the network blocked,
and must show: no console or page errors, no request that leaves ``file://``, every
formula typeset by the MathJax shipped with the book, every image loaded, every internal
link (and its ``#fragment``) resolving.

Set ``BOOK_HTML_DIR`` to check a book built somewhere else than ``_build/html``.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

import pytest
import yaml
from book_testing import toc_files
from chromium import find_chromium, missing_message

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
HTML = Path(os.environ.get("BOOK_HTML_DIR", ROOT / "_build" / "html")).resolve()
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# URL schemes that never touch the network.
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")
# Text a failed typeset leaves on the page (TeX delimiters and environments).
RAW_TEX = ("$$", "\\[", "\\(", "\\begin{")
NOT_BUILT = "<book not built>"
TIMEOUT_MS = 15_000


# --------------------------------------------------------------------------- the pages


def book_pages() -> list[str]:
    """Every HTML page of the built book, relative to the build directory.

    That is the TOC pages plus Sphinx's own pages (genindex, search) and the viewcode
    source pages under _modules/: all of them are published, so all are checked.
    Left out: ``index.html``, a redirect to the root page (test_index_redirects_to_root_page),
    and the HTML templates that themes keep under _static/ (not pages).
    """
    if not (HTML / "index.html").is_file():
        # Collected anyway, so that the `book` fixture fails with "run make book".
        return [NOT_BUILT]
    pages = []
    for path in sorted(HTML.rglob("*.html")):
        rel = path.relative_to(HTML)
        if rel.parts[0] in ("_static", "_sources", "_images") or rel.as_posix() == "index.html":
            continue
        pages.append(rel.as_posix())
    return pages


class _Anchors(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if value and (name == "id" or (tag == "a" and name == "name")):
                self.ids.add(value)


@lru_cache(maxsize=None)
def anchors_in(path: Path) -> frozenset[str]:
    parser = _Anchors()
    parser.feed(path.read_text(encoding="utf8", errors="replace"))
    return frozenset(parser.ids)


def url_to_path(url: str) -> Path:
    return Path(url2pathname(urlsplit(url).path)).resolve()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def book() -> Path:
    """The built book; a missing build is a failure (CI must run this test for real)."""
    if not (HTML / "index.html").is_file():
        pytest.fail(
            f"{HTML / 'index.html'} does not exist: run `make book` first "
            "(`make browser` does it for you).",
            pytrace=False,
        )
    return HTML


@pytest.fixture(scope="session")
def chromium() -> str:
    """The Chromium of ``make chromium`` (``CHROMIUM`` or PATH); none is a failure, not a skip."""
    path = find_chromium()
    if path is None:
        pytest.fail(missing_message(), pytrace=False)
    return path


@pytest.fixture(scope="session")
def browser(book, chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Visit:
    """One browser page with everything it logs recorded; network requests are blocked."""

    def __init__(self, browser, **context_options):
        self.context = browser.new_context(**context_options)
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page = self.context.new_page()
        self.requests: list[str] = []  # every URL the page asked for
        self.errors: list[str] = []  # console messages of type "error" and uncaught exceptions
        self.remote: list[str] = []  # requests whose URL is not local
        self.failed: list[str] = []  # local requests that failed (a missing file)
        self.page.on(
            "console",
            lambda msg: self.errors.append(f"console: {msg.text}") if msg.type == "error" else None,
        )
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        self.page.on("request", self._on_request)
        self.page.on("requestfailed", self._on_failed)
        # Record *and* abort anything that would leave the machine, so that an offline
        # reader's experience is what we test, and a slow network cannot stall the test.
        self.context.route(re.compile(r"^(?!file:|data:|blob:|about:)"), lambda route: route.abort())

    def _on_request(self, request):
        self.requests.append(request.url)
        if not request.url.startswith(LOCAL_SCHEMES):
            self.remote.append(request.url)

    def _on_failed(self, request):
        if request.url.startswith("file:"):
            self.failed.append(f"{request.url} ({request.failure})")

    def open(self, rel: str) -> None:
        self.page.goto((HTML / rel).as_uri(), wait_until="load")
        self.wait_for_mathjax()

    def wait_for_mathjax(self) -> bool:
        """Wait until MathJax has typeset the page; False if the page loads no MathJax."""
        return self.page.evaluate(
            """async () => {
                if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
                    await MathJax.startup.promise;
                    return true;
                }
                return false;
            }"""
        )

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def visit(browser):
    visits = []

    def new(**context_options) -> Visit:
        v = Visit(browser, **context_options)
        visits.append(v)
        return v

    yield new
    for v in visits:
        v.close()


# --------------------------------------------------------------------------- per page

MATH_STATE_JS = """() => {
    const formulas = [...document.querySelectorAll('.math')];
    const untypeset = formulas
        .filter(el => !el.querySelector('mjx-container'))
        .map(el => el.textContent.trim().slice(0, 80));
    const errors = [...document.querySelectorAll('mjx-merror')]
        .map(el => el.getAttribute('data-mjx-error') || el.textContent);
    // The visible text outside code and formulas, where TeX must never show.
    const skip = 'pre, code, script, style, textarea, mjx-container, .highlight';
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    const visible = [];
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        const el = node.parentElement;
        if (!el || el.closest(skip) || !el.getClientRects().length) continue;
        visible.push(node.textContent);
    }
    return {
        formulas: formulas.length,
        containers: document.querySelectorAll('mjx-container').length,
        untypeset, errors, text: visible.join(' '),
    };
}"""

IMAGES_JS = """async () => {
    const images = [...document.images];
    for (const img of images) img.loading = 'eager';  // lazy images would never load off-screen
    await Promise.all(images.map(img => img.decode().catch(() => null)));
    return images.map(img => ({src: img.getAttribute('src'), ok: img.complete && img.naturalWidth > 0}));
}"""

# Links around a docutils error marker are reported as that error (PROBLEMATIC_JS) instead.
LINKS_JS = """() => [...document.querySelectorAll('a[href]')]
    .filter(a => !a.querySelector('.problematic'))
    .map(a => [a.getAttribute('href'), a.href])"""

# Where reStructuredText (a docstring, an {eval-rst} block) failed to parse, docutils
# leaves a red "problematic" span in the page; the build warned about it too.
PROBLEMATIC_JS = """() => [...document.querySelectorAll('.problematic')]
    .map(el => (el.closest('p, li, dd, td') || el.parentElement).textContent.trim().slice(0, 100))"""


def check_links(visit: Visit, rel: str) -> list[str]:
    problems = []
    here = (HTML / rel).resolve()
    live_ids = set(visit.page.evaluate("() => [...document.querySelectorAll('[id]')].map(e => e.id)"))
    for raw, absolute in visit.page.evaluate(LINKS_JS):
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", raw) and not raw.startswith("file:"):
            continue  # external (https:, mailto:, javascript:): not part of the offline book
        target = url_to_path(absolute)
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            problems.append(f"broken link {raw!r}: {target} does not exist")
            continue
        if HTML != target and HTML not in target.parents:
            problems.append(f"link {raw!r} leaves the built book: {target}")
            continue
        fragment = unquote(urlsplit(absolute).fragment)
        if not fragment:
            continue
        if target == here:
            found = fragment in live_ids
        else:
            found = target.suffix == ".html" and fragment in anchors_in(target)
        if not found:
            problems.append(f"link {raw!r}: no element with id {fragment!r} in {target.name}")
    return problems


def check_notebook_buttons(visit: Visit, rel: str) -> list[str]:
    """A chapter built from a notebook offers Colab, Binder and the .ipynb download."""
    source = HTML / "_sources" / (rel[: -len(".html")] + ".ipynb")
    if not source.is_file():
        return []
    hrefs = [href for href, _ in visit.page.evaluate(LINKS_JS)]
    problems = []
    if not any(h.startswith("https://colab.research.google.com/") for h in hrefs):
        problems.append("chapter has no Colab launch button")
    if not any(h.startswith("https://mybinder.org/") for h in hrefs):
        problems.append("chapter has no Binder launch button")
    if not any(h.endswith(".ipynb") and not h.startswith("http") for h in hrefs):
        problems.append("chapter has no .ipynb download link")
    return problems


@pytest.mark.parametrize("rel", book_pages())
def test_page_renders_offline_without_errors(visit, book, rel):
    v = visit()
    v.open(rel)
    problems: list[str] = []

    problems += v.errors
    problems += [f"request leaves file://: {url}" for url in v.remote]
    problems += [f"local file failed to load: {what}" for what in v.failed]

    math = v.page.evaluate(MATH_STATE_JS)
    if math["formulas"] and not math["containers"]:
        problems.append(f"{math['formulas']} formulas but MathJax typeset none (did it load?)")
    problems += [f"formula not typeset: {tex!r}" for tex in math["untypeset"]]
    problems += [f"MathJax error: {err}" for err in math["errors"]]
    problems += [f"raw TeX {raw!r} visible in the text" for raw in RAW_TEX if raw in math["text"]]

    problems += [f"image not loaded: {img['src']}" for img in v.page.evaluate(IMAGES_JS) if not img["ok"]]
    problems += check_links(v, rel)
    problems += check_notebook_buttons(v, rel)
    problems += [
        f"reStructuredText error shown on the page (see the build's warnings), in: {text!r}"
        for text in v.page.evaluate(PROBLEMATIC_JS)
    ]

    assert not problems, f"{rel}:\n  " + "\n  ".join(problems)


# --------------------------------------------------------------------------- the book as a whole


def test_every_toc_entry_is_built_and_nothing_else(book):
    """Each _toc.yml file has its page; no other document (README, tests...) leaks in."""
    expected = {f + ".html" for f in toc_files()}
    missing = sorted(p for p in expected if not (book / p).is_file())
    assert not missing, f"TOC entries without a page: {missing}"
    sphinx_pages = ("genindex.html", "py-modindex.html", "search.html")  # made by Sphinx itself
    built = {p for p in book_pages() if p not in sphinx_pages and not p.startswith("_modules/")}
    assert built == expected, f"pages outside the TOC: {sorted(built - expected)}"


def test_index_redirects_to_root_page(visit, book):
    root = toc_files()[0] + ".html"
    v = visit()
    v.page.goto((book / "index.html").as_uri())
    v.page.wait_for_url((book / root).as_uri())
    assert v.page.title(), "the root page has no title"
    assert not v.errors and not v.remote, v.errors + v.remote


def test_mathjax_is_shipped_with_the_book(visit, book):
    """MathJax comes from the build directory, never from a CDN."""
    cdn = re.compile(r"""<script[^>]+src=["'](?:https?:)?//[^"']*mathjax""", re.IGNORECASE)
    remote = [p.relative_to(book).as_posix() for p in book.rglob("*.html") if cdn.search(p.read_text("utf8"))]
    assert not remote, f"pages loading MathJax from the network: {remote}"

    v = visit()
    v.open(toc_files()[0] + ".html")  # the root page has the defining formula
    sources = v.page.evaluate(
        "() => [...document.scripts].map(s => s.getAttribute('src')).filter(s => s && /mathjax/i.test(s))"
    )
    assert len(sources) == 1, f"expected one MathJax script, found {sources}"
    src = sources[0]
    assert not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", src) or src.startswith("file:"), src
    loaded = [url for url in v.requests if "mathjax" in url.lower()]
    assert loaded and all(url.startswith("file:") for url in loaded), loaded
    assert all(url_to_path(url).is_file() for url in loaded), loaded
    assert v.page.evaluate("() => MathJax.version").startswith("3."), "not MathJax 3"
    assert v.page.locator("mjx-container").count() > 0
    assert not v.remote, v.remote


def test_notation_macros_from_config_typeset(visit, book):
    """The macros of _config.yml reach MathJax, and each one typesets without an error."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf8"))
    macros = config["sphinx"]["config"]["mathjax3_config"]["tex"]["macros"]
    assert {"xhat", "mub", "sigmab", "E", "Var", "R"} <= set(macros)

    v = visit()
    v.open("book/notation.html")
    assert set(macros) <= set(v.page.evaluate("() => Object.keys(MathJax.config.tex.macros)"))

    # The page itself uses the macros, and none of its formulas is an error.
    sources = v.page.evaluate("() => Array.from(MathJax.startup.document.math, item => item.math)")
    assert any("\\xhat" in tex for tex in sources), "notation page no longer uses \\xhat"
    assert v.page.locator("mjx-merror").count() == 0

    typeset = """async tex => {
        const node = await MathJax.tex2chtmlPromise(tex, {display: false});
        const error = node.querySelector('mjx-merror');
        return error ? (error.getAttribute('data-mjx-error') || 'error') : null;
    }"""
    for name, definition in macros.items():
        nargs = definition[1] if isinstance(definition, list) else 0
        tex = "\\" + name + "{x}" * nargs
        assert v.page.evaluate(typeset, tex) is None, f"macro \\{name} does not typeset"
    # ...and the check above can fail: an unknown macro is an error, not red text.
    assert v.page.evaluate(typeset, "\\nosuchmacro") is not None
    assert not v.errors, v.errors


def test_dark_theme_keeps_figures_on_white(visit, book):
    """In the dark theme, notebook output images sit on a white background."""
    v = visit(color_scheme="dark")
    pages = [p for p in book_pages() if "cell_output" in (book / p).read_text("utf8")]
    v.open(pages[0] if pages else toc_files()[0] + ".html")
    assert v.page.evaluate("() => document.documentElement.dataset.theme") == "dark"
    # Style sheets from file:// cannot be inspected (cssRules is cross-origin there), so
    # check the effect instead: a stand-in output image gets the white background.
    probe = v.page.evaluate(
        """() => {
            const cell = document.createElement('div');
            cell.className = 'cell_output';
            const img = document.createElement('img');
            cell.appendChild(img);
            (document.querySelector('.bd-content') || document.body).appendChild(cell);
            const style = getComputedStyle(img);
            const found = [style.backgroundColor, style.filter];
            cell.remove();
            return found;
        }"""
    )
    assert probe == ["rgb(255, 255, 255)", "none"], f"custom.css is not applied in the dark theme ({probe})"
    for rel in pages:
        v.open(rel)
        styles = v.page.evaluate(
            """() => [...document.querySelectorAll('.cell_output img')]
                .map(i => [getComputedStyle(i).backgroundColor, getComputedStyle(i).filter])"""
        )
        assert all(s == ["rgb(255, 255, 255)", "none"] for s in styles), (rel, styles)
    assert not v.errors and not v.remote, v.errors + v.remote
