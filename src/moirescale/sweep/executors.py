"""Executors: where jobs run. Both expose the same four calls to the driver loop in :mod:`.runner`:
``submit(spec) -> handle``, ``wait(handles, timeout) -> finished handles``, ``result(handle) -> rows``
(raises the job's error), ``close()``. Retries, bookkeeping and the results table live in the driver, so a
sweep behaves the same on one machine and on a cluster.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import socket
from collections.abc import Iterable
from typing import Any

from moirescale.errors import UserError
from moirescale.sweep.worker import DEFAULT_TRAIN_FN, init_pool_worker, train_job
from moirescale.train.spec import TrainSpec


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class LocalExecutor:
    """A process pool on this machine: ``workers`` processes with ``cores // workers`` torch threads each, or
    one worker per GPU when CUDA is there (device ``cuda:i`` round-robin).

    Processes are spawned (not forked: torch and fork do not mix) and die with the driver (PDEATHSIG).
    """

    name = "local"

    def __init__(
        self,
        store_path: str,
        rundir: str,
        workers: int | None = None,
        device: str = "auto",
        train_fn: str = DEFAULT_TRAIN_FN,
    ):
        self.store_path, self.rundir, self.train_fn = store_path, rundir, train_fn
        n_gpu = _cuda_devices() if device in ("auto", "cuda") else 0
        if device == "cuda" and n_gpu == 0:
            raise UserError("--device cuda asked, but torch sees no CUDA device")
        cores = cpu_count()
        if n_gpu:
            self.workers = workers or n_gpu
            self.devices = [f"cuda:{i % n_gpu}" for i in range(self.workers)]
        else:
            self.workers = workers or cores
            self.devices = ["cpu"]
        self.threads = max(1, cores // self.workers)
        self._n = 0
        self._pool = self._new_pool()

    def describe(self) -> str:
        dev = f"{len(set(self.devices))} GPU(s)" if self.devices[0] != "cpu" else "CPU"
        return f"local pool: {self.workers} worker(s) x {self.threads} thread(s), {dev}"

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=mp.get_context("spawn"),
            initializer=init_pool_worker,
            initargs=(self.threads,),
        )

    def submit(self, spec: TrainSpec) -> cf.Future:
        device = self.devices[self._n % len(self.devices)]
        self._n += 1
        fut = self._pool.submit(train_job, spec, self.store_path, self.rundir, device, self.train_fn)
        fut.device = device  # type: ignore[attr-defined]
        return fut

    def wait(self, handles: Iterable[cf.Future], timeout: float) -> list[cf.Future]:
        done, _ = cf.wait(list(handles), timeout=timeout, return_when=cf.FIRST_COMPLETED)
        return list(done)

    def result(self, handle: cf.Future) -> list[dict[str, Any]]:
        try:
            return handle.result()
        except cf.process.BrokenProcessPool:
            # A worker died hard (OOM killer, segfault): every job in flight is lost; start a fresh pool and
            # let the driver count an attempt for each.
            self._restart()
            raise

    def _restart(self) -> None:
        if getattr(self._pool, "_broken", False):
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()

    def close(self, kill: bool = False) -> None:
        if kill:  # do not wait for running trainings (Ctrl-C): end the workers we started
            for p in list((getattr(self._pool, "_processes", None) or {}).values()):
                p.kill()
        self._pool.shutdown(wait=not kill, cancel_futures=True)


def _cuda_devices() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - a broken CUDA install means: use the CPU
        return 0


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a HOST:PORT nobody listens on (Ray itself retries for minutes before giving up)."""
    if address in ("auto", "local") or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot reach the Ray cluster at {address} ({exc}); start one with "
                        "`ray start --head --port=6379` or check --address") from None


# Default Ray resources per family when the grid gives none. Small FCN ensembles share a GPU four ways.
RAY_GPU_SHARE = {"fcn": 0.25, "resnet18": 0.5, "vit": 0.5, "features": 0.25}


def _ray_train_job(spec: TrainSpec, store_path: str, rundir: str, threads: int, train_fn: str) -> list[dict]:
    """A Ray task: pick the device Ray gave us, set torch threads to the task's CPUs, train."""
    import ray
    import torch

    torch.set_num_threads(max(1, threads))
    device = "cuda" if ray.get_gpu_ids() else "cpu"
    return train_job(spec, store_path, rundir, device, train_fn)


