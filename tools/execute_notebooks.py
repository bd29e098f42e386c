"""Re-execute notebooks in place so their stored outputs are fresh (`make notebooks`).

Usage: python tools/execute_notebooks.py notebooks/*.ipynb
Each notebook runs in a fresh kernel with the notebooks/ folder as working
directory, exactly as nbval will run it; its execution time is printed.
"""

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def execute(path: Path) -> float:
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    elapsed = time.perf_counter() - start
    nbformat.write(nb, path)
    return elapsed


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(f"{name}: executed in {execute(Path(name)):.1f} s", flush=True)
