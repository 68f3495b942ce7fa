"""DOT (Zhao et al., ICCV 2023), ``--optimizer dot``: the optimizer's update against float64 computations (a
step-by-step reference and the closed form for constant gradients), the delta = 0 identity with SGD, the
fp16 GradScaler path, DOT with CRD and DKD (the task's loss split and the two momentum updates against a
float64 recomputation), ``--distill dot`` as the name of KD + DOT (one run folder and record for both
spellings), and end to end with a bit-exact resume of both momentum buffers."""
from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import distiller_zoo
from training import student as train_student
from distiller_zoo import METHODS, DistillationOrientedTrainer, DistillContext, DistillTask
from distiller_zoo.base import method_label, recorded_settings, run_method_name, split_method_name
from distiller_zoo.task import loss_groups
from helper import optimizers
from helper.errors import UserError
from helper.loop import train_step
from helper.provenance import identity_differences
from helpers import assert_same_run, metrics_rows, run_folder, train_straight_and_resumed, write_published_teacher

LR, MOMENTUM, DELTA, DECAY = 0.05, 0.9, 0.075, 5e-4
# parameter kinds: reached by both losses, by the task loss only, by the distillation loss only
KINDS = {"both": (True, True), "task": (True, False), "distill": (False, True)}


def random_gradients(steps: int, shape: tuple[int, ...], seed: int) -> dict[str, list[tuple]]:
    """Per kind and step: (task gradient or None, distillation gradient or None), float64."""
    rng = np.random.default_rng(seed)
    return {kind: [(rng.standard_normal(shape) if task else None, rng.standard_normal(shape) if distill else None)
                   for _ in range(steps)] for kind, (task, distill) in KINDS.items()}


def dot_reference_step(param: np.ndarray, task_gradient: np.ndarray | None, distill_gradient: np.ndarray | None,
                       buffers: dict[str, np.ndarray], lr: float, momentum: float, delta: float, decay: float,
                       dampening: float = 0.0) -> np.ndarray:
    """One float64 DOT step of one parameter: B_task <- (m - delta) B_task + (1 - d)(g_task + wd p), B_distill <-
    (m + delta) B_distill + (1 - d) g_distill, p <- p - lr (B_task + B_distill); a buffer starts as its first
    gradient; a parameter reached by one loss uses momentum m, and weight decay in that buffer (for the
    distillation buffer from its second step on, as the official code). ``buffers`` is updated in place."""
    both = task_gradient is not None and distill_gradient is not None
    update = np.zeros_like(param)
    for name, gradient, momentum_of_buffer in (("task", task_gradient, momentum - delta),
                                               ("distill", distill_gradient, momentum + delta)):
        if gradient is None:
            continue
        if name == "task" or (not both and name in buffers):
            gradient = gradient + decay * param
        if name not in buffers:
            buffers[name] = gradient.copy()
        else:
            buffers[name] = (momentum_of_buffer if both else momentum) * buffers[name] + (1 - dampening) * gradient
        update += buffers[name]
    return param - lr * update


def dot_reference(start: np.ndarray, gradients: list[tuple], lr: float, momentum: float, delta: float,
                  decay: float, dampening: float = 0.0) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``dot_reference_step`` over a list of (task, distillation) gradients: (parameter, B_task, B_distill)."""
    param, buffers = start.copy(), {}
    for task_gradient, distill_gradient in gradients:
        param = dot_reference_step(param, task_gradient, distill_gradient, buffers, lr, momentum, delta, decay,
                                   dampening)
    return param, buffers.get("task"), buffers.get("distill")


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


def test_delta_must_keep_both_momenta_in_range(tmp_path: Path) -> None:
    def check(delta: float, momentum: float = MOMENTUM, optimizer: str | None = "dot") -> argparse.Namespace:
        opt = argparse.Namespace(optimizer=optimizer, dot_delta=delta, momentum=momentum)
        optimizers.check_optimizer_args(opt)
        return opt

    assert check(0.075).optimizer == "dot" and check(0.5, optimizer=None).optimizer == "sgd"  # SGD does not use it
    with pytest.raises(UserError, match="--dot_delta must be >= 0"):
        check(-0.01, optimizer=None)
    for delta, momentum in ((0.1, 0.9), (0.5, 0.3)):
        with pytest.raises(UserError, match="--dot_delta"):
            check(delta, momentum)
    teacher = write_published_teacher(tmp_path, "resnet8")
    with pytest.raises(UserError, match="--dot_delta 0.2 with --momentum 0.9"):
        train_student.parse_args(["--path_t", str(teacher), "--distill", "crd", "--optimizer", "dot",
                                  "--dot_delta", "0.2"])


def test_the_optimizer_lives_in_the_shared_code() -> None:
    """One class, importable from distiller_zoo as before; no method overrides the optimizer."""
    assert DistillationOrientedTrainer is optimizers.DistillationOrientedTrainer
    assert distiller_zoo.DistillationOrientedTrainer is optimizers.DistillationOrientedTrainer
    assert "dot" not in METHODS and all(not hasattr(method, "make_optimizer") for method in METHODS.values())


# ---------------------------------------------------------------- DOT with CRD and DKD: the two-pass split
class TinyNet(nn.Module):
    """12 inputs -> ReLU(Linear) features (B, 6) -> logits (B, 5), with the models' is_feat/preact call."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.body, self.head = nn.Linear(12, 6), nn.Linear(6, 5)

    def forward(self, images: torch.Tensor, is_feat: bool = False, preact: bool = False):
        features = F.relu(self.body(images.flatten(1)))
        logits = self.head(features)
        return ([features], logits) if is_feat else logits


