"""The main stage's optimizers, chosen with ``--optimizer``: SGD, or DOT (Zhao, Cui, Song & Liang,
"DOT: A Distillation-Oriented Trainer", ICCV 2023), usable with every method.

DOT changes the optimizer, not the loss. The task loss (gamma*CE) and the distillation loss
(alpha*KD + beta*method) are back-propagated separately; each keeps its own momentum buffer, the
distillation one with momentum m + delta and the task one with m - delta (m = --momentum, delta =
--dot_delta), so that the distillation loss leads the optimisation. The split comes from the task
(``StepOutput.groups``); the loop hands it to an optimizer that runs the backward passes itself
(``helper.loop.LossGroupOptimizer``).
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
from torch import Tensor, nn

from helper.errors import UserError

__all__ = ["DistillationOrientedTrainer"]


class DistillationOrientedTrainer(torch.optim.Optimizer):
    """SGD with separate momentum buffers for the distillation and the task gradients (DOT).

    Usage as mdistiller's trainer: ``zero_grad(set_to_none=True)``, backward of the distillation loss
    (keeping the graph), ``step_kd()`` (takes those gradients out of ``.grad``), backward of the task
    loss, ``step()``. A parameter p reached by both losses then moves by -lr * (B_task + B_distill):

        B_task    <- momentum    * B_task    + (1 - dampening) * (g_task + weight_decay * p)
        B_distill <- momentum_kd * B_distill + (1 - dampening) * g_distill

    each buffer starting as its first gradient (with the weight decay, for B_task). A parameter
    reached by one loss only uses the mean momentum (momentum + momentum_kd) / 2 and takes the
    weight decay in that buffer; as in the official code, a parameter reached by the distillation
    loss alone skips the weight decay on its first step, and with ``momentum == 0`` the task
    gradient is applied without a buffer. State per parameter: 'momentum_buffer' (task) and
    'momentum_kd_buffer' (distillation).
    """

    def __init__(self, params: Iterable[nn.Parameter] | Iterable[dict[str, Any]], lr: float,
                 momentum: float = 0.0, momentum_kd: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0) -> None:
        for name, value in (("lr", lr), ("momentum", momentum), ("momentum_kd", momentum_kd),
                            ("weight_decay", weight_decay)):
            if value < 0:
                raise ValueError(f"DistillationOrientedTrainer: {name} must be >= 0, got {value}")
        super().__init__(params, dict(lr=lr, momentum=momentum, momentum_kd=momentum_kd, dampening=dampening,
                                      weight_decay=weight_decay))
        self._distill_gradients: dict[int, Tensor] = {}  # id(parameter) -> gradient, from step_kd()

    @torch.no_grad()
    def step_kd(self) -> None:
        """Take the distillation loss's gradients out of ``.grad`` for the next ``step()``."""
        self._distill_gradients = {}
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    self._distill_gradients[id(param)] = param.grad
                    param.grad = None

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Update every parameter from its task gradient (``.grad``) and its distillation gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        distill_gradients, self._distill_gradients = self._distill_gradients, {}
        for group in self.param_groups:
            for param in group["params"]:
                distill_gradient = distill_gradients.get(id(param))
                if param.grad is not None or distill_gradient is not None:
                    self._update(param, param.grad, distill_gradient, group)
        return loss

    def _update(self, param: Tensor, task_gradient: Tensor | None, distill_gradient: Tensor | None,
                group: dict[str, Any]) -> None:
        """Apply the task part, then the distillation part, of one parameter's DOT step."""
        state, lr, decay = self.state[param], group["lr"], group["weight_decay"]
        mean_momentum = (group["momentum"] + group["momentum_kd"]) / 2
        if task_gradient is not None:
            step = task_gradient.add(param, alpha=decay) if decay != 0 else task_gradient
            if group["momentum"] != 0:
                momentum = group["momentum"] if distill_gradient is not None else mean_momentum
                step = _momentum_step(state, "momentum_buffer", step, momentum, group["dampening"])
            param.add_(step, alpha=-lr)
        if distill_gradient is not None:
            step = distill_gradient
            if task_gradient is None and decay != 0 and "momentum_kd_buffer" in state:
                step = step.add(param, alpha=decay)
            momentum = group["momentum_kd"] if task_gradient is not None else mean_momentum
            param.add_(_momentum_step(state, "momentum_kd_buffer", step, momentum, group["dampening"]), alpha=-lr)

    def backward_and_step(self, groups: dict[str, Tensor], scaler: torch.amp.GradScaler | None,
                          reduce_gradients: Callable[[torch.optim.Optimizer], None]) -> None:
        """One DOT step from the weighted loss groups (``helper.loop.LossGroupOptimizer``): backward of
        'distill' and ``step_kd()``, backward of 'task' and ``step()``, ``reduce_gradients(self)`` after
        each pass. With a GradScaler (fp16) the distillation gradients are unscaled and checked on
        their own; an overflow in either pass skips the step and lowers the scale."""
        distill_finite = True
        self.zero_grad(set_to_none=True)
        if "distill" in groups and groups["distill"].requires_grad:
            _backward(groups["distill"], scaler, retain_graph=True)
            reduce_gradients(self)
            if scaler is not None:
                distill_finite = _unscale_apart(self, scaler)
            self.step_kd()
        _backward(groups["task"], scaler, retain_graph=False)
        reduce_gradients(self)
        if scaler is None:
            self.step()
            return
        if distill_finite:
            scaler.step(self)  # skips step() when the task gradients overflowed
        self._distill_gradients = {}
        scaler.update()


