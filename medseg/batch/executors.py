"""Executors: who runs the per-case pipeline, and where.

Both executors take the cases still to do and yield event dicts back to the
runner, which alone writes the manifest, the logs and the cohort tables:

``{"event": "worker_ready", "worker": w, "load_s": s}``
    a worker has loaded the model;
``{"event": "case_start", "case_id": id, "worker": w}``
    model work on the case begins (Ray: the case was handed to an actor);
``{"event": "case_end", "outcome": CaseOutcome}``
    the case finished, successfully or not.

:class:`LocalExecutor` runs ``workers`` workers on this machine: one thread in
this process for ``workers=1`` (the model already loaded by the runner is
reused), otherwise spawned processes that each load the model once. Every
worker has a prefetch thread that reads and decodes its next case while the
model works on the current one. A worker process that dies (out-of-memory
killer, segfault) costs only the case it was working on, which is recorded as
failed; a fresh worker takes over.

:class:`RayExecutor` runs one Ray actor per worker; each loads the model once
and handles two cases at a time: one being read while the other holds the
model. Failures inside an actor come back as failed outcomes; a dead actor is
replaced.
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import queue
import signal
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import Any

from medseg.batch.cases import Case
from medseg.batch.pipeline import CaseOutcome, Pipeline, PipelineSpec
from medseg.errors import ConfigError, ModelError

_POLL_S = 0.5


class _Link:
    """A worker's end of its pipe to the runner: sends from any thread, receives with a poll."""

    def __init__(self, conn: Connection) -> None:
        self.conn, self.lock = conn, threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        with self.lock:
            self.conn.send(message)

    def receive(self) -> Any:
        """The runner's next message; None when the runner has gone (pipe closed)."""
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            return None


def _worker_loop(pipeline: Pipeline, worker: int, link: _Link, output_dir: str) -> None:
    """Ask the runner for cases until it answers ``None``, reading one case ahead in a prefetch thread."""
    ahead: queue.Queue[Any] = queue.Queue(maxsize=1)

    def prefetch() -> None:
        while True:
            link.send({"event": "want", "worker": worker})
            if (case := link.receive()) is None:
                break
            ahead.put(pipeline.read(case))
        ahead.put(None)

    threading.Thread(target=prefetch, name=f"medseg-prefetch-{worker}", daemon=True).start()
    while (loaded := ahead.get()) is not None:
        if not loaded.error_type:  # model work begins (a case that could not be read gets none)
            link.send({"event": "case_start", "case_id": loaded.case.case_id, "worker": worker})
        link.send({"event": "case_end", "worker": worker, "outcome": pipeline.process(loaded, output_dir)})


