r"""Run a function on a few local processes joined in a ``torch.distributed`` group.

:func:`run_processes` starts ``world_size`` fresh Python processes on this
machine, joins them in a process group (``gloo`` over 127.0.0.1 by default, so
it works on any CPU), calls ``fn(rank, world_size, *args)`` on each, and
returns the results to the caller, ordered by rank. It is what a unit test or
a notebook needs to try data-parallel code without ``torchrun``:

- the rendezvous port is found by binding port 0 on 127.0.0.1 (the operating
  system picks a free one), and every connection stays on the loopback interface;
- every wait is bounded: collectives time out after ``collective_timeout``
  seconds, and the whole run after ``timeout`` seconds;
- when a rank raises, the others are stopped and :class:`WorkerError` is raised
  in the caller with that rank's traceback; a rank that stops *because* another
  one failed raises :class:`PeerError`, so the report names the real culprit;
- the workers' standard output and error go to log files, not to the caller's
  terminal or notebook.

``fn`` must be importable by name (defined at the top level of a module, not in
a notebook or ``__main__``), because each process is started fresh ("spawn")
and imports it.
"""

from __future__ import annotations

import datetime
import multiprocessing
import multiprocessing.connection
import os
import pickle
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
import torch.distributed as dist

__all__ = ["run_processes", "find_free_port", "loopback_interface", "WorkerError", "PeerError"]

_LOOPBACK = "127.0.0.1"


class PeerError(RuntimeError):
    """Raised on a rank that stops because *another* rank of its group failed.

    Collective operations need every rank: when one rank cannot take part, the
    others raise this error instead of waiting for it forever.
    """


class WorkerError(RuntimeError):
    """A rank started by :func:`run_processes` raised an exception or died.

    Attributes
    ----------
    rank : int
        The rank whose failure is reported (the first one that did not merely
        raise :class:`PeerError`).
    world_size : int
    errors : dict
        For every rank that failed (an int key), its traceback or how its
        process ended (a str).
    """

    def __init__(self, message: str, rank: int, world_size: int, errors: Dict[int, str]):
        super().__init__(message)
        self.rank = rank
        self.world_size = world_size
        self.errors = errors