class RayExecutor:
    """The same jobs as Ray tasks (``num_cpus``/``num_gpus`` per task, fractional GPUs for small models).

    ``address`` joins an existing cluster (``ray start --head`` ...); without it a local cluster is started
    with ``workers`` CPUs. The store and RUNDIR must be on a filesystem every node sees (the tasks write
    checkpoints); result rows travel back to the driver, which alone writes the results table.
    """

    name = "ray"

    def __init__(
        self,
        store_path: str,
        rundir: str,
        address: str | None = None,
        workers: int | None = None,
        train_fn: str = DEFAULT_TRAIN_FN,
        resources: dict[str, dict[str, float | None]] | None = None,
        object_store_mb: int = 100,
    ):
        try:
            import ray
        except ImportError:
            raise UserError(
                "the Ray executor needs the ray package: pip install 'moirescale[ray]' "
                "(or use --executor local)"
            ) from None
        self.ray = ray
        self.store_path, self.rundir, self.train_fn = store_path, rundir, train_fn
        self.resources = resources or {}
        self.started_here = False
        if not ray.is_initialized():
            if address:
                _check_reachable(address)
                try:
                    ray.init(address=address, log_to_driver=False, include_dashboard=False)
                except (ConnectionError, RuntimeError, ValueError) as exc:
                    hint = ""
                    if "auth" in repr(exc.__cause__ or exc).lower() or not os.environ.get("RAY_AUTH_MODE"):
                        # Ray >= 2.5x: `ray start` turns token authentication on; the driver must opt in.
                        hint = (" (if the cluster was started with `ray start`, it may need token "
                                "authentication: export RAY_AUTH_MODE=token and make ~/.ray/auth_token the "
                                "cluster's)")
                    raise UserError(f"cannot connect to the Ray cluster at {address}: {exc}{hint}") from None
            else:
                ray.init(
                    num_cpus=workers or cpu_count(),
                    include_dashboard=False,
                    object_store_memory=object_store_mb * 2**20,
                    log_to_driver=False,
                    configure_logging=False,
                )
                self.started_here = True
        total = ray.cluster_resources()
        self.n_cpu = float(total.get("CPU", 0))
        self.n_gpu = float(total.get("GPU", 0))
        self._remote = ray.remote(max_retries=0)(_ray_train_job)  # the driver retries, as with the local pool

    def describe(self) -> str:
        where = "a local Ray cluster" if self.started_here else "the Ray cluster"
        return f"{where}: {self.n_cpu:g} CPU(s), {self.n_gpu:g} GPU(s)"

    def task_resources(self, spec: TrainSpec) -> tuple[float, float]:
        """(num_cpus, num_gpus) of one job: the grid's ``resources`` or the family default."""
        r = self.resources.get(spec.grid, {})
        num_gpus = r.get("num_gpus")
        if num_gpus is None:
            num_gpus = RAY_GPU_SHARE.get(spec.arch, 1.0) if self.n_gpu > 0 else 0.0
        num_cpus = r.get("num_cpus") or 1.0
        return float(num_cpus), float(num_gpus)

    def submit(self, spec: TrainSpec) -> Any:
        num_cpus, num_gpus = self.task_resources(spec)
        return self._remote.options(num_cpus=num_cpus, num_gpus=num_gpus).remote(
            spec, self.store_path, self.rundir, max(1, int(num_cpus)), self.train_fn
        )

    def wait(self, handles: Iterable[Any], timeout: float) -> list[Any]:
        handles = list(handles)
        if not handles:
            return []
        ready, _ = self.ray.wait(handles, num_returns=1, timeout=timeout)
        if ready:  # collect everything else that is finished too
            ready, _ = self.ray.wait(handles, num_returns=len(handles), timeout=0)
        return ready

    def result(self, handle: Any) -> list[dict[str, Any]]:
        try:
            return self.ray.get(handle)
        except self.ray.exceptions.RayTaskError as exc:  # re-raise the task's own exception
            cause = exc.as_instanceof_cause() if hasattr(exc, "as_instanceof_cause") else exc
            raise cause from None

    def close(self, kill: bool = False) -> None:
        if self.started_here:
            self.ray.shutdown()