def _die_with_parent(parent_pid: int) -> None:
    """Linux: have the kernel kill this worker when the runner dies (even by SIGKILL)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # the runner died before prctl took effect
        os._exit(1)


def _process_main(spec: PipelineSpec, torch_threads: int, worker: int, conn: Connection, output_dir: str,
                  parent_pid: int) -> None:
    """Entry point of a spawned worker process."""
    _die_with_parent(parent_pid)
    link = _Link(conn)
    t0 = time.perf_counter()
    try:
        pipeline = spec.build(torch_threads)
    except Exception as exc:  # noqa: BLE001 -- reported to the runner, which stops the batch
        link.send({"event": "worker_error", "worker": worker, "message": f"{type(exc).__name__}: {exc}"})
        return
    link.send({"event": "worker_ready", "worker": worker, "pid": os.getpid(), "load_s": time.perf_counter() - t0})
    _worker_loop(pipeline, worker, link, output_dir)


_THREAD_POOL_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")


@contextmanager
def _thread_pools_sized(n: int) -> Iterator[None]:
    """While a worker process starts: size the thread pools of OpenMP, BLAS and ITK to its ``n`` CPUs.

    Without this every worker process would start one thread per core in
    each library and N workers would oversubscribe the CPU N times. Values
    the user has set are kept.
    """
    saved = {k: os.environ.get(k) for k in _THREAD_POOL_ENV}
    for k in _THREAD_POOL_ENV:
        os.environ.setdefault(k, str(n))
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class LocalExecutor:
    """Run cases on this machine with ``workers`` workers (a thread of this process for 1, processes beyond).

    Each worker talks to the runner through its own pipe (a worker killed in
    the middle of a message can only break its own pipe). Workers ask for
    their next case when they start reading it; the runner hands cases out
    one by one, so it always knows which cases a worker holds.

    Parameters
    ----------
    pipeline : Pipeline
        The runner's pipeline; used directly by a single worker without a case timeout.
    spec : PipelineSpec
        What each worker process builds (its model must pickle when it is an object).
    workers : int
        Number of workers; each process gets ``cpu_count // workers`` torch threads.
    case_timeout_s : float, optional
        A case that holds its worker longer than this (reading included) fails
        with ``CaseTimeout``: its worker process is killed and a fresh one takes
        over. Workers are then always processes (a thread cannot be stopped).
    """

    name = "local"

    def __init__(self, pipeline: Pipeline, spec: PipelineSpec, workers: int = 1,
                 case_timeout_s: float | None = None) -> None:
        if workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {workers}")
        if case_timeout_s is not None and not case_timeout_s > 0:
            raise ConfigError(f"must be a positive number of seconds, got {case_timeout_s}", "--case-timeout")
        self.pipeline, self.spec, self.workers, self.case_timeout_s = pipeline, spec, workers, case_timeout_s

    def run(self, cases: Sequence[Case], output_dir: str) -> Iterator[dict[str, Any]]:
        """Process ``cases``; yields events as they happen (see the module docstring)."""
        if not cases:
            return
        in_process = self.workers == 1 and self.case_timeout_s is None
        ctx = mp.get_context("spawn")
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        handles: dict[int, Any] = {}
        links: dict[int, Connection] = {}  # the runner's end of each worker's pipe
        held: dict[int, list[Case]] = {}  # cases handed to a worker, oldest first: [current, read-ahead]
        started: dict[int, bool] = {}
        since: dict[int, float] = {}  # when each worker's current case (held[w][0]) became current
        pending = deque(cases)
        losses: Counter[str] = Counter()

        def spawn(w: int) -> None:
            ours, theirs = ctx.Pipe()
            if in_process:
                handles[w] = threading.Thread(target=_worker_loop, name=f"medseg-worker-{w}", daemon=True,
                                              args=(self.pipeline, w, _Link(theirs), output_dir))
            else:
                handles[w] = ctx.Process(target=_process_main, name=f"medseg-worker-{w}", daemon=True,
                                         args=(self.spec, threads, w, theirs, output_dir, os.getpid()))
            with _thread_pools_sized(threads):
                handles[w].start()
            if not in_process:
                theirs.close()  # the worker holds its end now: its death closes the pipe
            links[w], held[w], started[w] = ours, [], False

        n = min(self.workers, len(cases))
        for w in range(n):
            spawn(w)
        if in_process:
            yield {"event": "worker_ready", "worker": 0, "pid": os.getpid(), "load_s": 0.0}
        remaining, next_worker = len(cases), n
        try:
            while remaining:
                by_link = {id(c): w for w, c in links.items()}
                ready = mp_connection.wait(list(links.values()), timeout=_POLL_S)
                gone = [w for w, h in handles.items() if not h.is_alive() and w in links]
                for conn in ready:
                    w = by_link[id(conn)]
                    try:
                        ev = conn.recv()
                    except (EOFError, OSError):  # the worker exited or died
                        gone.append(w)
                        continue
                    kind = ev["event"]
                    if kind == "worker_error":
                        raise ModelError(f"a worker could not load the model: {ev['message']}")
                    if kind == "want":
                        case = pending.popleft() if pending else None
                        if case is not None:
                            held[w].append(case)
                            if len(held[w]) == 1:
                                since[w] = time.monotonic()
                        conn.send(case)
                        continue
                    if kind == "case_start":
                        started[w] = True
                    elif kind == "case_end":
                        remaining -= 1
                        started[w] = False
                        held[w].pop(0)
                        since[w] = time.monotonic()
                    yield ev
                for w in self._overdue(held, since, handles):
                    handles[w].kill()  # its pipe closes: handled below as a lost worker, the case as timed out
                    yield self._timed_out(w, held[w].pop(0), started[w])
                    remaining -= 1
                    started[w] = False
                    gone.append(w)
                for w in dict.fromkeys(gone):
                    handle = handles.pop(w)
                    links.pop(w).close()
                    if isinstance(handle, mp.process.BaseProcess):
                        handle.join(timeout=5)
                    lost = held.pop(w)
                    if lost:  # a crash, not the normal exit after the last case
                        yield from self._lost(w, handle, lost, started[w], pending, losses)
                    remaining = len(pending) + sum(len(h) for h in held.values())
                    if pending:  # a worker that exits normally got no case: pending is empty then
                        spawn(next_worker)
                        next_worker += 1
                if remaining and not links:
                    raise ModelError("every batch worker exited before the batch was done")
        finally:
            for conn in links.values():
                conn.close()  # a worker still waiting for a case sees the pipe close and stops
            for h in handles.values():
                if isinstance(h, mp.process.BaseProcess) and h.is_alive():
                    h.terminate()
                    h.join(timeout=5)

    def _overdue(self, held: dict[int, list[Case]], since: dict[int, float], handles: dict[int, Any]) -> list[int]:
        """Workers whose current case has run past ``case_timeout_s``."""
        if self.case_timeout_s is None:
            return []
        now = time.monotonic()
        return [w for w, cases in held.items()
                if cases and w in handles and now - since.get(w, now) > self.case_timeout_s]

    def _timed_out(self, w: int, case: Case, started: bool) -> dict[str, Any]:
        """The failed outcome of a case stopped by the timeout (in the model stages once started, else reading)."""
        return {"event": "case_end", "worker": w, "outcome": CaseOutcome(
            case.case_id, ok=False, error_type="CaseTimeout", stage="segment" if started else "read",
            message=f"{case.source}: still running after --case-timeout {self.case_timeout_s:g} s; "
                    "its worker was stopped")}

    @staticmethod
    def _lost(w: int, handle: Any, lost: list[Case], started: bool, pending: deque[Case],
              losses: Counter[str]) -> Iterator[dict[str, Any]]:
        """A worker died (OOM killer, segfault): the case it was working on fails; a case it had only read
        ahead goes back to the queue once, and fails if it is lost a second time."""
        for i, case in enumerate(lost):
            losses[case.case_id] += 1
            if (i == 0 and started) or losses[case.case_id] > 1:
                yield {"event": "case_end", "worker": w, "outcome": CaseOutcome(
                    case.case_id, ok=False, error_type="WorkerDied", stage="segment" if i == 0 and started else "read",
                    message=f"{case.source}: worker process died (exit code {getattr(handle, 'exitcode', None)}), "
                            "e.g. killed for lack of memory")}
            else:
                pending.appendleft(case)


class RayExecutor:
    """Run cases on a Ray cluster: one actor per worker, each loading the model once.

    Parameters
    ----------
    model : path-like or model object
        What each actor loads; a path must be readable on every node.
    workers : int
        Number of actors.
    address : str, optional
        Ray cluster address (``"auto"``, ``"ray://head:10001"``, ``"head:6379"``);
        None starts a local Ray instance on this machine.
    gpus_per_worker : float
        GPUs reserved per actor (0: CPU actors).
    cpus_per_worker : float
        CPUs reserved per actor.
    """

    name = "ray"

    def __init__(self, model: Any, workers: int = 1, *, address: str | None = None,
                 gpus_per_worker: float = 0.0, cpus_per_worker: float = 1.0) -> None:
        if workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {workers}")
        self.model, self.workers, self.address = model, workers, address
        self.gpus_per_worker, self.cpus_per_worker = gpus_per_worker, cpus_per_worker
        self.startup_s = 0.0

    def _connect(self) -> Any:
        try:
            import ray
        except ImportError as exc:
            raise ConfigError("the Ray executor needs Ray: pip install 'medseg[ray]'") from exc
        if not ray.is_initialized():
            t0 = time.perf_counter()
            kwargs: dict[str, Any] = {"address": self.address, "log_to_driver": False}
            if self.address is None:  # a new local instance, sized for the actors; no dashboard
                kwargs.update(num_cpus=max(self.workers * self.cpus_per_worker, 1), include_dashboard=False)
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ConfigError(f"cannot connect to the Ray cluster at {self.address or 'a new local instance'}: {exc}") from exc
            self.startup_s = time.perf_counter() - t0
        return ray

    def run(self, cases: Sequence[Case], output_dir: str) -> Iterator[dict[str, Any]]:
        """Process ``cases`` on Ray actors; yields events as results arrive."""
        if not cases:
            return
        ray = self._connect()
        actor_cls = ray.remote(_RayCaseActor).options(
            num_cpus=self.cpus_per_worker, num_gpus=self.gpus_per_worker, max_concurrency=2)
        n = min(self.workers, len(cases))
        threads = max(1, int(self.cpus_per_worker))
        actors = {w: actor_cls.remote(self.model, threads) for w in range(n)}
        t0 = time.perf_counter()
        try:
            ray.get([a.ready.remote() for a in actors.values()])
        except ray.exceptions.RayActorError as exc:
            raise ModelError(f"a Ray worker could not load the model: {' '.join(str(exc).split())[:500]}") from exc
        yield {"event": "worker_ready", "worker": -1, "load_s": time.perf_counter() - t0, "ray_init_s": self.startup_s}
        pending: dict[Any, tuple[int, Case]] = {}
        todo = list(reversed(cases))
        next_worker = n

        def submit(w: int) -> dict[str, Any]:
            case = todo.pop()
            pending[actors[w].process.remote(case, output_dir)] = (w, case)
            return {"event": "case_start", "case_id": case.case_id, "worker": w}

        for _ in range(2):  # one case per actor first, then a second one each to read while the first runs
            for w in actors:
                if todo:
                    yield submit(w)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            ref = done[0]
            w, case = pending.pop(ref)
            try:
                outcome = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                outcome = CaseOutcome(case.case_id, ok=False, error_type="WorkerDied", stage="segment",
                                      message=f"{case.source}: Ray actor died ({' '.join(str(exc).split())[:300]})")
                if w in actors:  # replace the dead actor once; its other in-flight case fails the same way
                    del actors[w]
                    actors[next_worker] = actor_cls.remote(self.model, threads)
                    w, next_worker = next_worker, next_worker + 1
            except ray.exceptions.RayTaskError as exc:  # a bug outside the pipeline's own error handling
                outcome = CaseOutcome(case.case_id, ok=False, error_type=type(exc.cause).__name__, stage="segment",
                                      message=f"{case.source}: {' '.join(str(exc.cause).split())[:300]}")
            yield {"event": "case_end", "worker": w, "outcome": outcome}
            if todo and w in actors:
                yield submit(w)
        for a in actors.values():
            ray.kill(a)


class _RayCaseActor:
    """A Ray actor holding one loaded pipeline; reads outside the model lock so two calls overlap."""

    def __init__(self, spec: PipelineSpec, torch_threads: int) -> None:
        self.pipeline = spec.build(torch_threads)
        self.lock = threading.Lock()

    def ready(self) -> bool:
        """Returns once the model is loaded (raises the load error otherwise)."""
        return True

    def process(self, case: Case, output_dir: str) -> CaseOutcome:
        loaded = self.pipeline.read(case)
        with self.lock:
            return self.pipeline.process(loaded, output_dir)
