"""Training engines: one step, prediction, best-weight keeping and dropping of finished networks.

:func:`moirescale.train.loop.fit` drives either engine with the same loop, so a network trained alone and the
same network inside an ensemble see the same batches, rates, evaluations and stopping decisions.

- :class:`ModuleEngine`: one ``nn.Module`` (any architecture), autograd and torch's fused Adam/AdamW.
- :class:`FCNEnsemble`: N_r FCNs with stacked weights and a hand-written forward/backward. With a shared batch
  the first layer of all networks is ONE wide matmul ``(B x in) @ (in x N_r*n)`` (weight gradient: another),
  hidden layers are batched matmuls, and the update is torch's fused Adam kernel over the stacked tensors.

Both take a ``precision`` (:mod:`moirescale.train.precision`): with ``bf16`` the forward pass and the matmuls
of the backward pass run in bf16 (``torch.autocast`` for a module; explicit casts in the ensemble, the same
operations autocast would cast), while weights, the loss, the optimiser state and :meth:`predict_best` (the
final validation and test MSE) stay fp32. Training inputs arrive already decoded into :attr:`input_dtype`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from moirescale.models.fcn import FCN
from moirescale.train.precision import autocast, compute_dtype, decode_images

_CHUNK_ELEMS = 1 << 25  # activations per prediction chunk (bounds memory on large validation sets)


def _fused_step(
    opt: str, params, grads, exp_avg, exp_avg_sq, step: torch.Tensor, lr: float, weight_decay: float
) -> None:
    """torch's fused (Adam|AdamW) kernel, the same one ``torch.optim.Adam(fused=True)`` calls."""
    fn = torch._fused_adamw_ if opt == "adamw" else torch._fused_adam_
    fn(
        params,
        grads,
        exp_avg,
        exp_avg_sq,
        [],
        [step] * len(params),
        lr=lr,
        beta1=0.9,
        beta2=0.999,
        weight_decay=weight_decay,
        eps=1e-8,
        amsgrad=False,
        maximize=False,
    )


class ModuleEngine:
    """One network of any architecture.

    ``channels_last``: convolutions in NHWC layout (model and inputs), the layout oneDNN's CPU convolutions
    and cuDNN's tensor cores are fastest in.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: str = "adam",
        weight_decay: float = 0.0,
        precision: str = "fp32",
        channels_last: bool = False,
    ):
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.to(memory_format=self.memory_format)
        cls = torch.optim.AdamW if optimizer == "adamw" else torch.optim.Adam
        self.opt = cls(model.parameters(), lr=1e-3, weight_decay=weight_decay, fused=True)
        self.precision = precision
        self.weight_dtype = next(model.parameters()).dtype
        self.input_dtype = compute_dtype(precision, self.weight_dtype)
        self.active = np.arange(1)
        self.best: dict[str, torch.Tensor] | None = None

    @property
    def n(self) -> int:
        return 1

    def _run(self, x: torch.Tensor, precision: str) -> torch.Tensor:
        x = x.contiguous(memory_format=self.memory_format) if x.dim() == 4 else x
        with autocast(precision, x.device):
            return self.model(x).to(self.weight_dtype)

    def train_step(self, xb: torch.Tensor, yb: torch.Tensor, lr: np.ndarray) -> torch.Tensor:
        for g in self.opt.param_groups:
            g["lr"] = float(lr[0])
        self.model.train()
        out = self._run(xb, self.precision)
        loss = torch.mean((out - yb) ** 2)
        self.opt.zero_grad(set_to_none=True)
        if torch.isfinite(loss):  # a non-finite loss is reported by the caller; never step on it
            loss.backward()
            self.opt.step()
        return loss.detach().view(1)

    @torch.no_grad()
    def _predict_with(self, x: torch.Tensor, precision: str) -> torch.Tensor:
        self.model.eval()
        per = max(1, _CHUNK_ELEMS // max(1, x[0].numel()))
        dt = compute_dtype(precision, self.weight_dtype)
        return torch.cat(
            [self._run(decode_images(x[i : i + per], dt), precision) for i in range(0, len(x), per)]
        )[None]

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """(n_active, N, n_outputs) predictions of the networks still training, in the training precision."""
        return self._predict_with(x, self.precision)

    def keep_best(self, improved: np.ndarray) -> None:
        if improved.any():
            self.best = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def drop(self, mask: np.ndarray) -> None:
        if mask.any():
            self.active = self.active[~mask]

    def predict_best(self, x: torch.Tensor, nets: list[int]) -> torch.Tensor:
        current = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self.best)
        out = self._predict_with(x, "fp32")  # the reported MSEs are always fp32
        self.model.load_state_dict(current)
        return out

    def best_state(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v.cpu() for k, v in self.best.items()}

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs (:mod:`moirescale.train.resume`): weights, optimiser, best, active."""
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "best": self.best,
                "active": torch.from_numpy(self.active.copy())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        dev = next(self.model.parameters()).device
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.best = None if state["best"] is None else {k: v.to(dev) for k, v in state["best"].items()}
        self.active = state["active"].numpy().copy()