SPLIT_CASES = {  # method: (flags, -r, -a, -b): the KD term on too, so that 'distill' sums two losses
    "crd": (dict(feat_dim=4, nce_k=6, nce_t=0.07, nce_m=0.5, mode="exact", crd_bank_dtype="fp32"), 1.0, 1.0, 0.8),
    "dkd": (dict(dkd_alpha=1.0, dkd_beta=8.0, dkd_T=4.0, dkd_warmup=0, logit_stand=False), 1.0, 0.5, 1.0),
}


def tiny_dot_task(key: str) -> tuple[DistillTask, list[nn.Parameter], torch.optim.Optimizer, argparse.Namespace]:
    """A float64 student/teacher pair of TinyNet, the method ``key`` and DOT over the trainable parameters."""
    flags, gamma, alpha, beta = SPLIT_CASES[key]
    opt = argparse.Namespace(**flags, learning_rate=LR, momentum=MOMENTUM, weight_decay=DECAY, dot_delta=DELTA,
                             optimizer="dot")
    student, teacher = TinyNet(0).double(), TinyNet(1).double()
    shapes = [torch.Size([2, 6])]
    context = DistillContext(opt, student, teacher, shapes, shapes, torch.arange(24) % 5, torch.device("cpu"))
    method = METHODS[key](context).double()
    task = DistillTask(student, teacher, method, gamma, alpha, beta, kd_T=4.0)
    params = [*student.parameters(), *method.trainable_parameters()]
    return task, params, optimizers.make_optimizer(params, opt, torch.device("cpu"), name="dot"), opt


def split_gradients(task: DistillTask, batch: tuple, seed: int) -> tuple[list, list]:
    """Per trainable parameter, the gradients of gamma*CE and of alpha*KD + beta*method (None where a loss
    does not reach it), from the unweighted named losses and the weights, on a copy of the task (CRD's
    forward records a memory update)."""
    task = copy.deepcopy(task)
    params = [*task.model.parameters(), *task.method.trainable_parameters()]
    torch.manual_seed(seed)  # CRD's negatives
    losses = task.compute(*batch).losses
    gamma, alpha, beta = (task.weights[name] for name in ("ce", "kl", task.method.key))
    distill = alpha * losses["kl"] + beta * losses[task.method.key]
    gradients = []
    for loss in (gamma * losses["ce"], distill):
        found = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        gradients.append([None if g is None else g.numpy().copy() for g in found])
    return gradients[0], gradients[1]


