"""Speed options that must not change results: BatchNorm folding of the frozen teacher, teacher
features used without copies, CRD's memory update after the optimizer step, --channels_last /
--compile auto and the compile fallback."""
from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from training import student as train_student
from crd.criterion import CRDLoss
from dataset.build import build_data
from distiller_zoo import METHODS, DistillTask
from helper import runner
from helper.folding import CALL_MODES, batchnorm_layers, fold_batchnorm
from helper.loop import Progress
from helper.options import COMPILE_MIN_STEPS, cpu_count
from helpers import ROOT, write_published_teacher
from models import all_model_dict, model_dict

TOLERANCE = 1e-5  # folded vs unfolded, fp32: max |difference| / max |value| of each output


def randomise_batchnorm(model: torch.nn.Module, seed: int = 0) -> None:
    """Trained-looking BatchNorm statistics (a fresh network's are the identity, which folds trivially)."""
    generator = torch.Generator().manual_seed(seed)
    for module in batchnorm_layers(model):
        size = module.num_features
        module.running_mean.copy_(torch.randn(size, generator=generator) * 0.3)
        module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
        module.weight.data.copy_(torch.rand(size, generator=generator) + 0.5)
        module.bias.data.copy_(torch.randn(size, generator=generator) * 0.3)


def outputs(model: torch.nn.Module, images: torch.Tensor, mode: dict[str, bool]) -> list[torch.Tensor]:
    with torch.no_grad():
        result = model(images, **mode)
    return [result] if isinstance(result, torch.Tensor) else [*result[0], result[1]]


@pytest.mark.parametrize("arch", list(all_model_dict))
def test_folded_teacher_equals_unfolded(arch: str) -> None:
    model = all_model_dict[arch](num_classes=100).eval()
    randomise_batchnorm(model)
    size = 32 if arch in model_dict else 64  # the torchvision models: any size from 32 on
    reference_state = copy.deepcopy(model.state_dict())
    folded, count = fold_batchnorm(model, size)
    assert count > 0
    assert not folded.training and not any(p.requires_grad for p in folded.parameters())
    # the original is untouched (its strictly loaded state_dict stays the reference)
    assert all(torch.equal(value, reference_state[key]) for key, value in model.state_dict().items())
    images = torch.randn(3, 3, size, size)
    for mode in CALL_MODES:
        expected, got = outputs(model, images, mode), outputs(folded, images, mode)
        assert len(expected) == len(got)
        for index, (a, b) in enumerate(zip(got, expected)):
            assert a.shape == b.shape
            error = float((a - b).abs().max() / b.abs().max())
            assert error <= TOLERANCE, (arch, mode, index, error)


@pytest.mark.parametrize("arch,unfoldable", [("resnet20", 0), ("vgg8", 0), ("wrn_16_2", 7)])
def test_every_conv_batchnorm_pair_is_folded(arch: str, unfoldable: int) -> None:
    """Post-conv BatchNorms are all folded; WRN's pre-activation ones (after a sum, or whose conv output
    is also the stem feature) are left as they are."""
    model = model_dict[arch](num_classes=10).eval()
    total = sum(1 for _ in batchnorm_layers(model))
    folded, count = fold_batchnorm(model)
    assert count == total - unfoldable
    assert sum(1 for _ in batchnorm_layers(folded)) == unfoldable


