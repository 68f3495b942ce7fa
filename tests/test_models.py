"""Tests for models/: RepDistiller-compatible names, shapes, features and helper modules.

The reference names and shapes are in ``tests/data/cifar_models.json`` (its ``source`` field says where
they come from: RepDistiller's model definitions and checkpoint keys).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models import (
    Connector,
    ConvReg,
    Embed,
    LinearEmbed,
    Normalize,
    Paraphraser,
    Translator,
    get_classifier,
    map_before_pool,
    model_dict,
    set_classifier,
)
from models.mobilenetv2 import MobileNetV2
from models.shufflenetv1 import ShuffleNet
from models.shufflenetv2 import ShuffleNetV2, channel_shuffle
from models.vgg import VGG
from models.wrn import WideResNet

REFERENCE_JSON = Path(__file__).resolve().parent / "data" / "cifar_models.json"

ARCHS = [
    "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "resnet8x4", "resnet32x4", "ResNet50", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2",
    "vgg8", "vgg11", "vgg13", "vgg16", "vgg19", "MobileNetV2", "ShuffleV1", "ShuffleV2",
]  # fmt: skip

# Number of modules returned by get_feat_modules(), per family (as in RepDistiller).
FEAT_MODULE_COUNTS = {"resnet": 6, "ResNet50": 6, "wrn": 4, "vgg": 10, "MobileNetV2": 2, "Shuffle": 5}


def family(arch: str) -> str:
    return next(prefix for prefix in FEAT_MODULE_COUNTS if arch.startswith(prefix))


def build(arch: str, num_classes: int = 100, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return model_dict[arch](num_classes=num_classes)


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Batch-2 forwards are faster on one thread, and far faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(REFERENCE_JSON.read_text())["models"]


def test_registry_lists_the_22_architectures(reference: dict) -> None:
    assert list(model_dict) == ARCHS
    assert sorted(reference) == sorted(ARCHS)


@pytest.mark.parametrize("arch", ARCHS)
def test_state_dict_names_and_shapes_match_reference(arch: str, reference: dict) -> None:
    model = build(arch)
    ours = [[key, list(value.shape)] for key, value in model.state_dict().items()]
    assert ours == reference[arch]["state_dict"]


@pytest.mark.parametrize("arch", ARCHS)
def test_parameter_count_matches_reference(arch: str, reference: dict) -> None:
    model = build(arch)
    assert sum(p.numel() for p in model.parameters()) == reference[arch]["num_parameters"]


@pytest.mark.parametrize("preact", [False, True])
@pytest.mark.parametrize("arch", ARCHS)
def test_feature_and_logit_shapes_match_reference(arch: str, preact: bool, reference: dict) -> None:
    model = build(arch).eval()
    with torch.no_grad():
        feats, logits = model(torch.randn(1, 3, 32, 32), is_feat=True, preact=preact)
    assert [list(f.shape[1:]) for f in feats] == reference[arch]["feature_shapes"]
    assert list(logits.shape[1:]) == reference[arch]["logit_shape"]


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_in_train_and_eval_mode(arch: str) -> None:
    model = build(arch)
    x = torch.randn(2, 3, 32, 32)
    for train in (True, False):
        model.train(train)
        with torch.no_grad():
            logits = model(x)
            feats, feat_logits = model(x, is_feat=True)
        assert isinstance(logits, torch.Tensor) and logits.shape == (2, 100)
        assert torch.isfinite(logits).all()
        assert feats[-1].shape == (2, get_classifier(model).in_features)
        if not train:
            torch.testing.assert_close(feat_logits, logits)


@pytest.mark.parametrize("arch", ARCHS)
def test_preact_features_are_the_stage_outputs_before_relu(arch: str) -> None:
    model = build(arch).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats, logits = model(x, is_feat=True)
        pre_feats, pre_logits = model(x, is_feat=True, preact=True)
    torch.testing.assert_close(pre_logits, logits)
    torch.testing.assert_close(pre_feats[0], feats[0])
    torch.testing.assert_close(pre_feats[-1], feats[-1])
    for i, (pre, out) in enumerate(zip(pre_feats[1:-1], feats[1:-1])):
        if isinstance(model, MobileNetV2):  # linear bottlenecks: no ReLU after a stage
            expected = out
            torch.testing.assert_close(pre, expected)
        elif isinstance(model, WideResNet):  # pre-activation blocks: preact = BN of the output
            with torch.no_grad():
                torch.testing.assert_close(pre, model.get_bn_before_relu()[i](out))
        elif isinstance(model, ShuffleNetV2):  # preact is taken before the channel shuffle
            torch.testing.assert_close(channel_shuffle(F.relu(pre), 2), out)
        else:
            torch.testing.assert_close(F.relu(pre), out)
            assert (pre < 0).any()


def test_wrn_preact_does_not_update_batch_norm_statistics() -> None:
    model = build("wrn_16_2").train()
    twin = copy.deepcopy(model)
    x = torch.randn(4, 3, 32, 32)
    feats, _ = model(x, is_feat=True, preact=True)
    twin(x, is_feat=True)
    for (name, ours), theirs in zip(model.state_dict().items(), twin.state_dict().values()):
        assert torch.equal(ours, theirs), name
    # in train mode the preact features use batch statistics, like the BN inside the next block
    bn = model.block2.layer[0].bn1
    plain, _ = model(x, is_feat=True)
    expected = F.batch_norm(plain[1], None, None, bn.weight, bn.bias, training=True, eps=bn.eps)
    torch.testing.assert_close(feats[1], expected)


@pytest.mark.parametrize("arch", ARCHS)
def test_map_before_pool_is_the_map_the_classifier_pools(arch: str) -> None:
    """Average-pooled, map_before_pool gives feats[-1] in train and eval mode (for WRN, MobileNetV2 and
    ShuffleV2 it is not feats[-2]), leaves the BatchNorm statistics as the forward left them, and
    back-propagates together with the forward's own graph."""
    model = build(arch)
    x = torch.randn(4, 3, 32, 32)
    for training in (True, False):
        model.train(training)
        feats, logits = model(x, is_feat=True)
        before = copy.deepcopy(model.state_dict())
        pooled = F.adaptive_avg_pool2d(map_before_pool(model, feats), 1).flatten(1)
        torch.testing.assert_close(pooled, feats[-1])
        for name, value in model.state_dict().items():
            assert torch.equal(value, before[name]), name
        (pooled.sum() + logits.sum()).backward()