@pytest.mark.parametrize("key", list(SPLIT_CASES))
def test_dot_with_a_method_loss_updates_both_buffers_from_the_split(key: str) -> None:
    """A few train_step calls with DOT equal the float64 reference update fed the gradients of gamma*CE and
    of alpha*KD + beta*method; CRD's embeds (reached by the distillation loss alone) included. CRD's memory
    banks move in after_step, after both passes, from the step's own embeddings."""
    task, params, optimizer, _ = tiny_dot_task(key)
    task.train_mode()
    generator = torch.Generator().manual_seed(5)
    reference = [p.detach().numpy().copy() for p in params]
    buffers: list[dict[str, np.ndarray]] = [{} for _ in params]
    distill_only = 0
    for step in range(3):
        index = torch.randperm(24, generator=generator)[:8]
        batch = (torch.randn(8, 3, 2, 2, generator=generator, dtype=torch.float64), index % 5, index)
        task_gradients, distill_gradients = split_gradients(task, batch, seed=step)
        distill_only = sum(t is None and d is not None for t, d in zip(task_gradients, distill_gradients))
        reference = [dot_reference_step(value, t, d, state, LR, MOMENTUM, DELTA, DECAY) for value, t, d, state
                     in zip(reference, task_gradients, distill_gradients, buffers)]
        banks = [b.clone() for b in task.method.buffers()] if key == "crd" else []
        torch.manual_seed(step)
        output = train_step(task, optimizer, *batch)
        assert set(output.groups) == {"task", "distill"}
        if banks:
            assert any(not torch.equal(a, b) for a, b in zip(banks, task.method.buffers()))  # after_step ran
    for param, expected in zip(params, reference):
        np.testing.assert_allclose(param.detach().numpy(), expected, rtol=1e-10, atol=1e-12)
    assert distill_only == (4 if key == "crd" else 0)  # CRD's two embeds (weight, bias)


# ---------------------------------------------------------------- --distill dot = --distill kd --optimizer dot
def test_run_names_labels_and_records_of_the_optimizer() -> None:
    assert run_method_name("kd", "dot") == "dot" and run_method_name("crd", "dot") == "crd_dot"
    assert run_method_name("crd", "sgd") == "crd" and run_method_name("dot", None) == "dot"
    assert split_method_name("dot") == ("kd", "dot") and split_method_name("crd_dot") == ("crd", "dot")
    assert split_method_name("sdd_kd") == ("sdd_kd", "sgd") and split_method_name("nope_dot") is None
    assert (method_label("dot"), method_label("crd_dot", 1.0), method_label("dkd_dot")) == (
        "KD+DOT", "CRD+KD+DOT", "DKD+DOT")
    settings = {"distill": "kd", "optimizer": "dot", "dot_delta": 0.075, "kd_T": 4.0}
    assert recorded_settings(settings) == {"distill": "dot", "dot_delta": 0.075, "kd_T": 4.0}  # as before the flag
    assert recorded_settings({**settings, "distill": "crd"}) == {**settings, "distill": "crd"}


def test_sgd_runs_keep_their_identity_and_dot_runs_record_it(tmp_path: Path) -> None:
    """--optimizer sgd (the default) records neither --optimizer nor --dot_delta, so records written before
    the flag still match; a DOT run records both (its preset name for KD) and gets its own folder."""
    teacher = write_published_teacher(tmp_path, "resnet8")

    def plan(*flags: str) -> train_student.RunPlan:
        return train_student.run_plan(train_student.parse_args(["--path_t", str(teacher), *flags]))

    for sgd in (plan("--distill", "crd"), plan("--distill", "crd", "--optimizer", "sgd", "--dot_delta", "0.1")):
        assert sgd.run_dir.name.startswith("crd_cifar100_")
        assert not {"optimizer", "dot_delta"} & set(sgd.identity["settings"])
    old_record = plan("--distill", "crd").identity
    assert identity_differences(old_record, plan("--distill", "crd", "--optimizer", "sgd").identity) == []
    crd_dot = plan("--distill", "crd", "--optimizer", "dot")
    assert crd_dot.run_dir.name.startswith("crd_dot_cifar100_S_resnet8_T_resnet8_r_1_a_0_b_0.8_trial_1")
    assert {"optimizer": "dot", "dot_delta": 0.075}.items() <= crd_dot.identity["settings"].items()
    assert [name for name, _, _ in identity_differences(old_record, crd_dot.identity)] == ["dot_delta", "optimizer"]
    dot, kd_dot = plan("--distill", "dot"), plan("--distill", "kd", "--optimizer", "dot")
    assert dot.run_dir == kd_dot.run_dir and dot.run_dir.name.startswith("dot_cifar100_S_resnet8_T_resnet8_r_0.1_a_0.9")
    assert dot.identity == kd_dot.identity
    assert dot.identity["settings"]["distill"] == "dot" and "optimizer" not in dot.identity["settings"]
    with pytest.raises(UserError, match="--distill dot is --distill kd --optimizer dot"):
        train_student.parse_args(["--path_t", str(teacher), "--distill", "dot", "--optimizer", "sgd"])