def find_free_port(host: str = _LOOPBACK) -> int:
    """A TCP port on ``host`` that is free now: bind port 0 and let the OS choose.

    The port is released before it is returned, so another program could take
    it in between; on a test machine that is rare enough.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def loopback_interface() -> Optional[str]:
    """The name of the loopback network interface (``lo`` on Linux, ``lo0`` on macOS), or None.

    Setting ``GLOO_SOCKET_IFNAME`` to it keeps gloo's connections on 127.0.0.1.
    """
    names = [name for _, name in socket.if_nameindex()] if hasattr(socket, "if_nameindex") else []
    for name in ("lo", "lo0"):
        if name in names:
            return name
    return None


def _context(start_method: Optional[str]):
    """The multiprocessing context; a forkserver has torch imported once, ahead of time."""
    if start_method is None:
        start_method = ("forkserver" if "forkserver" in multiprocessing.get_all_start_methods()
                        else "spawn")
    if start_method not in ("forkserver", "spawn"):
        raise ValueError(f"start_method must be 'forkserver' or 'spawn' (got {start_method!r})")
    ctx = multiprocessing.get_context(start_method)
    if start_method == "forkserver":
        # Only takes effect before the server starts (the first run in this process).
        # Besides torch, the module autograd imports at its first backward (about a
        # second); the server ignores a preload that fails to import.
        ctx.set_forkserver_preload([__name__, "torch.fx.experimental.symbolic_shapes"])
    return ctx


def _worker(rank: int, world_size: int, fn: Callable, args: tuple, port: int, backend: str,
            workdir: str, collective_timeout: float, num_threads: Optional[int]) -> None:
    """Body of each process: redirect output, join the group, run ``fn``, save the result."""
    work = Path(workdir)
    log = open(work / f"log-{rank}.txt", "w")
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log.fileno(), 1)            # C++ warnings (gloo, c10d) land here too
    os.dup2(log.fileno(), 2)
    code = 0
    try:
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        if backend == "gloo" and "GLOO_SOCKET_IFNAME" not in os.environ:
            interface = loopback_interface()
            if interface is not None:
                os.environ["GLOO_SOCKET_IFNAME"] = interface   # stay on 127.0.0.1
        dist.init_process_group(backend, init_method=f"tcp://{_LOOPBACK}:{port}", rank=rank,
                                world_size=world_size,
                                timeout=datetime.timedelta(seconds=collective_timeout))
        result = fn(rank, world_size, *args)
        dist.barrier()                  # nobody tears down while another still needs the group
        torch.save(result, work / f"result-{rank}.pt")
        dist.destroy_process_group()
    except BaseException as exc:        # noqa: BLE001 - everything is reported to the caller
        try:
            payload = pickle.dumps(exc)
        except Exception:               # an exception that does not pickle: text only
            payload = None
        report = {"time": time.time(), "traceback": traceback.format_exc(),
                  "type": type(exc).__name__,
                  "message": str(exc), "peer": isinstance(exc, PeerError),
                  "exception": payload}
        with open(work / f"error-{rank}.pkl", "wb") as fh:
            pickle.dump(report, fh)
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        log.flush()
    # os._exit: skip interpreter teardown, which could wait on a broken group.
    os._exit(code)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def _stop(processes: Sequence, grace: float) -> None:
    """Terminate the processes still running, then kill those that ignore it."""
    processes = [p for p in processes if p.pid is not None]      # the started ones
    for p in processes:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + grace
    for p in processes:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in processes:
        if p.is_alive():
            p.kill()
            p.join()


def _failure(work: Path, processes: Sequence, world_size: int, first: int) -> WorkerError:
    """Collect every rank's error report and build the exception for the caller.

    ``first`` is the rank the caller saw end first with an error.
    """
    reports: Dict[int, dict] = {}
    for rank, p in enumerate(processes):
        path = work / f"error-{rank}.pkl"
        if path.exists():
            with open(path, "rb") as fh:
                reports[rank] = pickle.load(fh)
        elif p.exitcode not in (0, None) and not (work / f"result-{rank}.pt").exists():
            how = (f"was killed by signal {-p.exitcode}" if p.exitcode < 0
                   else f"exited with code {p.exitcode}")
            if (work / f"log-{rank}.txt").exists():
                log = _tail(work / f"log-{rank}.txt")
                detail = f"; its output:\n{log}" if log else ""
            else:   # e.g. fn could not be imported: the error went to the caller's stderr
                detail = " before it could run fn (see the standard error output)"
            # Without a report of its own, a process died first (a crash) or was stopped by us.
            when = float("-inf") if rank == first else float("inf")
            reports[rank] = {"time": when, "traceback": f"process {how}{detail}",
                             "type": "ProcessExited", "message": f"process {how}",
                             "peer": False, "exception": None}
    # The culprit: the first rank to fail on its own. Ranks that raised PeerError, or
    # failed later (a broken connection to the culprit), or were stopped by us come after.
    culprits = [r for r, rep in reports.items() if not rep["peer"]] or list(reports)
    rank = min(culprits, key=lambda r: (reports[r]["time"], r))
    main = reports[rank]
    others = [f"  rank {r}: {rep['type']}: {rep['message']}"
              for r, rep in sorted(reports.items()) if r != rank]
    message = (f"rank {rank} of {world_size} failed with {main['type']}: {main['message']}\n\n"
               f"Traceback from rank {rank}:\n{main['traceback'].rstrip()}")
    if others:
        message += "\n\nOther ranks that failed:\n" + "\n".join(others)
    error = WorkerError(message, rank, world_size,
                        {r: rep["traceback"] for r, rep in reports.items()})
    if main["exception"] is not None:
        try:
            error.__cause__ = pickle.loads(main["exception"])
        except Exception:               # noqa: BLE001 - the text above says it all
            pass
    return error


def run_processes(fn: Callable[..., Any], world_size: int, args: Sequence = (), *,
                  backend: str = "gloo", timeout: float = 120.0,
                  collective_timeout: float = 30.0, num_threads: Optional[int] = 1,
                  grace_period: float = 1.0, start_method: Optional[str] = None) -> List[Any]:
    r"""Run ``fn(rank, world_size, *args)`` on ``world_size`` local processes in one group.

    Each process joins the default process group (``backend`` over
    127.0.0.1, a free port), calls ``fn``, waits at a barrier for the others
    and returns ``fn``'s result (anything :func:`torch.save` can store).

    Parameters
    ----------
    fn : callable
        ``fn(rank, world_size, *args)``, defined at the top level of an importable
        module (each process imports it).
    world_size : int
        Number of processes, :math:`\geq 1`.
    args : sequence, default ()
        Extra arguments, pickled once per process.
    backend : str, default "gloo"
        ``"gloo"`` runs on CPUs; ``"nccl"`` needs one GPU per process.
    timeout : float, default 120
        Seconds for the whole run, start-up included; then every process is
        stopped and ``TimeoutError`` raised.
    collective_timeout : float, default 30
        The group's ``timeout``: a collective operation (or the rendezvous)
        that waits longer raises on its rank.
    num_threads : int or None, default 1
        ``torch.set_num_threads`` in every process (``None``: torch's default).
        One thread each keeps processes from competing for the same cores.
    grace_period : float, default 1
        After a rank fails, seconds the others get to finish reporting before
        they are terminated.
    start_method : {"forkserver", "spawn"}, optional
        How the processes are started. Default "forkserver" where it exists
        (Linux, macOS): a server process imports torch once, and every later
        process is a copy of it, started in milliseconds instead of the second
        or two an import of torch takes. Elsewhere "spawn": a fresh interpreter.
        Both work in notebooks ("fork" is refused: a copy of a process that has
        run torch code can deadlock). Processes forked by the server inherit
        the environment variables of the moment it started (the first run).

    Returns
    -------
    list, length ``world_size``
        ``fn``'s return value on each rank, in rank order.

    Raises
    ------
    WorkerError
        A rank raised (or its process died). The message carries the rank's
        traceback; ``__cause__`` is the original exception when it pickles.
    TimeoutError
        The run took longer than ``timeout``.

    Examples
    --------
    >>> import torch.distributed as dist
    >>> def total(rank, world_size):          # in an importable module
    ...     t = torch.tensor([rank + 1.0])
    ...     dist.all_reduce(t)
    ...     return t.item()
    >>> run_processes(total, 3)               # doctest: +SKIP
    [6.0, 6.0, 6.0]
    """
    if not (isinstance(world_size, int) and world_size >= 1):
        raise ValueError(f"world_size must be a positive int (got {world_size!r})")
    for name, value in (("timeout", timeout), ("collective_timeout", collective_timeout),
                        ("grace_period", grace_period)):
        if not value > 0:
            raise ValueError(f"{name} must be > 0 seconds (got {value!r})")
    ctx = _context(start_method)
    with tempfile.TemporaryDirectory(prefix="bnkit-dist-") as workdir:
        work = Path(workdir)
        port = find_free_port()
        processes = [ctx.Process(target=_worker, daemon=True,
                                 args=(rank, world_size, fn, tuple(args), port, backend,
                                       workdir, collective_timeout, num_threads))
                     for rank in range(world_size)]
        deadline = time.monotonic() + timeout
        try:
            for p in processes:
                p.start()
            running = {p.sentinel: p for p in processes}
            while running:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    alive = [r for r, p in enumerate(processes) if p.is_alive()]
                    _stop(processes, grace_period)
                    logs = "\n".join(f"rank {r} output:\n{_tail(work / f'log-{r}.txt')}"
                                     for r in alive if _tail(work / f"log-{r}.txt"))
                    raise TimeoutError(f"ranks {alive} of {world_size} did not finish within "
                                       f"{timeout:g} s and were stopped" +
                                       (f"\n{logs}" if logs else ""))
                for sentinel in multiprocessing.connection.wait(list(running), remaining):
                    p = running.pop(sentinel)
                    p.join()
                    if p.exitcode != 0:
                        # Give the others a moment to report their own errors, then stop them.
                        end = time.monotonic() + grace_period
                        for q in processes:
                            q.join(max(0.0, end - time.monotonic()))
                        _stop(processes, grace_period)
                        raise _failure(work, processes, world_size, processes.index(p))
            return [torch.load(work / f"result-{rank}.pt", weights_only=False)
                    for rank in range(world_size)]
        finally:
            _stop(processes, grace_period)
