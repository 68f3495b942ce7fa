"""--dataset imagenet: the folder layout, the streaming loader, the torchvision architectures and one
distillation epoch (tv_resnet34 -> tv_resnet18 at 64x64) on a generated 2-class tree of JPEGs."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import torchvision

from training import student as train_student
from crd.memory import ContrastMemory, bank_bytes
from datagen import write_imagenet
from dataset.base import DatasetError
from dataset.imagenet import load_imagenet, make_imagenet_loaders
from helper.errors import UserError
from helpers import write_published_teacher
from models import imagenet_model_dict


@pytest.fixture(scope="module")
def imagenet_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """<folder>/imagenet/{train,val}/<wnid>/*.JPEG: 2 classes, 8 train and 4 val 72x88 images each."""
    return write_imagenet(tmp_path_factory.mktemp("imagenet_data"))


@pytest.fixture(scope="module")
def torchvision_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bare torchvision ResNet-34 state_dict for 2 classes, named as torchvision's hub files are."""
    torch.manual_seed(0)
    model = torchvision.models.resnet34(num_classes=2)
    model.train()
    with torch.no_grad():  # calibrate BatchNorm statistics so eval-mode activations stay O(1)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = None
        model(torch.randn(16, 3, 64, 64))
    path = tmp_path_factory.mktemp("hub") / "checkpoints" / "resnet34-generated.pth"
    path.parent.mkdir()
    torch.save(model.state_dict(), path)
    return path


def test_layout_classes_and_errors(imagenet_folder: Path, tmp_path: Path) -> None:
    data = load_imagenet(imagenet_folder)
    assert data.classes == ["n01440764", "n01441764"] and data.num_classes == 2
    assert (data.num_train, data.num_test) == (16, 8)
    assert data.train_labels.tolist() == [0] * 8 + [1] * 8
    with pytest.raises(DatasetError, match="imagenet/train/<wnid>/\\*.JPEG"):
        load_imagenet(tmp_path)
    flat = tmp_path / "imagenet"
    (flat / "train" / "n01440764").mkdir(parents=True)
    (flat / "val").mkdir()
    with pytest.raises(DatasetError, match="No images"):
        load_imagenet(tmp_path)


def test_loader_protocol_resume_shards_and_device_decode(imagenet_folder: Path) -> None:
    data = load_imagenet(imagenet_folder)

    def batches(batch_size: int, rank: int = 0, world_size: int = 1, decode: str = "workers", start: int = 0):
        train, test = make_imagenet_loaders(data, batch_size, "cpu", image_size=48, num_workers=0, seed=3,
                                            decode=decode, rank=rank, world_size=world_size)
        return list(train.iterate(2, start)), list(test.iterate(0)), train

    train, test, loader = batches(4)
    assert len(loader) == 4 and loader.num_samples == 16 and len(test) == 2
    images, labels, index = train[0]
    assert images.shape == (4, 3, 48, 48) and images.dtype == torch.float32
    assert torch.equal(labels, data.train_labels[index])
    assert sorted(torch.cat([b[2] for b in train]).tolist()) == list(range(16))  # a permutation
    resumed, _, _ = batches(4, start=2)
    assert all(torch.equal(a, b) for x, y in zip(train[2:], resumed) for a, b in zip(x, y))
    other_epoch = list(loader.iterate(3))
    assert not torch.equal(other_epoch[0][2], train[0][2])
    shards = [batches(2, rank, 2)[0] for rank in range(2)]  # 2 ranks x 2 = the batches of 4
    for step, (images, _, index) in enumerate(train):
        assert torch.equal(torch.cat([shards[0][step][2], shards[1][step][2]]), index)
        assert torch.equal(torch.cat([shards[0][step][0], shards[1][step][0]]), images)
    device_train, device_test, _ = batches(4, decode="device")  # batched decode_jpeg (CPU here, nvjpeg on CUDA)
    for (a, _, i), (b, _, j) in zip(train + test, device_train + device_test):
        assert torch.equal(i, j) and (a - b).abs().max() < 1e-5


def test_torchvision_weights_features_and_preact(torchvision_teacher: Path) -> None:
    state = torch.load(torchvision_teacher, weights_only=True)
    teacher = imagenet_model_dict["tv_resnet34"](num_classes=2)
    teacher.load_state_dict(state, strict=True)
    reference = torchvision.models.resnet34(num_classes=2)
    reference.load_state_dict(state)
    x = torch.randn(2, 3, 64, 64)
    teacher.eval(), reference.eval()
    with torch.no_grad():
        torch.testing.assert_close(teacher(x), reference(x))
        feats, logits = teacher(x, is_feat=True)
        preacts, _ = teacher(x, is_feat=True, preact=True)
    assert [tuple(f.shape) for f in feats] == [(2, 64, 32, 32), (2, 64, 16, 16), (2, 128, 8, 8), (2, 256, 4, 4),
                                               (2, 512, 2, 2), (2, 512)]
    for feat, preact in zip(feats[1:-1], preacts[1:-1]):
        assert torch.equal(feat, preact.relu()) and (preact < 0).any()
    assert train_student.teacher_arch(str(torchvision_teacher), {"model": state}) == "tv_resnet34"


@pytest.mark.parametrize("name", list(imagenet_model_dict))
def test_every_imagenet_model_has_the_feature_interface(name: str) -> None:
    model = imagenet_model_dict[name](num_classes=3)
    with torch.no_grad():
        feats, logits = model(torch.randn(2, 3, 32, 32), is_feat=True, preact=True)
    assert len(feats) == 6 and logits.shape == (2, 3) and feats[-1].shape == (2, feats[-2].shape[1])
    assert [f.shape[-1] for f in feats[:-1]] == [16, 8, 4, 2, 1]  # strides 2, 4, 8, 16, 32
    assert len(model.get_bn_before_relu()) == 4 and len(model.get_feat_modules()) > 0


def test_half_precision_crd_banks() -> None:
    assert bank_bytes(1_281_167, 128, "fp32") == 2 * 1_281_167 * 128 * 4
    assert bank_bytes(1_281_167, 128, "bf16") == bank_bytes(1_281_167, 128, "fp32") // 2
    memory = ContrastMemory(8, 20, 4, bank_dtype="bf16")
    student, teacher = torch.nn.functional.normalize(torch.randn(2, 8, requires_grad=True), dim=1), torch.randn(2, 8)
    out_student, _ = memory(student, teacher, torch.tensor([0, 1]), torch.tensor([[0, 5, 6, 7, 8], [1, 9, 2, 3, 4]]))
    out_student.sum().backward()
    assert memory.memory_v1.dtype == memory.memory_v2.dtype == torch.bfloat16 and out_student.dtype == torch.float32
    assert torch.allclose(memory.memory_v1[:2].float().norm(dim=1), torch.ones(2), atol=1e-2)


def student_argv(teacher: Path, data: Path, save: Path, *extra: str) -> list[str]:
    return ["--dataset", "imagenet", "--data_folder", str(data), "--path_t", str(teacher), "--model_s", "tv_resnet18",
            "--image_size", "64", "--batch_size", "8", "--num_workers", "2", "--device", "cpu", "--no_progress",
            "--save_folder", str(save), "--print_freq", "1", *extra]


@pytest.mark.slow
def test_one_distillation_epoch(imagenet_folder: Path, torchvision_teacher: Path, tmp_path: Path) -> None:
    argv = student_argv(torchvision_teacher, imagenet_folder, tmp_path, "--distill", "crd", "-a", "0.9", "--nce_k",
                        "6", "--crd_bank_dtype", "bf16", "--epochs", "1")
    train_student.main(argv)
    opt = train_student.parse_args(argv)
    assert (opt.model_t, opt.weight_decay, opt.lr_decay_epochs, opt.learning_rate) == \
        ("tv_resnet34", 1e-4, "30,60,90", pytest.approx(0.1 * 8 / 256))
    run_dir = tmp_path / "student" / "student_model" / train_student.run_name(opt)
    assert run_dir.name == "crd_imagenet_S_tv_resnet18_T_tv_resnet34_r_1_a_0.9_b_0.8_trial_1"  # --trial default 1
    with open(run_dir / "metrics.csv") as handle:
        (row,) = list(csv.DictReader(handle))
    assert all(float(row[name]) == float(row[name]) for name in ("ce", "kl", "crd", "test_acc1"))  # finite
    state = torch.load(run_dir / "tv_resnet18_last.pth", weights_only=True)
    assert state["arch"] == "tv_resnet18" and state["model_t"] == "tv_resnet34"
    assert state["task"]["method"]["criterion.contrast.memory_v1"].dtype == torch.bfloat16
    torchvision.models.resnet18(num_classes=2).load_state_dict(state["model"], strict=True)  # torchvision keys


def test_imagenet_flags_and_errors(imagenet_folder: Path, torchvision_teacher: Path, tmp_path: Path) -> None:
    opt = train_student.parse_args(student_argv(torchvision_teacher, imagenet_folder, tmp_path, "--weight_decay",
                                                "5e-4", "--learning_rate", "0.2"))
    assert (opt.weight_decay, opt.learning_rate, opt.epochs) == (5e-4, 0.2, 100)  # passed flags win
    cifar = train_student.parse_args(["--path_t", str(write_published_teacher(tmp_path, "resnet8"))])
    assert (cifar.epochs, cifar.weight_decay, cifar.image_size) == (240, 5e-4, None)
    with pytest.raises(UserError, match="CIFAR architecture"):
        train_student.parse_args(student_argv(torchvision_teacher, imagenet_folder, tmp_path, "--model_s", "resnet8"))
    with pytest.raises(UserError, match="--image_size applies to --dataset imagenet only"):
        train_student.parse_args(["--path_t", str(tmp_path / "models" / "resnet8_vanilla" / "ckpt_epoch_240.pth"),
                                  "--image_size", "64"])