def test_fold_skips_a_conv_output_read_elsewhere() -> None:
    class TwoUses(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(4)
            self.conv2 = torch.nn.Conv2d(4, 4, 1)
            self.bn2 = torch.nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raw = self.conv(x)
            return self.bn2(self.conv2(self.bn(raw))) + raw  # raw is read twice: bn cannot be folded

    model = TwoUses().eval()
    randomise_batchnorm(model)
    folded, count = fold_batchnorm(model)
    assert count == 1 and isinstance(folded.bn, torch.nn.BatchNorm2d)
    images = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(folded(images), model(images), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ the training step's teacher forward

@pytest.fixture(scope="module")
def teacher_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_published_teacher(tmp_path_factory.mktemp("teacher_save"), "resnet8")


def build_task(key: str, teacher_path: Path, cifar_folder: Path, save: Path, stage: str = "main"
               ) -> tuple[DistillTask, torch.nn.Module, argparse.Namespace]:
    opt = train_student.parse_args(["--path_t", str(teacher_path), "--distill", key, "--model_s", "resnet8",
                                    "--batch_size", "8", "--epochs", "1", "--data_folder", str(cifar_folder),
                                    "--save_folder", str(save), "--nce_k", "64", "--device", "cpu"])
    device = runner.setup(opt)
    data, train_loader, _ = build_data(opt, device, views=METHODS[key].views)
    student, teacher, method = train_student.build_models(opt, data, device)
    randomise_batchnorm(teacher)
    forward_teacher = train_student.teacher_for_forward(teacher, opt, device)
    task = DistillTask(student, forward_teacher, method, opt.gamma, opt.alpha, opt.beta, opt.kd_T, stage=stage)
    task.train_mode()
    return task, teacher, train_loader


@pytest.mark.registry
@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(key for key in METHODS if len(METHODS[key].views) == 1))  # one view per batch
def test_methods_never_modify_teacher_outputs(key: str, teacher_path: Path, cifar_folder: Path,
                                              tmp_path: Path) -> None:
    """Teacher features come from a no_grad forward without copies: no method may write into them."""
    stages = ["init", "main"] if METHODS[key].init_stage else ["main"]
    for stage in stages:
        task, teacher, loader = build_task(key, teacher_path, cifar_folder, tmp_path / stage, stage)
        images, labels, index = next(loader.iterate(1))
        features = task._forward(images, labels, index, Progress())
        before = [t.clone() for t in [*features.teacher, features.teacher_logits]]
        if stage == "main":
            assert_reads_only_what_it_declares(task.method, features)
        loss = task.method.init_loss(features) if stage == "init" else task.method.loss(features) \
            if task.method.has_method_loss else None
        if loss is not None:
            loss.backward()
        after = [*features.teacher, features.teacher_logits]
        assert all(torch.equal(a, b) for a, b in zip(before, after)), f"{key} modified a teacher output"
        # and the folded teacher gives the training step what the strictly loaded teacher gives
        mode = {"is_feat": True, "preact": task.method.teacher_uses_preact()} if features.teacher else {}
        for got, expected in zip(after, outputs(teacher, images, mode)):
            assert float((got - expected).abs().max() / expected.abs().max()) <= TOLERANCE


def assert_reads_only_what_it_declares(method: Any, features: Any) -> None:
    """A method declaring ``teacher_reads`` 'logits' or 'embedding' computes the same loss from only
    those teacher outputs (what a teacher bank provides) as from all of them."""
    if method.teacher_reads == "maps" or not method.has_method_loss:
        return
    kept = [features.teacher[-1]] if method.teacher_reads == "embedding" else []
    twin = copy.deepcopy(method)  # a loss may keep state from its first call (CRD's normalisation constant)
    torch.manual_seed(0)
    full = twin.loss(features)
    torch.manual_seed(0)
    twin = copy.deepcopy(method)
    assert torch.equal(twin.loss(dataclasses.replace(features, teacher=kept)), full), method.key


# ------------------------------------------------------------------ CRD: memory update after the step

def crd_options() -> argparse.Namespace:
    return argparse.Namespace(s_dim=16, t_dim=24, feat_dim=8, n_data=200, nce_k=32, nce_t=0.07, nce_m=0.5)


def test_crd_update_after_the_step_is_bit_identical() -> None:
    torch.manual_seed(0)
    inline = CRDLoss(crd_options())
    deferred = CRDLoss(crd_options(), defer_update=True)
    deferred.load_state_dict(inline.state_dict())
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.5, momentum=0.9) for m in (inline, deferred)]
    for step in range(4):
        f_s, f_t = torch.randn(8, 16), torch.randn(8, 24)
        idx = torch.randperm(200)[:8]
        contrast = torch.randint(200, (8, 33))
        contrast[:, 0] = idx
        for module, optimizer in zip((inline, deferred), optimizers):
            optimizer.zero_grad()
            loss = module(f_s, f_t, idx, contrast)
            loss.backward()
            optimizer.step()
            module.apply_memory_update()  # no-op for the inline module
            module.last_loss = loss.detach()
        assert torch.equal(inline.last_loss, deferred.last_loss), step
        for key, value in inline.state_dict().items():
            assert torch.equal(value, deferred.state_dict()[key]), (step, key)


