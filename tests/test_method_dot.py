"""DOT (Zhao et al., ICCV 2023): the optimizer's update against float64 computations (a step-by-step
reference and the closed form for constant gradients), the delta = 0 identity with SGD, the fp16
GradScaler path, and --distill dot end to end with a bit-exact resume of both momentum buffers."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training import student as train_student
from distiller_zoo import METHODS, DistillationOrientedTrainer, DistillContext
from distiller_zoo.task import loss_groups
from helper.errors import UserError
from helpers import assert_same_run, metrics_rows, train_straight_and_resumed, write_published_teacher

LR, MOMENTUM, DELTA, DECAY = 0.05, 0.9, 0.075, 5e-4
# parameter kinds: reached by both losses, by the task loss only, by the distillation loss only
KINDS = {"both": (True, True), "task": (True, False), "distill": (False, True)}


def random_gradients(steps: int, shape: tuple[int, ...], seed: int) -> dict[str, list[tuple]]:
    """Per kind and step: (task gradient or None, distillation gradient or None), float64."""
    rng = np.random.default_rng(seed)
    return {kind: [(rng.standard_normal(shape) if task else None, rng.standard_normal(shape) if distill else None)
                   for _ in range(steps)] for kind, (task, distill) in KINDS.items()}


def dot_reference(start: np.ndarray, gradients: list[tuple], lr: float, momentum: float, delta: float,
                  decay: float, dampening: float = 0.0) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Float64 DOT on one parameter: B_task <- (m - delta) B_task + (1 - d)(g_task + wd p), B_distill <-
    (m + delta) B_distill + (1 - d) g_distill, p <- p - lr (B_task + B_distill); a buffer starts as its
    first gradient; a parameter reached by one loss uses momentum m, and weight decay in that buffer
    (for the distillation buffer from its second step on, as the official code)."""
    param, task_buffer, distill_buffer = start.copy(), None, None
    for task_gradient, distill_gradient in gradients:
        both = task_gradient is not None and distill_gradient is not None
        update = np.zeros_like(param)
        if task_gradient is not None:
            gradient = task_gradient + decay * param
            task_buffer = gradient.copy() if task_buffer is None else \
                (momentum - delta if both else momentum) * task_buffer + (1 - dampening) * gradient
            update += task_buffer
        if distill_gradient is not None:
            gradient = distill_gradient + (decay * param if not both and distill_buffer is not None else 0)
            distill_buffer = gradient.copy() if distill_buffer is None else \
                (momentum + delta if both else momentum) * distill_buffer + (1 - dampening) * gradient
            update += distill_buffer
        param = param - lr * update
    return param, task_buffer, distill_buffer


def run_optimizer(optimizer_params: list[torch.Tensor], gradients: dict[str, list[tuple]],
                  optimizer: DistillationOrientedTrainer) -> None:
    """Feed the gradients as the two backward passes would: .grad, step_kd(), .grad, step()."""
    for step in range(len(gradients["both"])):
        for param, kind in zip(optimizer_params, KINDS):
            distill_gradient = gradients[kind][step][1]
            param.grad = None if distill_gradient is None else torch.tensor(distill_gradient, dtype=param.dtype)
        optimizer.step_kd()
        for param, kind in zip(optimizer_params, KINDS):
            task_gradient = gradients[kind][step][0]
            param.grad = None if task_gradient is None else torch.tensor(task_gradient, dtype=param.dtype)
        optimizer.step()


