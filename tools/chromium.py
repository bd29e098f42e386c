"""The Chromium that the browser test drives and that prints the PDF: find it, or install it.

``make chromium`` (a prerequisite of ``make browser`` and ``make pdf``) runs this file:

- ``CHROMIUM=/path`` set: that file is used; if it is not an executable, stop and say so
  (nothing is installed behind the user's back when they named a browser).
- otherwise the first of ``chromium``, ``chromium-browser`` on ``PATH`` (Debian's package
  installs ``/usr/bin/chromium``);
- none found, and this is root on a system with ``apt-get`` (Debian, Ubuntu, the CI
  container): install Debian's ``chromium`` package with apt;
- none found and no way to install it: stop with the one command the user must run.

Playwright drives this browser (``executable_path=``); its own browser download
(``playwright install``) is never used. The tests and ``tools/build_pdf.py`` call
:func:`find_chromium` and fail with :func:`missing_message` when it returns None, so a
missing browser is a failure, never a skipped test. Standard library only: it runs with
the system Python, before the virtual environment exists.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping

__all__ = ["NAMES", "find_chromium", "missing_message", "can_install", "install", "main"]

# Debian's package installs /usr/bin/chromium; some distributions call it chromium-browser.
NAMES = ("chromium", "chromium-browser")


def _is_executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def find_chromium(environ: Mapping[str, str] = os.environ) -> str | None:
    """The Chromium executable to use, or None when there is none.

    ``CHROMIUM`` in ``environ`` wins (None if it is not an executable file); otherwise the
    first of :data:`NAMES` found on ``PATH``.
    """
    override = environ.get("CHROMIUM")
    if override:
        return override if _is_executable(override) else None
    for name in NAMES:
        path = shutil.which(name, path=environ.get("PATH"))
        if path:
            return path
    return None


def missing_message(environ: Mapping[str, str] = os.environ) -> str:
    """What to do when :func:`find_chromium` found nothing: one command to run."""
    override = environ.get("CHROMIUM")
    if override:
        return (f"CHROMIUM={override} is not an executable file: point CHROMIUM at a Chromium "
                "binary, or unset it to use (or install) Debian's chromium.")
    if shutil.which("apt-get"):
        return ("No Chromium found (the browser test and the PDF need one). "
                "Run: sudo apt-get install -y chromium")
    return ("No Chromium found (the browser test and the PDF need one). Install Chromium, "
            "then run: make test CHROMIUM=/path/to/chromium")


def can_install(environ: Mapping[str, str] = os.environ) -> bool:
    """True when this process may install Debian's chromium itself: root, apt-get, no CHROMIUM."""
    return (not environ.get("CHROMIUM") and hasattr(os, "geteuid") and os.geteuid() == 0
            and shutil.which("apt-get") is not None)


def install() -> None:
    """``apt-get update`` and ``apt-get install chromium`` (as root); raise if either fails."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        print("$", " ".join(command), flush=True)
        subprocess.run(command, env=env, check=True)


def main() -> int:
    path = find_chromium()
    if path is None and can_install():
        print("No Chromium found: installing Debian's chromium with apt (we are root).", flush=True)
        try:
            install()
        except subprocess.CalledProcessError as error:
            print(f"`{' '.join(error.cmd)}` failed with exit code {error.returncode}",
                  file=sys.stderr)
            return 1
        path = find_chromium()
        if path is None:
            print(f"apt-get installed chromium, but none of {NAMES} is on PATH", file=sys.stderr)
            return 1
    if path is None:
        print(missing_message(), file=sys.stderr)
        return 1
    print(f"Chromium: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