def test_crd_pending_update_is_applied_before_the_next_forward() -> None:
    module = CRDLoss(crd_options(), defer_update=True)
    before = module.contrast.memory_v1.clone()
    idx = torch.arange(8)
    with torch.no_grad():
        module(torch.randn(8, 16), torch.randn(8, 24), idx, torch.randint(200, (8, 33)))
        assert torch.equal(module.contrast.memory_v1, before)  # still pending
        module(torch.randn(8, 16), torch.randn(8, 24), idx + 8, torch.randint(200, (8, 33)))
    assert not torch.equal(module.contrast.memory_v1[:8], before[:8])  # applied by the second forward


# ------------------------------------------------------------------ --channels_last / --compile

def test_speed_flags_parse_auto_on_off(teacher_path: Path) -> None:
    base = ["--path_t", str(teacher_path)]
    opt = train_student.parse_args(base)
    assert (opt.channels_last, opt.compile) == ("auto", "auto")
    opt = train_student.parse_args(base + ["--channels_last", "--compile"])  # the old bare switches
    assert (opt.channels_last, opt.compile) == ("on", "on")
    opt = train_student.parse_args(base + ["--channels_last", "off", "--compile", "off"])
    assert (opt.channels_last, opt.compile) == ("off", "off")


def test_auto_resolves_as_documented_on_cpu() -> None:
    cpu = torch.device("cpu")
    vector_isa = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
    assert runner.resolve_channels_last("auto", cpu) is vector_isa
    assert runner.resolve_channels_last("on", cpu) is True and runner.resolve_channels_last("off", cpu) is False
    threshold = COMPILE_MIN_STEPS["cpu"]
    assert runner.resolve_compile("auto", cpu, threshold - 1) is False
    assert runner.resolve_compile("auto", cpu, threshold) is True
    assert runner.resolve_compile("off", cpu, 10**9) is False and runner.resolve_compile("on", cpu, 1) is True
    assert runner.resolve_compile("auto", torch.device("meta"), 10**9) is False