@pytest.mark.parametrize("dtype,tolerance", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("dampening", [0.0, 0.1])
def test_update_matches_float64_reference(dtype: torch.dtype, tolerance: float, dampening: float) -> None:
    rng = np.random.default_rng(0)
    starts = [rng.standard_normal((3, 4)) for _ in KINDS]
    gradients = random_gradients(4, (3, 4), seed=1)
    params = [torch.tensor(start, dtype=dtype, requires_grad=True) for start in starts]
    optimizer = DistillationOrientedTrainer(params, lr=LR, momentum=MOMENTUM - DELTA, momentum_kd=MOMENTUM + DELTA,
                                            dampening=dampening, weight_decay=DECAY)
    run_optimizer(params, gradients, optimizer)
    for param, start, kind in zip(params, starts, KINDS):
        expected, task_buffer, distill_buffer = dot_reference(start, gradients[kind], LR, MOMENTUM, DELTA, DECAY,
                                                              dampening)
        np.testing.assert_allclose(param.detach().double().numpy(), expected, rtol=tolerance, atol=tolerance)
        state = optimizer.state[param]
        for name, buffer in (("momentum_buffer", task_buffer), ("momentum_kd_buffer", distill_buffer)):
            assert (name in state) == (buffer is not None), (kind, name)
            if buffer is not None:
                np.testing.assert_allclose(state[name].double().numpy(), buffer, rtol=tolerance, atol=tolerance)


def test_constant_gradients_follow_the_two_geometric_series() -> None:
    """Without weight decay and with constant gradients, B after j steps is g (1 - m^j) / (1 - m), so
    p_K = p_0 - lr (g_task S(m - delta) + g_distill S(m + delta)), S(m) = sum_j (1 - m^j) / (1 - m)."""
    task_gradient, distill_gradient, steps = np.array([0.3, -1.0]), np.array([2.0, 0.5]), 6
    param = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    optimizer = DistillationOrientedTrainer([param], lr=LR, momentum=MOMENTUM - DELTA, momentum_kd=MOMENTUM + DELTA)
    run_optimizer([param, torch.zeros(2), torch.zeros(2)],
                  {"both": [(task_gradient, distill_gradient)] * steps, "task": [(None, None)] * steps,
                   "distill": [(None, None)] * steps}, optimizer)

    def series(m: float) -> float:
        return sum((1 - m**j) / (1 - m) for j in range(1, steps + 1))

    expected = -LR * (task_gradient * series(MOMENTUM - DELTA) + distill_gradient * series(MOMENTUM + DELTA))
    np.testing.assert_allclose(param.detach().numpy(), expected, rtol=1e-12)


def test_delta_zero_is_sgd_with_momentum_on_the_summed_gradient() -> None:
    """delta = 0: both buffers share the momentum, so B_task + B_distill is SGD's buffer of g_task +
    g_distill + wd p. Holds for parameters reached by both losses or by the task loss alone; one reached
    by the distillation loss alone misses the weight decay on its first step (as the official code), so
    it is lr * wd * p_0 away from SGD after that step, and follows SGD exactly when wd = 0."""
    gradients = random_gradients(5, (4,), seed=2)
    starts = [torch.randn(4, dtype=torch.float64) for _ in KINDS]
    for decay in (DECAY, 0.0):
        dot_params = [start.clone().requires_grad_(True) for start in starts]
        sgd_params = [start.clone().requires_grad_(True) for start in starts]
        dot = DistillationOrientedTrainer(dot_params, lr=LR, momentum=MOMENTUM, momentum_kd=MOMENTUM,
                                          weight_decay=decay)
        sgd = torch.optim.SGD(sgd_params, lr=LR, momentum=MOMENTUM, weight_decay=decay)
        for step in range(5):
            run_optimizer(dot_params, {kind: gradients[kind][step:step + 1] for kind in KINDS}, dot)
            for param, kind in zip(sgd_params, KINDS):
                param.grad = torch.tensor(sum(g for g in gradients[kind][step] if g is not None))
            sgd.step()
            if step == 0:
                np.testing.assert_allclose((dot_params[2] - sgd_params[2]).detach().numpy(),
                                           (LR * decay * starts[2]).numpy(), atol=1e-15)
        for dot_param, sgd_param, kind in zip(dot_params, sgd_params, KINDS):
            if kind != "distill" or decay == 0:
                torch.testing.assert_close(dot_param, sgd_param, rtol=1e-12, atol=1e-14, msg=f"{kind}, wd {decay}")


# ---------------------------------------------------------------- the loop's hook, fp16 scaler
def tiny_step_losses(model: torch.nn.Linear, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images, teacher_logits = torch.randn(8, 6, generator=generator), torch.randn(8, 5, generator=generator)
    labels = torch.randint(0, 5, (8,), generator=generator)
    logits = model(images)
    kl = F.kl_div(F.log_softmax(logits / 4, 1), F.softmax(teacher_logits / 4, 1), reduction="batchmean") * 16
    return loss_groups({"ce": 0.1 * F.cross_entropy(logits, labels), "kl": 0.9 * kl})


def tiny_model_and_optimizer() -> tuple[torch.nn.Linear, DistillationOrientedTrainer]:
    torch.manual_seed(3)
    model = torch.nn.Linear(6, 5)
    return model, DistillationOrientedTrainer(model.parameters(), lr=LR, momentum=MOMENTUM - DELTA,
                                              momentum_kd=MOMENTUM + DELTA, weight_decay=DECAY)


def no_reduction(optimizer: torch.optim.Optimizer) -> None:
    pass


def test_backward_and_step_equals_the_official_sequence_and_is_exact_under_a_scaler() -> None:
    """The loop's hook = mdistiller's step (backward distill, step_kd, backward task, step); a power-of-two
    loss scale is undone exactly, so the fp16 path's update is bit-identical to the unscaled one."""
    runs = {}
    for how in ("official", "hook", "scaled"):
        model, optimizer = tiny_model_and_optimizer()
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12) if how == "scaled" else None
        for step in range(3):
            groups = tiny_step_losses(model, seed=step)
            if how == "official":
                optimizer.zero_grad(set_to_none=True)
                groups["distill"].backward(retain_graph=True)
                optimizer.step_kd()
                optimizer.zero_grad(set_to_none=True)
                groups["task"].backward()
                optimizer.step()
            else:
                optimizer.backward_and_step(groups, scaler, no_reduction)
        runs[how] = (model.state_dict(), optimizer.state_dict()["state"])
    for how in ("hook", "scaled"):
        for name, value in runs["official"][0].items():
            assert torch.equal(value, runs[how][0][name]), (how, name)
        for index, buffers in runs["official"][1].items():
            for name, buffer in buffers.items():
                assert torch.equal(buffer, runs[how][1][index][name]), (how, index, name)


@pytest.mark.parametrize("overflowing", ["distill", "task"])
def test_an_overflow_in_either_pass_skips_the_step_and_lowers_the_scale(overflowing: str) -> None:
    model, optimizer = tiny_model_and_optimizer()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    groups = tiny_step_losses(model, seed=0)
    groups[overflowing] = groups[overflowing] * float("inf")
    optimizer.backward_and_step(groups, scaler, no_reduction)
    assert scaler.get_scale() == 2.0**11
    assert not optimizer.state and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    optimizer.backward_and_step(tiny_step_losses(model, seed=1), scaler, no_reduction)  # the next step trains
    assert len(optimizer.state) == 2 and scaler.get_scale() == 2.0**11


def test_loss_groups_split_the_weighted_total() -> None:
    ce, kl, crd = torch.tensor(1.5), torch.tensor(0.25), torch.tensor(2.0)
    groups = loss_groups({"ce": ce, "kl": kl, "crd": crd})
    assert groups["task"] is ce and groups["distill"].item() == 2.25
    assert list(loss_groups({"ce": ce})) == ["task"]


def test_delta_must_keep_both_momenta_in_range() -> None:
    def build(delta: float, momentum: float = MOMENTUM) -> None:
        opt = argparse.Namespace(dot_delta=delta, momentum=momentum)
        METHODS["dot"](DistillContext(opt, None, None, [], [], torch.zeros(1), torch.device("cpu")))

    build(0.075)
    for delta, momentum in ((0.1, 0.9), (0.5, 0.3)):
        with pytest.raises(UserError, match="--dot_delta"):
            build(delta, momentum)


# ---------------------------------------------------------------- end to end
def dot_argv(teacher: Path, data: Path, save: Path, epochs: int, *extra: str) -> list[str]:
    return ["--path_t", str(teacher), "--distill", "dot", "--model_s", "resnet8", "--epochs", str(epochs),
            "--batch_size", "64", "--data_folder", str(data), "--save_folder", str(save), "--device", "cpu",
            "--no_progress", "--seed", "4", *extra]


@pytest.mark.slow
def test_dot_trains_and_resumes_bit_identically(cifar_folder: Path, tmp_path: Path) -> None:
    """2 epochs straight = 1 epoch, then --resume auto to 2: weights, metrics and both momentum buffers."""
    teacher = write_published_teacher(tmp_path / "teacher", "resnet8")
    opt = train_student.parse_args(dot_argv(teacher, cifar_folder, tmp_path, 1))
    assert (opt.gamma, opt.alpha, opt.beta, opt.dot_delta, opt.kd_T) == (0.1, 0.9, 0.0, 0.075, 4.0)
    straight, resumed = train_straight_and_resumed(
        lambda save, *rest: dot_argv(teacher, cifar_folder, save, *rest), tmp_path)
    assert straight.name.startswith("dot_cifar100_S_resnet8_T_resnet8_r_0.1_a_0.9_b_0_trial_1")
    assert_same_run(straight, resumed)
    rows = metrics_rows(straight)
    assert len(rows) == 2 and float(rows[1]["kl"]) > 0 and float(rows[1]["ce"]) > 0
    states = [torch.load(run / "resnet8_last.pth", weights_only=True)["optimizer"] for run in (straight, resumed)]
    (group,) = states[0]["param_groups"]
    assert group["momentum"] == pytest.approx(0.825) and group["momentum_kd"] == pytest.approx(0.975)
    assert len(states[0]["state"]) == len(group["params"])  # every student parameter has both buffers
    for index, buffers in states[0]["state"].items():
        assert set(buffers) == {"momentum_buffer", "momentum_kd_buffer"}
        for name, buffer in buffers.items():
            assert torch.equal(buffer, states[1]["state"][index][name]), (index, name)
