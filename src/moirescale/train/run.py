"""Run a :class:`TrainSpec`: every realization of one grid point, as an ensemble where that pays.

Public entry points: :func:`run_spec` (store -> rows + checkpoints), :func:`train_arrays` (in-memory data ->
results; what the tests and the schedule study use), :func:`load_checkpoint`.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moirescale import rundir as rd
from moirescale.data.torch_data import store_channels
from moirescale.errors import UserError
from moirescale.fsio import atomic_path, real_dir
from moirescale.labels import LabelScaler
from moirescale.models import FCN, create_model
from moirescale.train.data import TrainData, load_train_data
from moirescale.train.engines import FCNEnsemble, ModuleEngine
from moirescale.train.loop import NetResult, Tensors, fit
from moirescale.train.precision import check_precision, images_for, matmul_mode
from moirescale.train.resolve import ResolvedSpec, resolve
from moirescale.train.resume import RESUME_EVERY_S, ResumeFile, resume_path
from moirescale.train.rows import results_row
from moirescale.train.spec import TrainSpec, realization_seed, run_id

SMALL_STEP_FLOPS = 2e8  # below this many FLOPs per step a CPU trains single-threaded (see _threads)
CHANNELS_LAST_ARCHS = ("resnet18", "vit")  # convolutional stems: NHWC is oneDNN's and cuDNN's fast layout
ENSEMBLE_PARAM_LIMIT = 1 << 25  # stacked parameters per ensemble chunk (x ~6 buffers: W, grad, m, v, best)


@dataclass
class Trained:
    """One trained network: its realization, outcome, best weights (None if diverged) and size."""

    realization: int
    result: NetResult
    state: dict[str, torch.Tensor] | None
    n_params: int
    wall_time_s: float


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise UserError(f"unknown device {device!r}; use auto, cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' asked for, but no CUDA device is available")
    return dev


@contextmanager
def _threads(dev: torch.device, step_flops: float):
    """Train small networks single-threaded on the CPU.

    A step of a small FCN is a few tiny kernels; with 2 threads their OpenMP hand-offs cost more than the
    arithmetic (15x slower measured on a busy 2-core machine). Big steps keep torch's thread count.
    """
    old = torch.get_num_threads()
    if dev.type == "cpu" and step_flops < SMALL_STEP_FLOPS:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def use_ensemble(spec: TrainSpec, ensemble: bool | str = "auto") -> bool:
    if ensemble == "auto":
        return spec.arch == "fcn" and len(spec.realizations) > 1
    return bool(ensemble) and spec.arch == "fcn"


def ensemble_groups(rs: ResolvedSpec, ensemble: bool | str = "auto") -> list[list[int]]:
    """The networks trained together, as positions in ``rs.spec.realizations``: ensembles of at most
    :data:`ENSEMBLE_PARAM_LIMIT` stacked parameters, or one network at a time (the one chunking rule)."""
    n = len(rs.spec.realizations)
    if not use_ensemble(rs.spec, ensemble):
        return [[j] for j in range(n)]
    per = max(1, ENSEMBLE_PARAM_LIMIT // max(1, rs.n_params))
    return [list(range(i, min(i + per, n))) for i in range(0, n, per)]


def train_arrays(
    spec: TrainSpec,
    data: TrainData,
    subsets: list[np.ndarray] | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    ensemble: bool | str = "auto",
    progress: Any = None,
    resolved: ResolvedSpec | None = None,
    resume_dir: Path | None = None,
    resume_every: float = RESUME_EVERY_S,
) -> list[Trained]:
    """Train every realization of ``spec`` on in-memory ``data``.

    Parameters
    ----------
    subsets : rows of ``data.x_train`` to train on: one array shared by all realizations, or one per
        realization. Default: :meth:`ResolvedSpec.subsets` over all of ``data.x_train``.
    ensemble : "auto" (FCNs with several realizations), True or False (one network after another).
    progress : a callable ``(done_steps_delta, description)`` or None.
    resolved : ``spec`` resolved for ``data.in_shape`` (:func:`moirescale.train.resolve.resolve`); default:
        resolved here.
    resume_dir : a folder for the training state of each group of networks (saved at least ``resume_every``
        seconds apart; a killed run started again continues from it, :mod:`moirescale.train.resume`). The
        caller deletes the files (:func:`discard_resume`); None: nothing saved.
    """
    rs = resolved if resolved is not None else resolve(spec, data.in_shape, sliced=True,
                                                       label_names=data.label_names)
    cols = list(rs.columns)
    n_params = rs.n_params
    if subsets is None:
        subsets = rs.subsets(len(data.x_train))
    reals = list(spec.realizations)
    batch_seeds = list(rs.batch_seeds)
    if len(subsets) != len(batch_seeds):
        raise ValueError("one subset per realization is needed when shared_data is False (one when True)")
    if spec.arch == "features":  # closed-form ridge on physics features, no gradient loop
        from moirescale.train.features import fit_features

        return fit_features(spec, data, subsets, cols, device)
    cfg = rs.schedule
    dev = torch.device(device)
    check_precision(spec.precision, dev)
    tensors = Tensors.from_data(data, cols, dev, dtype, images_for(spec.precision))

    def build(r: int) -> torch.nn.Module:
        torch.manual_seed(realization_seed(spec, r))  # the realization's initialisation
        return create_model(spec.arch, data.in_shape, len(cols), **spec.model_kw).to(dev, dtype)

    out: list[Trained] = []
    for g in ensemble_groups(rs, ensemble):
        t0 = time.perf_counter()
        models = [build(reals[j]) for j in g]
        if len(g) > 1 or (spec.arch == "fcn" and ensemble is True):
            engine: Any = FCNEnsemble(
                [m for m in models if isinstance(m, FCN)], spec.optimizer, spec.weight_decay, spec.precision
            )
        else:
            engine = ModuleEngine(
                models[0], spec.optimizer, spec.weight_decay, spec.precision,
                channels_last=spec.arch in CHANNELS_LAST_ARCHS,
            )
        g_sub = subsets if spec.shared_data else [subsets[j] for j in g]
        g_seed = batch_seeds if spec.shared_data else [batch_seeds[j] for j in g]
        last = [0]

        def on_eval(step: int, n_active: int, train_loss: float, val_loss: float, g=g, last=last) -> None:
            if progress is not None:
                progress(
                    step - last[0],
                    f"nets {g[0] + 1}-{g[-1] + 1}/{len(reals)} active {n_active} "
                    f"epoch {step // max(1, rs.steps_per_epoch)} "
                    f"loss {train_loss:.3g} val {val_loss:.3g}",
                )
            last[0] = step

        rf = None
        if resume_dir is not None:
            ids = [run_id(spec, reals[j]) for j in g]
            key = "|".join([type(engine).__name__, *ids])
            rf = ResumeFile(resume_path(resume_dir, ids[0]), key, resume_every)
        with _threads(dev, 6.0 * n_params * spec.batch_size * len(g)), matmul_mode(spec.precision):
            results = fit(engine, tensors, g_sub, g_seed, spec.batch_size, cfg, spec.noise_train, on_eval, rf)
        if progress is not None:
            progress(cfg.budget - last[0], "")
        wall = (time.perf_counter() - t0 + (rf.prior_s if rf is not None else 0.0)) / len(g)
        for j, res in zip(g, results, strict=True):
            state = (
                engine.best_state(0 if len(g) == 1 and isinstance(engine, ModuleEngine) else g.index(j))
                if res.status == "ok"
                else None
            )
            out.append(Trained(reals[j], res, state, n_params, wall))
    return out


def _save_checkpoint(rundir: Path, rel: str, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write ``RUNDIR/rel`` (``checkpoints/<run_id>.pt``); the folder is checked by ``fsio.real_dir`` at each
    write, so a link planted at ``RUNDIR/checkpoints`` while the run trains is refused, not followed."""
    rundir.mkdir(parents=True, exist_ok=True)
    folder, name = Path(rel).parent, Path(rel).name
    path = real_dir(rundir, *folder.parts) / name
    with atomic_path(path) as tmp:  # a killed run never leaves a half-written checkpoint
        torch.save({"state_dict": state, "meta": meta}, tmp)


