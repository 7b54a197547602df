"""Executors: where jobs run. Both expose the same four calls to the driver loop in :mod:`.runner`:
``submit(spec) -> handle``, ``wait(handles, timeout) -> finished handles``, ``result(handle) -> rows``
(raises the job's error), ``close()``. Retries, bookkeeping and the results table live in the driver, so a
sweep behaves the same on one machine and on a cluster.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import multiprocessing as mp
import os
import socket
from collections.abc import Iterable, Iterator
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


RAY_PROBE_S = 5.0  # how long joining a cluster may wait for its first answer
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # + empty SETTINGS


def ray_address(address: str | None) -> tuple[str | None, str]:
    """The cluster to join and how it was named: ``--address``, else Ray's own ``RAY_ADDRESS`` (Ray joins
    that cluster whenever it is set, so it is honoured, and named in every message), else None (start a
    local cluster)."""
    if address:
        return address, "--address"
    env = os.environ.get("RAY_ADDRESS", "").strip()
    return (env, "RAY_ADDRESS") if env else (None, "")


def _check_reachable(address: str, named: str = "--address", timeout: float = RAY_PROBE_S) -> None:
    """Fail fast, in at most ``timeout`` seconds, on a HOST:PORT that is not a Ray cluster's GCS: nobody
    listening, or a listener that does not answer gRPC's HTTP/2 preface with a SETTINGS frame (Ray itself
    retries such an address for many minutes, printing a warning every few seconds)."""
    if address in ("auto", "local") or "://" in address or ":" not in address:
        return  # Ray finds or names these itself
    if os.environ.get("RAY_USE_TLS", "0") not in ("", "0"):
        return  # a TLS cluster does not answer a plain-text preface
    host, _, port = address.rpartition(":")
    hint = f"start one with `ray start --head --port=6379` or check {named}"
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(_H2_PREFACE)
            head = b""
            while len(head) < 9:
                chunk = sock.recv(9 - len(head))
                if not chunk:
                    break
                head += chunk
    except TimeoutError:
        raise UserError(f"the Ray cluster at {address} ({named}) did not answer in {timeout:g} s; "
                        f"{hint}") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot reach the Ray cluster at {address} ({named}: {exc}); {hint}") from None
    if len(head) < 9 or head[3] != 4:  # a gRPC server's first frame is SETTINGS (type 4)
        raise UserError(f"{address} ({named}) is not a Ray cluster (it does not speak gRPC); {hint}")


@contextlib.contextmanager
def _quiet_ray() -> Iterator[None]:
    """Ray's Python and C++ logging silenced while joining (the failure becomes our one line)."""
    saved = os.environ.get("RAY_BACKEND_LOG_LEVEL")
    os.environ["RAY_BACKEND_LOG_LEVEL"] = "fatal"
    ray_log = logging.getLogger("ray")
    level = ray_log.level
    ray_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        ray_log.setLevel(level)
        if saved is None:
            os.environ.pop("RAY_BACKEND_LOG_LEVEL", None)
        else:
            os.environ["RAY_BACKEND_LOG_LEVEL"] = saved


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
        self.joined = ""
        address, named = ray_address(address)
        if not ray.is_initialized():
            if address:
                _check_reachable(address, named)
                try:
                    with _quiet_ray():
                        ray.init(address=address, log_to_driver=False, include_dashboard=False,
                                 configure_logging=False)
                except (ConnectionError, RuntimeError, ValueError) as exc:
                    hint = ""
                    if "auth" in repr(exc.__cause__ or exc).lower() or not os.environ.get("RAY_AUTH_MODE"):
                        # Ray >= 2.5x: `ray start` turns token authentication on; the driver must opt in.
                        hint = (" (if the cluster was started with `ray start`, it may need token "
                                "authentication: export RAY_AUTH_MODE=token and make ~/.ray/auth_token the "
                                "cluster's)")
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    raise UserError(f"cannot connect to the Ray cluster at {address} ({named}): {first}{hint}"
                                    ) from None
                self.joined = f" at {address} ({named})"
            else:
                ray.init(
                    address="local",  # a new local cluster, whatever the environment says
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
        where = "a local Ray cluster" if self.started_here else f"the Ray cluster{self.joined}"
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