# ---------------------------------------------------------------- end to end
def dot_argv(teacher: Path, data: Path, save: Path, epochs: int, *extra: str, distill: tuple[str, ...] = ("--distill",
             "dot")) -> list[str]:
    return [*distill, "--path_t", str(teacher), "--model_s", "resnet8", "--epochs", str(epochs),
            "--batch_size", "64", "--data_folder", str(data), "--save_folder", str(save), "--device", "cpu",
            "--no_progress", "--seed", "4", *extra]


@pytest.mark.slow
def test_dot_trains_and_resumes_bit_identically(cifar_folder: Path, tmp_path: Path) -> None:
    """2 epochs straight = 1 epoch, then --resume auto to 2: weights, metrics and both momentum buffers."""
    teacher = write_published_teacher(tmp_path / "teacher", "resnet8")
    opt = train_student.parse_args(dot_argv(teacher, cifar_folder, tmp_path, 1))
    assert (opt.distill, opt.optimizer, opt.gamma, opt.alpha, opt.beta, opt.dot_delta, opt.kd_T) == (
        "kd", "dot", 0.1, 0.9, 0.0, 0.075, 4.0)
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


@pytest.mark.slow
def test_both_spellings_train_the_same_run(cifar_folder: Path, tmp_path: Path) -> None:
    """--distill dot and --distill kd --optimizer dot: the same folder name, record and weights, bit for bit."""
    teacher = write_published_teacher(tmp_path / "teacher", "resnet8")
    folders = []
    for name, distill in (("alias", ("--distill", "dot")), ("flag", ("--distill", "kd", "--optimizer", "dot"))):
        train_student.main(dot_argv(teacher, cifar_folder, tmp_path / name, 1, distill=distill))
        folders.append(run_folder(tmp_path / name))
    assert folders[0].name == folders[1].name
    records = [torch.load(folder / "resnet8_last.pth", weights_only=True)["run"]["settings"] for folder in folders]
    assert records[0] == records[1] and records[0]["distill"] == "dot"
    assert_same_run(*folders)


@pytest.mark.slow
@pytest.mark.parametrize("key", ["crd", "dkd"])
def test_methods_train_with_dot(key: str, cifar_folder: Path, tmp_path: Path) -> None:
    """CRD and DKD with --optimizer dot end to end: folder KEY_dot, both buffers, finite losses."""
    teacher = write_published_teacher(tmp_path / "teacher", "resnet8")
    extra = ("--nce_k", "64") if key == "crd" else ("--dkd_warmup", "1")
    train_student.main(dot_argv(teacher, cifar_folder, tmp_path, 1, *extra,
                                distill=("--distill", key, "--optimizer", "dot")))
    run = run_folder(tmp_path)
    assert run.name.startswith(f"{key}_dot_cifar100_")
    state = torch.load(run / "resnet8_last.pth", weights_only=True)
    assert state["opt"]["optimizer"] == "dot" and float(metrics_rows(run)[0][key]) > 0
    kinds = [set(buffers) for buffers in state["optimizer"]["state"].values()]
    assert {"momentum_buffer", "momentum_kd_buffer"} in kinds


def test_the_summary_pools_both_spellings_and_names_the_optimizer(tmp_path: Path) -> None:
    """A run of --distill dot from before the flag, one of --distill kd --optimizer dot and one of crd with DOT:
    the first two are trials of one KD+DOT experiment, the third is CRD+DOT, and plain KD stays apart."""
    from reporting.runs import group_runs, scan
    from test_summary import student_run

    def run(name: str, trial: int, best: float, **opt: str) -> None:
        folder = student_run(tmp_path, name, "resnet8x4", "resnet32x4", 0.1, 0.9, 0, trial, [best - 1, best])
        state = torch.load(folder / "resnet8x4_last.pth", weights_only=True)
        state["opt"].update(opt)
        torch.save(state, folder / "resnet8x4_last.pth")

    run("dot", 1, 75.0)
    run("dot", 2, 76.0, distill="kd", optimizer="dot")
    run("crd_dot", 1, 74.0, distill="crd", optimizer="dot")
    run("kd", 1, 73.0, optimizer="sgd")
    groups = {group.first.label: [r.trial for r in group.runs] for group in group_runs(scan(tmp_path))}
    assert groups == {"KD+DOT": ["1", "2"], "CRD+KD+DOT": ["1"], "KD": ["1"]}