def run_spec(
    spec: TrainSpec,
    store_path: str | os.PathLike[str],
    rundir: str | os.PathLike[str],
    device: str = "auto",
    progress: bool = True,
    checkpoints: str = "all",
    resume_every: float = RESUME_EVERY_S,
    on_store: tuple[ResolvedSpec, list[np.ndarray], dict[str, Any]] | None = None,
    keep_states: bool = False,
) -> list[dict[str, Any]]:
    """Train every realization of ``spec`` on the store and return one results row per network.

    Saves each successful network's best weights to ``rundir/checkpoints/<run_id>.pt`` (the default, "all"),
    only the realization with the lowest validation MSE (``"best"``), or none (``"none"``). The caller appends
    the rows (:func:`moirescale.results.append_rows`). A long training saves its state every
    ``resume_every`` seconds to ``rundir/checkpoints/<run_id>.resume.pt``: the same call after a kill
    continues from there (:mod:`moirescale.train.resume`); the files go once the checkpoints are written,
    or, with ``keep_states``, when the caller has recorded the rows (:func:`discard_resume`): a kill between
    the two then costs nothing (the sweep and ``moirescale train`` do this).
    ``on_store``: what :func:`resolve_on_store` returned for ``spec`` and this store, if the caller has it.
    """
    if checkpoints not in ("all", "best", "none"):
        raise UserError(f"checkpoints must be all, best or none, got {checkpoints!r}")
    dev = resolve_device(device)
    rs, subsets, manifest = on_store or resolve_on_store(spec, store_path)  # gather
    data, local = load_train_data(store_path, subsets, spec.channels)
    bar, report = _progress_bar(rs) if progress else (None, None)
    Path(rundir).mkdir(parents=True, exist_ok=True)
    states = real_dir(rundir, rd.CHECKPOINTS)  # where a killed run resumes from
    try:  # compute
        trained = train_arrays(spec, data, local, device=dev, progress=report, resolved=rs,
                               resume_dir=states, resume_every=resume_every)
    finally:
        if bar is not None:
            bar.stop()
    keep = _kept(trained, checkpoints)  # write
    rows = []
    for t in trained:
        rel = ""
        if t.realization in keep:
            rel = rd.checkpoint_rel(run_id(spec, t.realization))
            meta = _checkpoint_meta(rs, t, store_path, manifest)
            _save_checkpoint(Path(rundir), rel, t.state, meta)
        rows.append(results_row(rs, t.realization, dev.type, trained=t, checkpoint=rel))
    if not keep_states:
        discard_resume(spec, states)  # the checkpoints are written: the training states are no longer needed
    return rows


