"""The optimisation of a run: the optimizer (``trainer.optimizer``: Adam, AdamW, SGD with Nesterov
momentum), its parameter groups (``trainer.weight_decay``, ``trainer.theta_lr_scale``) and the
learning rate of every step (``trainer.schedule``, ``trainer.warmup_epochs``)."""

from __future__ import annotations

import math

import torch

from .pooling import Pool2d, TDGSPool

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine")
SGD_MOMENTUM = 0.9  # with Nesterov's momentum (Sutskever et al. 2013)


def parameter_groups(
    model: torch.nn.Module, lr: float, theta_lr_scale: float = 1.0, weight_decay: float = 0.0
) -> list[dict]:
    """The optimizer's parameter groups. The TDGS temperatures' parameters (``theta``) learn at
    ``lr * theta_lr_scale``, the rest at ``lr``. Weight decay applies to the weights of
    convolutions and linear layers only: not to biases and normalisation parameters (as timm's
    ``param_groups_weight_decay``), nor to the poolers' own parameters, which it would pull to
    zero (TDGS's temperatures to their floor, i.e. max pooling; the gates to one half). Without
    either option: one group, as before they existed (older checkpoints' optimizer states load)."""
    theta = [m.theta for m in model.modules() if isinstance(m, TDGSPool)] if theta_lr_scale != 1 else []
    skip = {id(p) for p in theta}
    rest = [p for p in model.parameters() if id(p) not in skip]
    groups = [{"params": rest, "lr": lr}]
    if weight_decay:
        pooler = {id(p) for m in model.modules() if isinstance(m, Pool2d) for p in m.parameters()}
        decayed = [p for p in rest if p.dim() >= 2 and id(p) not in pooler]
        kept = [p for p in rest if p.dim() < 2 or id(p) in pooler]
        groups = [{"params": decayed, "lr": lr, "weight_decay": weight_decay}, {"params": kept, "lr": lr}]
    groups.append({"params": theta, "lr": lr * theta_lr_scale})
    return [g for g in groups if g["params"]]


def make_optimizer(
    groups, kind: str = "adam", *, lr: float, device: torch.device, mode: str, fused: bool | None = None
) -> torch.optim.Optimizer:
    """The optimizer ``kind`` (one of :data:`OPTIMIZERS`) over ``groups`` (from :func:`parameter_groups`,
    or parameters) as the step needs it: fused on CUDA (one kernel for all parameters; with a
    gradient scaler it unscales and skips inside that kernel, without a host sync); in graph mode
    capturable (Adam's step counts on the device) with every learning rate a device tensor, which
    the captured step reads, so that :class:`LearningRates` changes it between replays; torch's
    default (foreach) on the CPU (``fused``: the choice made for the device, unless given). Weight
    decay only where a group sets it."""
    groups = list(groups)
    if groups and not isinstance(groups[0], dict):  # parameters: one group
        groups = [{"params": groups}]
    if mode == "graph":
        groups = [{**g, "lr": torch.tensor(float(g.get("lr", lr)), device=device)} for g in groups]
    options = {"fused": True} if (device.type == "cuda" if fused is None else fused) else {}
    if kind == "sgd":
        sgd = torch.optim.SGD(groups, lr=lr, momentum=SGD_MOMENTUM, nesterov=True, weight_decay=0.0, **options)
        for parameter in (p for group in sgd.param_groups for p in group["params"]):
            # zero momentum from the start: the same first step (buffer = gradient), but a fused step that a
            # gradient scaler skips leaves it zero instead of the uninitialised memory fused SGD allocates
            sgd.state[parameter]["momentum_buffer"] = torch.zeros_like(parameter)
        return sgd
    if kind not in ("adam", "adamw"):
        raise ValueError(f"optimizer must be one of {', '.join(map(repr, OPTIMIZERS))}, but got {kind!r}")
    if device.type == "cuda":
        options["capturable"] = mode == "graph"
    adam = (
        torch.optim.AdamW if kind == "adamw" else torch.optim.Adam
    )  # AdamW: decay decoupled (Loshchilov & Hutter 2019)
    return adam(groups, lr=lr, weight_decay=0.0, **options)


# how the optimizer runs, and the learning rate the schedule sets: this run's, not the checkpoint's
IMPLEMENTATION = ("capturable", "fused", "foreach", "differentiable", "lr")


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a checkpoint's optimizer state but keep this optimizer's :data:`IMPLEMENTATION`: a run
    resumed on another device steps as :func:`make_optimizer` made it for this one (a CPU
    checkpoint's ``capturable=False`` and float learning rate would otherwise stop CUDA graph
    capture on a GPU)."""
    groups = [
        {**saved, **{key: now[key] for key in IMPLEMENTATION if key in now}}
        for saved, now in zip(state["param_groups"], optimizer.param_groups)
    ]
    optimizer.load_state_dict({**state, "param_groups": groups})


class LearningRates:
    """Each step's learning rates: every group's own (``lr``, the temperatures' ``lr *
    theta_lr_scale``) times a factor, a linear warm-up from ``1 / warmup_steps`` to 1 over the
    first ``warmup_steps`` steps, then 1 (``constant``) or a cosine from 1 down to 0 at
    ``total_steps`` (``cosine``: Loshchilov & Hutter 2017, without restarts). Set on the host before
    each step (:meth:`set`); a device-tensor learning rate (graph mode) is written in place."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, schedule: str = "constant", warmup_steps: int = 0, total_steps: int = 1
    ) -> None:
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(map(repr, SCHEDULES))}, but got {schedule!r}")
        self.optimizer = optimizer  # its param_groups: loading a state replaces them
        self.base = [float(g["lr"]) for g in optimizer.param_groups]
        self.schedule, self.warmup_steps, self.total_steps = schedule, warmup_steps, total_steps
        self.varies = schedule != "constant" or warmup_steps > 0  # else the optimizer's own rates stand

    def factor(self, step: int) -> float:
        """The multiple of the groups' own learning rates at ``step`` (0-based)."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "constant":
            return 1.0
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    def set(self, step: int) -> None:
        """Give every group its learning rate for ``step``."""
        factor = self.factor(step)
        for group, base in zip(self.optimizer.param_groups, self.base):
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(base * factor)
            else:
                group["lr"] = base * factor
