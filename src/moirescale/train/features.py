"""Fit the physics-feature baseline (model ``features``): ridge regression on translation-invariant features.

The features are :class:`moirescale.models.features.PhysicsFeatures` (pixel fractions, magnetisation, wall
density, radially averaged power spectrum per channel). The fit, per realization:

1. standardise the features with the training subset's mean and SD (a constant feature gets SD 1);
2. ridge regression (scikit-learn ``Ridge``, intercept unpenalised) for every alpha = lambda * N_D with
   lambda in :data:`RIDGE_LAMBDAS`, all targets at once;
3. per target, keep the lambda with the lowest validation MSE (the validation split picks the regularisation,
   as it picks the best step of a network);
4. fold the standardisation into the model's ``Linear`` head, so the saved checkpoint predicts from images.

The result is an ordinary :class:`~moirescale.train.run.Trained`: N_M = (F + 1) x outputs fitted
coefficients, validation and test MSE per target in scaled label units, the head's weights as the checkpoint
state. A ridge fit is deterministic, so its realizations differ only by their training subsets: with
``shared_data`` (one subset for all realizations) they are identical; with their own subsets (the default)
their spread is the data-sampling noise.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from moirescale.models import count_params, create_model
from moirescale.train.data import TrainData
from moirescale.train.loop import NetResult
from moirescale.train.run import Trained
from moirescale.train.spec import TrainSpec

RIDGE_LAMBDAS = np.logspace(-8, 2, 21)  # alpha / N_D on standardised features: from no penalty to heavy
CHUNK = 2048  # images per feature-extraction batch


def extract_features(
    model: torch.nn.Module, x: np.ndarray, device: str | torch.device = "cpu", chunk: int = CHUNK
) -> np.ndarray:
    """The model's features of images ``x`` (N, C, H, W; float or the store's int16 codes), in chunks, as
    float64 (N, F)."""
    from moirescale.train.precision import decode_images

    feats = model.features.to(device)
    out = []
    with torch.no_grad():
        for a in range(0, len(x), chunk):
            xb = decode_images(torch.as_tensor(np.ascontiguousarray(x[a : a + chunk]), device=device))
            out.append(feats(xb).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, feats.n_features))


def fit_ridge(
    f_train: np.ndarray,
    y_train: np.ndarray,
    f_val: np.ndarray,
    y_val: np.ndarray,
    lambdas: np.ndarray = RIDGE_LAMBDAS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ridge fit with the penalty chosen per target on the validation data.

    Parameters
    ----------
    f_train, f_val : (N, F) features; y_train, y_val : (N, k) targets.
    lambdas : candidate penalties, alpha = lambda * N_train on standardised features.

    Returns
    -------
    weight : (k, F) and bias : (k,) acting on the *raw* features (standardisation folded in);
    lam : (k,) the chosen lambda per target.
    """
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(f_train)
    z_tr, z_va = scaler.transform(f_train), scaler.transform(f_val)
    fits, val = [], []
    for lam in lambdas:
        r = Ridge(alpha=float(lam) * len(z_tr)).fit(z_tr, y_train)
        fits.append((np.atleast_2d(r.coef_), np.atleast_1d(r.intercept_)))
        val.append(np.mean((r.predict(z_va).reshape(y_val.shape) - y_val) ** 2, axis=0))
    best = np.argmin(np.asarray(val), axis=0)  # (k,)
    coef = np.stack([fits[b][0][j] for j, b in enumerate(best)])  # (k, F), standardised units
    icpt = np.array([fits[b][1][j] for j, b in enumerate(best)])
    weight = coef / scaler.scale_[None, :]
    bias = icpt - weight @ scaler.mean_
    return weight, bias, np.asarray(lambdas)[best]


def _mse(f: np.ndarray, y: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    return np.mean((f @ weight.T + bias - y) ** 2, axis=0)


def fit_features(
    spec: TrainSpec,
    data: TrainData,
    subsets: list[np.ndarray],
    columns: list[int],
    device: str | torch.device = "cpu",
) -> list[Trained]:
    """Fit every realization of a ``features`` spec on in-memory data (what ``train_arrays`` calls).

    ``subsets`` are rows of ``data.x_train``: one shared by all realizations or one per realization.
    """
    t0 = time.perf_counter()
    model = create_model("features", data.in_shape, len(columns))
    n_params = count_params(model)
    f_tr = extract_features(model, data.x_train, device)
    f_va = extract_features(model, data.x_val, device)
    f_te = extract_features(model, data.x_test, device)
    y_tr, y_va, y_te = (y[:, columns].astype(np.float64) for y in (data.y_train, data.y_val, data.y_test))
    shared = (time.perf_counter() - t0) / len(spec.realizations)
    out = []
    for j, r in enumerate(spec.realizations):
        t1 = time.perf_counter()
        sub = subsets[0] if len(subsets) == 1 else subsets[j]
        res = NetResult()
        state = None
        weight, bias, _lam = fit_ridge(f_tr[sub], y_tr[sub], f_va, y_va)
        if np.isfinite(weight).all() and np.isfinite(bias).all():
            res.val_mse = _mse(f_va, y_va, weight, bias)
            res.test_mse = _mse(f_te, y_te, weight, bias)
            with torch.no_grad():
                model.head.weight.copy_(torch.as_tensor(weight))
                model.head.bias.copy_(torch.as_tensor(bias))
            state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            res.status, res.error = "diverged", "ridge solution is not finite (non-finite features?)"
        out.append(Trained(int(r), res, state, n_params, shared + time.perf_counter() - t1))
    return out