class FCNEnsemble:
    """``len(models)`` FCNs of one shape trained at once (initial weights are copied from ``models``)."""

    def __init__(
        self, models: list[FCN], optimizer: str = "adam", weight_decay: float = 0.0, precision: str = "fp32"
    ):
        self.precision = precision
        linears = [list(m.layers) + [m.head] for m in models]
        self.n_layers = len(linears[0]) - 1
        # Stacked parameters, layer k: W[k] (R, out, in) as nn.Linear stores it, b[k] (R, out).
        self.W = [
            torch.stack([ls[k].weight.detach() for ls in linears]).contiguous()
            for k in range(len(linears[0]))
        ]
        self.b = [
            torch.stack([ls[k].bias.detach() for ls in linears]).contiguous() for k in range(len(linears[0]))
        ]
        self.input_dtype = self.cdt = compute_dtype(precision, self.W[0].dtype)
        self.opt = optimizer
        self.weight_decay = weight_decay
        self._alloc_state(fresh=True)
        self.bestW = [w.clone() for w in self.W]
        self.bestb = [b.clone() for b in self.b]
        self.has_best = np.zeros(len(models), dtype=bool)
        self.active = np.arange(len(models))
        self.t = 0
        self._n = len(models)

    @property
    def n(self) -> int:
        return self._n

    @property
    def params(self) -> list[torch.Tensor]:
        return self.W + self.b

    def _alloc_state(self, fresh: bool, keep: torch.Tensor | None = None) -> None:
        if fresh:
            self.m = [torch.zeros_like(p) for p in self.params]
            self.v = [torch.zeros_like(p) for p in self.params]
        else:
            self.m = [m[keep].contiguous() for m in self.m]
            self.v = [v[keep].contiguous() for v in self.v]
        self._alloc_buffers()

    def _alloc_buffers(self) -> None:
        """Gradient and compute-dtype buffers shaped like the (active) weights."""
        self.gW = [torch.empty_like(w) for w in self.W]
        self.gb = [torch.empty_like(b) for b in self.b]
        # Mixed precision: persistent compute-dtype copies of the weights and the weight gradients' products.
        # Reused every step: a fresh tensor of this size each step costs more in page faults than the cast.
        mixed = self.cdt != self.W[0].dtype
        self.Wc = [torch.empty_like(w, dtype=self.cdt) for w in self.W] if mixed else self.W
        self.bc = [torch.empty_like(b, dtype=self.cdt) for b in self.b] if mixed else self.b
        self.gWc = [torch.empty_like(w, dtype=self.cdt) for w in self.W] if mixed else self.gW

    # -- arithmetic
    def _forward(
        self,
        W: list[torch.Tensor],
        b: list[torch.Tensor],
        x: torch.Tensor,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Outputs (R, B, o) and the hidden activations (R, B, n) of each layer."""
        r, n, d_in = W[0].shape
        if x.dim() == 2:  # shared batch: one wide matmul for every network's first layer
            z = torch.addmm(b[0].reshape(1, -1), x, W[0].reshape(r * n, d_in).t())
            h = torch.relu_(z).view(x.shape[0], r, n).transpose(0, 1)
        else:  # own batch per network: (R, B, in)
            h = torch.relu_(torch.baddbmm(b[0].unsqueeze(1), x, W[0].transpose(1, 2)))
        hs = [h]
        for k in range(1, len(W) - 1):
            h = torch.relu_(torch.baddbmm(b[k].unsqueeze(1), h, W[k].transpose(1, 2)))
            hs.append(h)
        out = torch.baddbmm(b[-1].unsqueeze(1), h, W[-1].transpose(1, 2))
        return out, hs

    def _compute_weights(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The weights in the compute dtype (fp32: the master weights themselves, no copy)."""
        if self.Wc is not self.W:
            for c, w in zip(self.Wc + self.bc, self.W + self.b, strict=True):
                c.copy_(w)
        return self.Wc, self.bc

    def _grad_into(self, k: int, a: torch.Tensor, b: torch.Tensor, flat: bool = False) -> None:
        """Layer ``k``'s weight gradient ``a @ b``, computed in the compute dtype, stored in fp32 ``gW[k]``
        (``flat``: a 2-D product into the (R*n, in) view of the shared-batch first layer)."""
        dest, tmp = self.gW[k], self.gWc[k]
        if flat:
            dest, tmp = dest.view(-1, dest.shape[-1]), tmp.view(-1, tmp.shape[-1])
        (torch.mm if flat else torch.bmm)(a, b, out=tmp)
        if tmp is not dest:
            dest.copy_(tmp)

    def train_step(self, xb: torch.Tensor, yb: torch.Tensor, lr: np.ndarray) -> torch.Tensor:
        x = xb.flatten(-3).to(self.cdt)
        W, b = self._compute_weights()
        out, hs = self._forward(W, b, x)
        diff = out.to(yb.dtype) - yb  # the loss and its gradient in the labels' dtype (fp32)
        losses = diff.square().mean((1, 2))
        bsz, n_out = out.shape[1], out.shape[2]
        g = diff.mul_(2.0 / (bsz * n_out)).to(self.cdt)  # dL_r/d out for L_r = MSE of network r
        L = len(W) - 1
        for k in range(L, 0, -1):
            self._grad_into(k, g.transpose(1, 2), hs[k - 1])
            torch.sum(g, 1, dtype=self.gb[k].dtype, out=self.gb[k])
            # back through layer k, then the ReLU (autograd's own kernel: 10x faster than a mask multiply)
            g = torch.ops.aten.threshold_backward(torch.bmm(g, W[k]), hs[k - 1], 0)
        r, n, d_in = W[0].shape
        if x.dim() == 2:  # first-layer weight gradient: one wide matmul, no input gradient needed
            g2 = g.transpose(0, 1).reshape(bsz, r * n)
            self._grad_into(0, g2.t(), x, flat=True)
            torch.sum(g2, 0, dtype=self.gb[0].dtype, out=self.gb[0].view(r * n))
        else:
            self._grad_into(0, g.transpose(1, 2), x)
            torch.sum(g, 1, dtype=self.gb[0].dtype, out=self.gb[0])
        self._adam(lr, losses)
        return losses.detach()

    def _adam(self, lr: np.ndarray, losses: torch.Tensor) -> None:
        self.t += 1
        step = torch.tensor(float(self.t), dtype=torch.float32, device=self.W[0].device)
        params, grads = self.params, self.gW + self.gb
        finite = torch.isfinite(losses)
        if not bool(finite.all()):  # never update a network on a non-finite loss (the caller drops it)
            lr = np.where(finite.cpu().numpy(), lr, 0.0)
            for gr in grads:
                gr.nan_to_num_(0.0, 0.0, 0.0)
        values = np.unique(lr)
        if len(values) == 1:  # the usual case: every network at the same rate -> one call over whole tensors
            _fused_step(self.opt, params, grads, self.m, self.v, step, float(values[0]), self.weight_decay)
            return
        for val in values:  # rates differ (after plateau decays): one fused call per distinct rate
            rows = np.flatnonzero(lr == val).tolist()
            pick = [(p, gr, m, v) for p, gr, m, v in zip(params, grads, self.m, self.v, strict=True)]
            sel = [(p[i], gr[i], m[i], v[i]) for p, gr, m, v in pick for i in rows]
            ps, gs, ms, vs = (list(t) for t in zip(*sel, strict=True))
            _fused_step(self.opt, ps, gs, ms, vs, step, float(val), self.weight_decay)

    @torch.no_grad()
    def _predict_with(
        self, W: list[torch.Tensor], b: list[torch.Tensor], x: torch.Tensor, dt: torch.dtype
    ) -> torch.Tensor:
        x = x.flatten(1)
        r, n, _ = W[0].shape
        W, b = [w.to(dt) for w in W], [v.to(dt) for v in b]
        per = max(1, _CHUNK_ELEMS // max(1, r * n))
        chunks = (self._forward(W, b, decode_images(x[i : i + per], dt))[0] for i in range(0, len(x), per))
        return torch.cat([c.to(self.W[0].dtype) for c in chunks], dim=1)  # master-weight dtype (fp32)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Predictions of the networks still training, in the training precision (validation passes)."""
        return self._predict_with(self.W, self.b, x, self.cdt)

    def predict_best(self, x: torch.Tensor, nets: list[int]) -> torch.Tensor:
        """The best weights' predictions, always in fp32 (the reported MSEs)."""
        idx = torch.as_tensor(nets, dtype=torch.long, device=self.W[0].device)
        best_w, best_b = [w[idx] for w in self.bestW], [b[idx] for b in self.bestb]
        return self._predict_with(best_w, best_b, x, best_w[0].dtype)

    def keep_best(self, improved: np.ndarray) -> None:
        if not improved.any():
            return
        dev = self.W[0].device
        local = torch.as_tensor(np.flatnonzero(improved), device=dev)
        orig = torch.as_tensor(self.active[improved], device=dev)
        for best, cur in zip(self.bestW + self.bestb, self.W + self.b, strict=True):
            best.index_copy_(0, orig, cur.index_select(0, local))
        self.has_best[self.active[improved]] = True

    def drop(self, mask: np.ndarray) -> None:
        """Stop training the networks ``mask`` marks (compacts the stacks so they cost nothing more)."""
        if not mask.any():
            return
        keep = torch.as_tensor(np.flatnonzero(~mask), device=self.W[0].device)
        self.W = [w[keep].contiguous() for w in self.W]
        self.b = [b[keep].contiguous() for b in self.b]
        self._alloc_state(fresh=False, keep=keep)
        self.active = self.active[~mask]

    _STATE = ("W", "b", "m", "v", "bestW", "bestb")

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs (:mod:`moirescale.train.resume`): the active networks' weights and
        Adam moments, every network's best weights, who is active, the step count."""
        out: dict[str, Any] = {k: getattr(self, k) for k in self._STATE}
        out.update(has_best=torch.from_numpy(self.has_best.copy()),
                   active=torch.from_numpy(self.active.copy()), t=self.t)
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        dev = self.W[0].device
        for k in self._STATE:
            setattr(self, k, [x.to(dev).contiguous() for x in state[k]])
        self.has_best = state["has_best"].numpy().copy()
        self.active = state["active"].numpy().copy()
        self.t = int(state["t"])
        self._alloc_buffers()

    def best_state(self, i: int) -> dict[str, torch.Tensor]:
        """Network ``i``'s best weights as an :class:`FCN` state dict."""
        sd = {}
        for k in range(self.n_layers):
            sd[f"layers.{k}.weight"] = self.bestW[k][i].cpu().clone()
            sd[f"layers.{k}.bias"] = self.bestb[k][i].cpu().clone()
        sd["head.weight"] = self.bestW[-1][i].cpu().clone()
        sd["head.bias"] = self.bestb[-1][i].cpu().clone()
        return sd