def _momentum_step(state: dict[str, Any], name: str, gradient: Tensor, momentum: float, dampening: float) -> Tensor:
    """The momentum buffer ``state[name]`` after adding ``gradient`` (a copy of it on the first step)."""
    buffer = state.get(name)
    if buffer is None:
        buffer = state[name] = torch.clone(gradient).detach()
    else:
        buffer.mul_(momentum).add_(gradient, alpha=1 - dampening)
    return buffer


def _backward(loss: Tensor, scaler: torch.amp.GradScaler | None, retain_graph: bool) -> None:
    (scaler.scale(loss) if scaler is not None else loss).backward(retain_graph=retain_graph)


class _DistillationPass:
    """The optimizer's parameters under a second identity for GradScaler, which unscales each optimizer
    once per step: the distillation pass's gradients are unscaled and checked as this object's, the
    task pass's as the optimizer's, and ``update()`` lowers the scale when either overflowed."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.param_groups = optimizer.param_groups


def _unscale_apart(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> bool:
    """Unscale the gradients now in ``.grad`` (the distillation pass); True when all are finite."""
    scaler.unscale_(_DistillationPass(optimizer))
    gradients = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    return not gradients or bool(torch.stack([torch.isfinite(g).all() for g in gradients]).all())


# ------------------------------------------------------------------------------ --optimizer
def sgd(params: Iterable[nn.Parameter] | list[dict[str, Any]], opt: argparse.Namespace, device: torch.device,
        learning_rate: float) -> torch.optim.SGD:
    """SGD with --momentum and --weight_decay (fused kernels on CUDA, foreach elsewhere)."""
    kwargs: dict[str, Any] = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.SGD(params, lr=learning_rate, momentum=opt.momentum, weight_decay=opt.weight_decay, **kwargs)


def dot(params: Iterable[nn.Parameter] | list[dict[str, Any]], opt: argparse.Namespace, device: torch.device,
        learning_rate: float) -> DistillationOrientedTrainer:
    """DOT with momenta --momentum -/+ --dot_delta (task/distillation) and --weight_decay."""
    return DistillationOrientedTrainer(params, lr=learning_rate, momentum=opt.momentum - opt.dot_delta,
                                       momentum_kd=opt.momentum + opt.dot_delta, weight_decay=opt.weight_decay)


@dataclass(frozen=True)
class OptimizerChoice:
    """One ``--optimizer`` value: how to build it, its name in tables, its paper, its own flags."""

    build: Callable[..., torch.optim.Optimizer]
    label: str
    paper: str = ""
    flags: tuple[str, ...] = ()  # option names it reads besides the SGD ones (recorded in the run identity)


OPTIMIZERS: dict[str, OptimizerChoice] = {
    "sgd": OptimizerChoice(sgd, "SGD"),
    "dot": OptimizerChoice(dot, "DOT", "Zhao, Cui, Song & Liang, DOT: A Distillation-Oriented Trainer, ICCV 2023",
                           ("dot_delta",)),
}
DEFAULT_OPTIMIZER = "sgd"


def add_optimizer_args(parser: argparse.ArgumentParser) -> None:
    """--optimizer and the flags of the optimizers other than SGD."""
    group = parser.add_argument_group("optimizer")
    group.add_argument("--optimizer", choices=list(OPTIMIZERS), default=None,
                       help=f"main-stage optimizer, with any --distill (default: {DEFAULT_OPTIMIZER}). dot: "
                            f"{OPTIMIZERS['dot'].paper}; the distillation terms (-a, -b) and CE (-r) are "
                            "back-propagated apart, each with its own momentum buffer")
    group.add_argument("--dot_delta", type=float, default=0.075,
                       help="DOT's momentum offset: the distillation gradients' momentum is --momentum + delta, the "
                            "task gradients' --momentum - delta")


def check_optimizer_args(opt: argparse.Namespace) -> None:
    """Fill the default --optimizer; refuse a negative --dot_delta, and with --optimizer dot one that puts
    a momentum outside [0, 1)."""
    if opt.optimizer is None:
        opt.optimizer = DEFAULT_OPTIMIZER
    delta, momentum = opt.dot_delta, opt.momentum
    if not (math.isfinite(delta) and delta >= 0):
        raise UserError(f"--dot_delta must be >= 0, got {delta}; it is DOT's momentum offset (official: 0.075).")
    if opt.optimizer == "dot" and not (0 <= momentum - delta and momentum + delta < 1):
        raise UserError(f"--dot_delta {delta:g} with --momentum {momentum:g} gives the momenta {momentum - delta:g} "
                        f"(task) and {momentum + delta:g} (distillation); both must lie in [0, 1). Choose "
                        "--dot_delta below min(--momentum, 1 - --momentum) (the official setting is 0.075 with "
                        "momentum 0.9).")


def unused_optimizer_settings(opt: argparse.Namespace) -> set[str]:
    """Option names that cannot change this run: the flags of the optimizers it does not use, and
    --optimizer itself for SGD (so that SGD runs keep the identity of runs from before the flag)."""
    chosen = getattr(opt, "optimizer", None) or DEFAULT_OPTIMIZER
    unused = {name for key, choice in OPTIMIZERS.items() if key != chosen for name in choice.flags}
    return unused | ({"optimizer"} if chosen == DEFAULT_OPTIMIZER else set())


def make_optimizer(params: Iterable[nn.Parameter] | list[dict[str, Any]], opt: argparse.Namespace,
                   device: torch.device, learning_rate: float | None = None,
                   name: str = DEFAULT_OPTIMIZER) -> torch.optim.Optimizer:
    """The optimizer ``name`` (a key of OPTIMIZERS) over ``params`` with the run's flags."""
    return OPTIMIZERS[name].build(params, opt, device, learning_rate or opt.learning_rate)