@pytest.mark.parametrize("arch", ARCHS)
def test_repdistiller_checkpoint_round_trip(arch: str, tmp_path: Path) -> None:
    model = build(arch, seed=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    path = tmp_path / "ckpt_epoch_240.pth"
    torch.save({"model": model.state_dict(), "epoch": 240, "accuracy": 70.0, "optimizer": optimizer.state_dict()}, path)

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert checkpoint["epoch"] == 240 and checkpoint["accuracy"] == 70.0
    restored = build(arch, seed=2)
    restored.load_state_dict(checkpoint["model"], strict=True)
    for (name, ours), theirs in zip(restored.state_dict().items(), model.state_dict().values()):
        assert torch.equal(ours, theirs), name
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(restored.eval()(x), model.eval()(x))


@pytest.mark.parametrize("arch", ARCHS)
def test_feat_modules_and_bn_before_relu(arch: str) -> None:
    model = build(arch).eval()
    own_modules = {id(m) for m in model.modules()}

    feat_modules = model.get_feat_modules()
    assert isinstance(feat_modules, nn.ModuleList)
    assert len(feat_modules) == FEAT_MODULE_COUNTS[family(arch)]
    assert all(id(m) in own_modules for m in feat_modules)
    feat_params = {id(p) for p in feat_modules.parameters()}
    assert id(get_classifier(model).weight) not in feat_params
    assert id(model.state_dict(keep_vars=True)[next(iter(model.state_dict()))]) in feat_params  # stem

    with torch.no_grad():
        feats, _ = model(torch.randn(1, 3, 32, 32), is_feat=True)
    bns = model.get_bn_before_relu()
    assert len(bns) == len(feats) - 2  # one per stage
    for bn, stage_feat in zip(bns, feats[1:-1]):
        assert isinstance(bn, nn.BatchNorm2d) and id(bn) in own_modules
        channels = stage_feat.shape[1] // 2 if isinstance(model, ShuffleNetV2) else stage_feat.shape[1]
        assert bn.num_features == channels
    if isinstance(model, VGG):  # each block ends in its BN (the block's last ReLU runs in forward)
        assert bns == [model.block1[-1], model.block2[-1], model.block3[-1], model.block4[-1]]
    if isinstance(model, ShuffleNet):
        assert bns[-1] is model.layer3[-1].bn3


@pytest.mark.parametrize("arch", ARCHS)
def test_get_and_set_classifier(arch: str) -> None:
    model = build(arch)
    head = get_classifier(model)
    assert isinstance(head, nn.Linear) and head.out_features == 100
    *_, weight_key, bias_key = model.state_dict().keys()  # the head is the last layer
    assert model.state_dict(keep_vars=True)[weight_key] is head.weight
    assert model.state_dict(keep_vars=True)[bias_key] is head.bias

    new_head = nn.Linear(head.in_features, 10)
    set_classifier(model, new_head)
    assert get_classifier(model) is new_head
    assert list(model.state_dict())[-2:] == [weight_key, bias_key]
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="features"):
        set_classifier(model, nn.Linear(head.in_features + 1, 10))


def test_classifier_helpers_reject_models_without_a_head() -> None:
    with pytest.raises(TypeError):
        get_classifier(nn.Sequential(nn.Conv2d(3, 8, 3)))