def test_cpu_threads_follow_omp_num_threads_outside_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    from helper.util import configure_threads

    threads = torch.get_num_threads()
    try:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        configure_threads(torch.device("cpu"))
        assert torch.get_num_threads() == 3
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # under torchrun: the cores split among its processes
        configure_threads(torch.device("cpu"))
        assert torch.get_num_threads() == max(1, cpu_count() // 2)
    finally:
        torch.set_num_threads(threads)


def test_help_says_what_auto_picks(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        train_student.parse_args(["-h"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--channels_last [{auto,on,off}]" in text and "--compile [{auto,on,off}]" in text
    assert "auto: on for CUDA GPUs" in text and f"{COMPILE_MIN_STEPS['cpu']:,} (CPU)" in text


def failing_backend(graph_module: torch.fx.GraphModule, example_inputs: list) -> None:
    raise RuntimeError("simulated compiler failure (no C++ compiler)")


@pytest.mark.slow
def test_compile_failure_falls_back_to_eager_with_one_warning(monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=failing_backend))
    monkeypatch.setattr(runner, "_compile_warned", False)
    opt = argparse.Namespace(channels_last=False, compile=True, sync_bn=False)
    models = [runner.prepare_model(model_dict["resnet8"](num_classes=10), opt, torch.device("cpu")) for _ in range(2)]
    images = torch.randn(2, 3, 32, 32)
    for model in models:
        reference = copy.deepcopy(model)
        reference._compiled_call_impl = None
        torch.testing.assert_close(model(images), reference(images))
        assert model._compiled_call_impl is None  # eager from now on
        model(images).sum().backward()
    output = capsys.readouterr()
    assert output.err.count("warning: torch.compile failed") == 1
    # what reports the configuration says what ran: the flags (checkpoints) and one corrected speed line
    assert opt.compile is False and not any(runner.runs_compiled(model) for model in models)
    assert output.out.count("speed: channels_last off, compile off (torch.compile failed") == 1


@pytest.mark.slow
def test_benchmark_rows_report_a_compile_fallback_as_eager(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import importlib.util

    monkeypatch.setattr(sys, "path", list(sys.path))  # the benchmark script extends both on import
    monkeypatch.setenv("DISTILLERS_OFFLINE", "1")
    spec = importlib.util.spec_from_file_location("bench_throughput", ROOT / "bench" / "throughput.py")
    throughput = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_throughput", throughput)  # dataclasses look their module up
    spec.loader.exec_module(throughput)
    monkeypatch.setenv("DISTILLERS_BENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=failing_backend))
    monkeypatch.setattr(runner, "_compile_warned", False)
    args = throughput.parse_args(["--model_t", "resnet8", "--model_s", "resnet8", "--device", "cpu", "--n_train",
                                  "128", "--batch_size", "8", "--steps", "1", "--warmup", "1", "--rounds", "1",
                                  "--configs", "compile=on"])
    (record,) = throughput.run(args)["records"]
    assert record["compile"] is False


def test_compile_unavailable_at_call_time_falls_back(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    def unsupported(*args: object, **kwargs: object) -> None:
        raise RuntimeError("torch.compile is not supported on this Python")

    monkeypatch.setattr(torch, "compile", unsupported)
    monkeypatch.setattr(runner, "_compile_warned", False)
    model = runner.compile_with_fallback(model_dict["resnet8"](num_classes=10))
    assert model._compiled_call_impl is None
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    assert "torch.compile failed" in capsys.readouterr().err


def test_a_real_model_error_is_not_hidden_by_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)  # "compiled" = eager: same error
    model = runner.compile_with_fallback(model_dict["resnet8"](num_classes=10))
    with pytest.raises(RuntimeError):
        model(torch.randn(1, 5, 32, 32))  # wrong channel count


# ------------------------------------------------------------------ the device check, on the CPU

@pytest.mark.timeout(120)
def test_device_decode_with_loader_workers(tmp_path: Path) -> None:
    """--decode device with DataLoader workers: the undecoded JPEG bytes must cross to the main process
    (read_file's storage could not be shared, which left the loader waiting forever)."""
    from datagen import write_imagenet
    from dataset.imagenet import load_imagenet, make_imagenet_loaders

    data = load_imagenet(write_imagenet(tmp_path, n_classes=2, n_train_per_class=8, n_val_per_class=2))
    train, _ = make_imagenet_loaders(data, 4, "cpu", image_size=32, num_workers=2, seed=0, decode="device")
    for epoch in (1, 2):
        assert sum(images.shape[0] for images, _, _ in train.iterate(epoch)) == 16


@pytest.mark.slow
def test_gpu_check_quick_on_cpu(tmp_path: Path) -> None:
    """bench/gpu_check.py --device cpu --quick: every check runs and the table is printed (the compiled
    configurations run eagerly here: compiling on 2 CPU cores takes minutes; the fallback is tested above)."""
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--device", "cpu", "--quick",
                             "--no_compile", "--keep", str(tmp_path)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    checks = " ".join(table)
    for name in ("kd resnet8->resnet8", "crd resnet8->resnet8", "rrd resnet8->resnet8", "decode device",
                 "2 epochs + resume", "bf16", "fp16", "bank build resnet8"):
        assert name in checks, (name, table)
    assert "FAILED" not in result.stdout and "resumed == straight" in checks
