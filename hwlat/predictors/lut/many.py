"""Many architectures of a space predicted from one table, in order, on the cores this process may use.

Each network is priced as `LUTPredictor.predict_graph` prices it alone (piece by piece,
`hwlat.predictors.lut.pieces`), so the numbers do not depend on how many processes share the work. With
more than one core and enough architectures, forked workers (which share the loaded table and
predictor with this process, copy-on-write) each predict chunks of the list in turn, and the
predictions come back in order. Python's cyclic collector is paused while predicting: the
predictions kept alive are what its full collections would walk, over and over, and pricing makes
no garbage cycles it would need to find.
"""

from __future__ import annotations

import gc
import multiprocessing
import signal
import sys
import threading
from typing import Any, Callable, Iterator, Sequence

from hwlat.device_tables.device import usable_cores

CHUNK = 100  # architectures a worker predicts at a time (each chunk comes back as one message)
# Modules whose thread pools a forked child could inherit in a state it cannot use: with any of them
# imported, the work stays in this process.
_NOT_FORK_SAFE = ("torch", "onnxruntime", "tensorflow", "ai_edge_litert", "jax")

_work: tuple | None = None  # (predictor, space, archs, keep) for forked workers
_forking = threading.Lock()  # held from setting `_work` until the workers have forked


def can_fork() -> bool:
    """Whether this process may fork workers: on Linux, with no runtime of its own threads loaded, and not
    itself a daemonic worker (a `multiprocessing.Pool`'s, which may have no children)."""
    return (sys.platform == "linux" and not multiprocessing.current_process().daemon
            and not any(m in sys.modules for m in _NOT_FORK_SAFE))


def fork_pool(processes: int) -> Any:
    """A pool of `processes` forked workers that leave Ctrl-C to this process, whose pool ends them
    (each printed a traceback of its own)."""
    return multiprocessing.get_context("fork").Pool(processes, signal.signal, (signal.SIGINT, signal.SIG_IGN))


def predict_archs(lut: Any, space: Any, archs: Sequence[Any], jobs: int | None = None,
                  keep: Callable[[Any], Any] | None = None) -> Iterator[Any]:
    """The predictions of `archs` of `space` by `lut` (`keep` of each, where given), in order.
    `jobs`: processes to use (default every usable core); one where there are few architectures
    (under 2 x `CHUNK`), off Linux, in a `multiprocessing.Pool` worker, or where a runtime with its
    own threads is loaded in this process (forking it is unsafe)."""
    global _work
    jobs = usable_cores() if jobs is None else jobs
    jobs = min(jobs, len(archs) // CHUNK)
    was = gc.isenabled()
    gc.disable()
    try:
        if jobs > 1 and can_fork():
            # What the predictor loads on first use (its regressors, for kernels no row prices: nearly
            # every network of a space has some), loaded here once for the workers to share.
            if lut.use_regressors and lut.regressors is None:
                lut.fit()
            yield _predict_one(lut, space, archs[0], keep)
            with _forking:  # the workers fork with this call's work, not another thread's
                _work = (lut, space, archs, keep)
                try:
                    pool = fork_pool(jobs)
                finally:
                    _work = None
            with pool:
                for chunk in pool.imap(_predict_chunk, range(1, len(archs), CHUNK)):
                    yield from chunk
        else:
            for a in archs:
                yield _predict_one(lut, space, a, keep)
    finally:
        if was:
            gc.enable()


def _predict_chunk(start: int) -> list[Any]:
    """In a forked worker (its collector paused as this process's was when it forked): the
    predictions of architectures start..start+CHUNK of the work."""
    lut, space, archs, keep = _work  # type: ignore[misc]
    return [_predict_one(lut, space, a, keep) for a in archs[start:start + CHUNK]]


def _predict_one(lut: Any, space: Any, arch: Any, keep: Callable[[Any], Any] | None) -> Any:
    p = lut.predict_graph(space.graph(arch), name=f"{space.name}:{space.key(arch)}")
    return p if keep is None else keep(p)