# ---- helper modules -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "s_shape, t_shape, conv_type",
    [
        ((2, 16, 32, 32), (2, 64, 16, 16), nn.Conv2d),  # student 2x larger: 3x3 stride 2
        ((2, 16, 8, 8), (2, 64, 16, 16), nn.ConvTranspose2d),  # student 2x smaller: 4x4 transpose
        ((2, 16, 10, 9), (2, 64, 8, 8), nn.Conv2d),  # otherwise: kernel (1+Hs-Ht, 1+Ws-Wt)
        ((2, 16, 8, 8), (2, 64, 8, 8), nn.Conv2d),
    ],
)
def test_conv_reg_maps_student_shape_to_teacher_shape(s_shape, t_shape, conv_type) -> None:
    regressor = ConvReg(torch.Size(s_shape), torch.Size(t_shape))
    assert type(regressor.conv) is conv_type
    assert [type(m) for m in regressor.children()] == [conv_type, nn.BatchNorm2d, nn.ReLU]
    out = regressor(torch.randn(s_shape))
    assert out.shape == t_shape and (out >= 0).all()
    assert (ConvReg(s_shape, t_shape, use_relu=False)(torch.randn(s_shape)) < 0).any()


def test_conv_reg_kernel_sizes() -> None:
    assert ConvReg((2, 8, 32, 32), (2, 8, 16, 16)).conv.kernel_size == (3, 3)
    assert ConvReg((2, 8, 32, 32), (2, 8, 16, 16)).conv.stride == (2, 2)
    assert ConvReg((2, 8, 8, 8), (2, 8, 16, 16)).conv.kernel_size == (4, 4)
    assert ConvReg((2, 8, 10, 9), (2, 8, 8, 8)).conv.kernel_size == (3, 2)
    with pytest.raises(ValueError, match="student"):
        ConvReg((2, 8, 4, 4), (2, 8, 32, 32))


def test_connector_is_identity_where_shapes_match() -> None:
    s_shapes = [torch.Size((2, 16, 32, 32)), torch.Size((2, 32, 16, 16))]
    t_shapes = [torch.Size((2, 16, 32, 32)), torch.Size((2, 64, 8, 8))]
    connector = Connector(s_shapes, t_shapes)
    assert isinstance(connector.connectors[0], nn.Sequential) and len(connector.connectors[0]) == 0
    assert isinstance(connector.connectors[1], ConvReg) and not connector.connectors[1].use_relu
    feats = [torch.randn(s) for s in s_shapes]
    out = connector(feats)
    assert isinstance(out, list) and len(out) == 2
    assert torch.equal(out[0], feats[0])
    assert out[1].shape == t_shapes[1]
    with pytest.raises(ValueError):
        Connector(s_shapes, t_shapes[:1])


@pytest.mark.parametrize("use_bn", [False, True])
def test_paraphraser_shapes_and_keys(use_bn: bool) -> None:
    t_shape = (2, 64, 8, 8)
    paraphraser = Paraphraser(t_shape, k=0.5, use_bn=use_bn)
    feat = torch.randn(t_shape)
    factor, reconstruction = paraphraser(feat)
    assert factor.shape == (2, 32, 8, 8)
    assert reconstruction.shape == t_shape
    assert torch.equal(paraphraser(feat, is_factor=True), factor)
    convs = {k for k in paraphraser.state_dict() if k.endswith("weight") and paraphraser.state_dict()[k].dim() == 4}
    assert convs == {f"{part}.{i}.weight" for part in ("encoder", "decoder") for i in (0, 3, 6)}
    assert isinstance(paraphraser.decoder[0], nn.ConvTranspose2d)
    assert all(m.negative_slope == 0.1 for m in paraphraser.modules() if isinstance(m, nn.LeakyReLU))
    has_bn = any(isinstance(m, nn.BatchNorm2d) for m in paraphraser.modules())
    assert has_bn == use_bn


def test_translator_shape() -> None:
    translator = Translator((2, 32, 8, 8), (2, 64, 8, 8), k=0.5)
    assert translator(torch.randn(2, 32, 8, 8)).shape == (2, 32, 8, 8)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in translator.modules()) == 3
    wide = Translator((2, 16, 8, 8), (2, 256, 8, 8))
    assert wide(torch.randn(2, 16, 8, 8)).shape == (2, 128, 8, 8)


def test_embeddings_and_normalize() -> None:
    x = torch.randn(4, 8, 2, 2)
    assert LinearEmbed(32, 16)(x).shape == (4, 16)
    embedded = Embed(32, 16)(x)
    assert embedded.shape == (4, 16)
    torch.testing.assert_close(embedded.norm(dim=1), torch.ones(4))
    rows = torch.randn(5, 7)
    torch.testing.assert_close(Normalize(2)(rows), F.normalize(rows, dim=1))