def discard_resume(spec: TrainSpec, folder: str | os.PathLike[str]) -> None:
    """Delete the training states :func:`train_arrays` may have saved for ``spec`` in ``folder`` (only
    files named after ``spec``'s own run ids: nothing else is touched)."""
    rd.discard_states(folder, [run_id(spec, r) for r in spec.realizations])


def resolve_on_store(
    spec: TrainSpec, store_path: str | os.PathLike[str]
) -> tuple[ResolvedSpec, list[np.ndarray], dict[str, Any]]:
    """Resolve ``spec`` against a store: the resolved spec, the training subsets (pool indices) and the
    store's manifest. UserError for a spec the store cannot serve (channels, pool size, empty splits)."""
    from moirescale.data.store import open_store

    store = open_store(store_path)
    try:
        rs = resolve(spec, store.image_shape, store_channels(store), pool=store.split_len("train"),
                     where=str(store_path), label_names=store.label_names)
        for split in ("val", "test"):
            if store.split_len(split) == 0:
                raise UserError(f"{store_path}: the {split} split is missing or empty")
        subsets = [store.subset_indices(spec.n_train, s) for s in rs.subset_seeds]
        return rs, subsets, dict(store.manifest)
    finally:
        store.close()


def _progress_bar(rs: ResolvedSpec) -> tuple[Any, Any]:
    """A started rich progress bar over every step the spec's groups may take, and its update callable."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    spec = rs.spec
    n_groups = len(ensemble_groups(rs))
    bar = Progress(
        TextColumn("[bold]train[/] {task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    task = bar.add_task(f"{spec.arch} {spec.target} N_D={spec.n_train}", total=rs.budget * n_groups)
    bar.start()

    def report(delta: int, desc: str) -> None:
        bar.update(task, advance=delta, **({"description": desc} if desc else {}))

    return bar, report


def _kept(trained: list[Trained], checkpoints: str) -> set[int]:
    """Realizations whose weights are saved: every ok one ("all"), the lowest validation MSE ("best") or
    none."""
    ok = [t for t in trained if t.state is not None]
    if checkpoints == "all":
        return {t.realization for t in ok}
    if checkpoints == "best" and ok:
        return {min(ok, key=lambda t: float(np.mean(t.result.val_mse))).realization}
    return set()


def _checkpoint_meta(
    rs: ResolvedSpec, t: Trained, store_path: str | os.PathLike[str], manifest: dict[str, Any]
) -> dict[str, Any]:
    """The metadata saved beside a network's weights (what :func:`load_checkpoint` and ``predict`` read)."""
    spec, cols = rs.spec, list(rs.columns)
    return {
        "run_id": run_id(spec, t.realization),
        "arch": spec.arch,
        "model_kw": dict(spec.model_kw),
        "in_shape": list(rs.in_shape),
        "n_outputs": len(cols),
        "target": spec.target,
        "columns": cols,
        "channels": spec.channels,
        "labels": list(rs.target_labels),
        "label_names": list(rs.label_names),  # every label of the store: "columns" index them
        "label_ranges": LabelScaler.from_manifest(manifest).to_dict(),  # the units of every MSE here
        "val_mse": {rs.label_names[c]: float(t.result.val_mse[j]) for j, c in enumerate(cols)},
        "test_mse": {rs.label_names[c]: float(t.result.test_mse[j]) for j, c in enumerate(cols)},
        "pixel_map": manifest.get("pixel_map"),  # an imported store: how a new image's pixels are mapped
        "n_params": t.n_params,
        "precision": spec.precision,
        "realization": t.realization,
        "seed": spec.seed,
        "init_seed": realization_seed(spec, t.realization),
        "data_seed": rs.data_seed(t.realization),
        "spec": _jsonable(asdict(spec)),
        "store": str(Path(store_path).resolve()),
        "image": manifest.get("image"),
    }


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, str | int | float | bool) or obj is None:
        return obj
    return str(obj)


def load_checkpoint(
    path: str | os.PathLike[str], device: str = "cpu"
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a saved network (in eval mode) and return it with its metadata dict."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        blob = torch.load(path, map_location=device, weights_only=True)
        meta = blob["meta"]
        model = create_model(
            meta["arch"], tuple(meta["in_shape"]), int(meta["n_outputs"]), **meta["model_kw"]
        )
        model.load_state_dict(blob["state_dict"])
    except UserError:
        raise
    except Exception as exc:  # a corrupt or foreign file fails in many ways; each is the file's fault
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"checkpoint {path} cannot be read: {msg}") from None
    return model.to(device).eval(), meta
