"""CRD (crd/): NCE loss, memory banks, CRDLoss and the on-device negative sampler.

The banks' all-rows-matmul scoring is checked against the reference's gather + bmm written out
here; losses against float64 NumPy loops with finite-difference gradients; the sampler against
its contract (positives, distinct other-class negatives, determinism, uniformity).
"""
from __future__ import annotations

import copy
import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.stats import chi2

from crd.criterion import ContrastLoss, CRDLoss, Embed
from crd.memory import ContrastMemory, ContrastSampler
from helpers import numeric_gradient

TOL = 1e-5
EPS = 1e-7




def contrast_loss_reference(x: np.ndarray, n_data: int) -> float:
    batch, columns = x.shape
    m, noise = columns - 1, 1.0 / n_data
    total = 0.0
    for b in range(batch):
        total += np.log(x[b, 0] / (x[b, 0] + m * noise + EPS))
        for j in range(1, columns):
            total += np.log(m * noise / (x[b, j] + m * noise + EPS))
    return -total / batch


# ---------------------------------------------------------------- ContrastLoss
def test_contrast_loss_matches_hand_formula() -> None:
    x = np.random.default_rng(0).uniform(1e-4, 2e-3, size=(3, 6))
    scores = torch.tensor(x, requires_grad=True)
    value = ContrastLoss(n_data=500)(scores)
    value.backward()
    assert value.item() == pytest.approx(contrast_loss_reference(x, 500), rel=1e-10)
    numeric = numeric_gradient(lambda v: contrast_loss_reference(v, 500), x, step=1e-9)
    np.testing.assert_allclose(scores.grad.numpy(), numeric, rtol=1e-4)
    # the reference's (B, K+1, 1) layout is accepted too
    assert ContrastLoss(500)(torch.tensor(x).unsqueeze(2)).item() == pytest.approx(value.item())


# ---------------------------------------------------------------- ContrastMemory
def naive_memory_step(memory: dict, v1, v2, y, idx, temperature, momentum):
    """The reference's computation: gather B x (K+1) x D rows, bmm, exp, Z once, momentum update."""
    batch, columns = idx.shape
    n_data, dims = memory["v1"].shape
    rows_v1 = torch.index_select(memory["v1"], 0, idx.view(-1)).view(batch, columns, dims)
    rows_v2 = torch.index_select(memory["v2"], 0, idx.view(-1)).view(batch, columns, dims)
    out_v2 = torch.exp(torch.bmm(rows_v1, v2.view(batch, dims, 1)).squeeze(2) / temperature)
    out_v1 = torch.exp(torch.bmm(rows_v2, v1.view(batch, dims, 1)).squeeze(2) / temperature)
    if memory["Z_v1"] < 0:
        memory["Z_v1"] = out_v1.mean().item() * n_data
    if memory["Z_v2"] < 0:
        memory["Z_v2"] = out_v2.mean().item() * n_data
    with torch.no_grad():
        for key, v in (("v1", v1), ("v2", v2)):
            updated = memory[key].clone()
            for b in range(batch):
                row = memory[key][y[b]] * momentum + v[b] * (1 - momentum)
                updated[y[b]] = row / row.norm()
            memory[key] = updated
    return out_v1 / memory["Z_v1"], out_v2 / memory["Z_v2"]


def unit_rows(*shape: int) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(*shape, dtype=torch.float64), dim=1)


def test_memory_bank_initialisation() -> None:
    memory = ContrastMemory(inputSize=12, outputSize=1000, K=5)
    bound = 1 / np.sqrt(12 / 3)
    for bank in (memory.memory_v1, memory.memory_v2):
        assert bank.shape == (1000, 12)
        assert bank.abs().max().item() <= bound and bank.abs().max().item() > 0.9 * bound
    assert memory.Z_v1.item() == -1 and memory.Z_v2.item() == -1
    assert {"memory_v1", "memory_v2", "Z_v1", "Z_v2"} <= set(memory.state_dict())


def test_all_rows_matmul_equals_naive_gather_bmm_over_several_steps() -> None:
    torch.manual_seed(0)
    n_data, dims, K, batch, temperature, momentum = 40, 8, 6, 5, 0.07, 0.5
    memory = ContrastMemory(dims, n_data, K, temperature, momentum).double()
    naive = {"v1": memory.memory_v1.clone(), "v2": memory.memory_v2.clone(), "Z_v1": -1.0, "Z_v2": -1.0}
    for step in range(3):
        y = torch.randperm(n_data)[:batch]
        idx = torch.randint(n_data, (batch, K + 1))
        if step != 1:
            idx[:, 0] = y  # exact mode; step 1 has a positive that is not y (relax mode)
        v1, v2 = unit_rows(batch, dims).requires_grad_(), unit_rows(batch, dims).requires_grad_()
        n1, n2 = v1.detach().clone().requires_grad_(), v2.detach().clone().requires_grad_()
        weights1, weights2 = torch.rand(batch, K + 1, dtype=torch.float64), torch.rand(batch, K + 1, dtype=torch.float64)

        out_v1, out_v2 = memory(v1, v2, y, idx)
        ref_v1, ref_v2 = naive_memory_step(naive, n1, n2, y, idx, temperature, momentum)
        torch.testing.assert_close(out_v1, ref_v1, rtol=1e-10, atol=0)
        torch.testing.assert_close(out_v2, ref_v2, rtol=1e-10, atol=0)
        assert memory.Z_v1.item() == pytest.approx(naive["Z_v1"], rel=1e-12)
        assert memory.Z_v2.item() == pytest.approx(naive["Z_v2"], rel=1e-12)
        torch.testing.assert_close(memory.memory_v1, naive["v1"], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(memory.memory_v2, naive["v2"], rtol=1e-12, atol=1e-12)
        # backward runs after the in-place bank update and still sees the pre-update rows
        ((out_v1 * weights1).sum() + (out_v2 * weights2).sum()).backward()
        ((ref_v1 * weights1).sum() + (ref_v2 * weights2).sum()).backward()
        torch.testing.assert_close(v1.grad, n1.grad, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(v2.grad, n2.grad, rtol=1e-10, atol=1e-12)

    with torch.no_grad():  # no autograd: no snapshot, same numbers
        y, idx = torch.arange(batch), torch.randint(n_data, (batch, K + 1))
        v1, v2 = unit_rows(batch, dims), unit_rows(batch, dims)
        out_v1, out_v2 = memory(v1, v2, y, idx)
        ref_v1, ref_v2 = naive_memory_step(naive, v1, v2, y, idx, temperature, momentum)
    torch.testing.assert_close(out_v1, ref_v1, rtol=1e-10, atol=0)
    torch.testing.assert_close(memory.memory_v2, naive["v2"], rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- CRDLoss
def crd_options(**overrides) -> SimpleNamespace:
    values = dict(s_dim=5, t_dim=7, feat_dim=4, n_data=30, nce_k=6, nce_t=0.07, nce_m=0.5)
    values.update(overrides)
    return SimpleNamespace(**values)


def crd_reference(f_s, f_t, module: CRDLoss, banks, idx, z_values=None):
    """Returns (loss, (Z_v1, Z_v2)); Z is computed from these scores unless given."""

    def embed(x, linear):
        out = np.array([linear.weight.detach().numpy() @ row + linear.bias.detach().numpy() for row in x])
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    s, t = embed(f_s, module.embed_s.linear), embed(f_t, module.embed_t.linear)
    temperature, n_data = module.contrast.T, banks[0].shape[0]
    batch, columns = idx.shape
    out_s, out_t = np.zeros((batch, columns)), np.zeros((batch, columns))
    for b in range(batch):
        for j in range(columns):
            out_s[b, j] = np.exp(np.dot(banks[1][idx[b, j]], s[b]) / temperature)  # teacher bank
            out_t[b, j] = np.exp(np.dot(banks[0][idx[b, j]], t[b]) / temperature)  # student bank
    if z_values is None:
        z_values = (out_s.mean() * n_data, out_t.mean() * n_data)
    loss = contrast_loss_reference(out_s / z_values[0], n_data) + contrast_loss_reference(out_t / z_values[1], n_data)
    return loss, z_values


def test_crd_loss_matches_reference_value_and_gradient() -> None:
    torch.manual_seed(0)
    module = CRDLoss(crd_options()).double()
    rng = np.random.default_rng(1)
    f_s, f_t = rng.standard_normal((4, 5)), rng.standard_normal((4, 7))
    idx = torch.randint(30, (4, 7))
    y = torch.tensor([3, 8, 11, 20])
    idx[:, 0] = y
    banks = (module.contrast.memory_v1.clone().numpy(), module.contrast.memory_v2.clone().numpy())
    expected, z_values = crd_reference(f_s, f_t, module, banks, idx.numpy())

    student = torch.tensor(f_s, requires_grad=True)
    value = module(student, torch.tensor(f_t), y, idx)
    value.backward()
    assert value.dim() == 0
    assert value.item() == pytest.approx(expected, rel=1e-8)
    assert (module.contrast.Z_v1.item(), module.contrast.Z_v2.item()) == pytest.approx(z_values, rel=1e-10)
    numeric = numeric_gradient(lambda s: crd_reference(s, f_t, module, banks, idx.numpy(), z_values)[0], f_s)
    np.testing.assert_allclose(student.grad.numpy(), numeric, rtol=1e-5, atol=TOL)


def test_embed_flattens_and_normalises() -> None:
    embed = Embed(dim_in=12, dim_out=5)
    out = embed(torch.randn(3, 3, 2, 2))
    assert out.shape == (3, 5)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))


def test_crd_loss_falls_when_the_student_copies_the_teacher() -> None:
    """Banks filled as after training (each holds its network's embedding of every sample):
    a student whose embeddings equal the teacher's gets a lower loss than an independent one."""
    torch.manual_seed(0)
    opt = crd_options(s_dim=16, t_dim=16, feat_dim=16, n_data=200, nce_k=32)
    for trial in range(3):
        module = CRDLoss(opt)
        module.embed_s.load_state_dict(module.embed_t.state_dict())
        teacher_table = torch.randn(200, 16)
        y = torch.randperm(200)[:8]
        idx = torch.cat([y.view(-1, 1), torch.randint(200, (8, 32))], dim=1)
        losses = []
        for student_table in (teacher_table.clone(), torch.randn(200, 16)):
            world = copy.deepcopy(module)
            with torch.no_grad():
                world.contrast.memory_v1.copy_(world.embed_s(student_table))
                world.contrast.memory_v2.copy_(world.embed_t(teacher_table))
            losses.append(world(student_table[y], teacher_table[y], y, idx).item())
        copied, independent = losses
        assert copied < independent


def test_crd_loss_samples_when_no_contrast_indices_are_given() -> None:
    torch.manual_seed(0)
    labels = torch.arange(30) % 3
    module = CRDLoss(crd_options())
    y = torch.tensor([0, 4, 8, 13])
    seen = []
    original = module.contrast.forward

    def spy(v1, v2, y_, idx=None):
        seen.append(idx)
        return original(v1, v2, y_, idx)

    module.contrast.forward = spy
    module(torch.randn(4, 5), torch.randn(4, 7), y)  # uniform, positive first
    assert seen[-1].shape == (4, 7) and torch.equal(seen[-1][:, 0], y)

    module.sampler = ContrastSampler(labels, nce_k=6, mode="exact")
    module.generator = torch.Generator().manual_seed(7)
    module(torch.randn(4, 5), torch.randn(4, 7), y)
    expected = ContrastSampler(labels, 6, "exact")(y, generator=torch.Generator().manual_seed(7))
    assert torch.equal(seen[-1], expected)
    assert (labels[seen[-1][:, 1:]] != labels[y].view(-1, 1)).all()


# ---------------------------------------------------------------- ContrastSampler
def check_contract(sampler: ContrastSampler, labels: torch.Tensor, index: torch.Tensor, out: torch.Tensor) -> None:
    assert out.shape == (len(index), sampler.nce_k + 1) and out.dtype == torch.long
    for row, anchor in zip(out.tolist(), index.tolist()):
        if sampler.mode == "exact":
            assert row[0] == anchor
        else:
            assert labels[row[0]] == labels[anchor]
        negatives = row[1:]
        assert len(set(negatives)) == len(negatives), "negatives must be distinct"
        assert all(labels[n] != labels[anchor] for n in negatives), "negatives from another class"
        assert all(0 <= n < len(labels) for n in negatives)


@pytest.mark.parametrize("mode", ["exact", "relax"])
def test_sampler_contract_on_unbalanced_classes(mode) -> None:
    generator = torch.Generator().manual_seed(0)
    labels = torch.tensor([0] * 7 + [1] * 3 + [2] * 12 + [4] * 5)  # class 3 empty, 27 samples
    nce_k = 27 - 12  # every negative of the largest class
    sampler = ContrastSampler(labels, nce_k, mode)
    for trial in range(20):
        index = torch.randint(27, (9,), generator=generator)
        check_contract(sampler, labels, index, sampler(index, generator=generator))
    index = torch.arange(27)
    check_contract(sampler, labels, index, sampler(index, labels[index], generator=generator))


def test_sampler_at_cifar_like_scale() -> None:
    labels = torch.arange(5000) % 50
    sampler = ContrastSampler(labels, nce_k=4000, mode="relax")
    index = torch.randperm(5000)[:16]
    check_contract(sampler, labels, index, sampler(index))


def test_sampler_is_deterministic_given_a_seeded_generator() -> None:
    labels = torch.arange(100) % 10
    index = torch.tensor([1, 5, 42, 77])
    for mode in ("exact", "relax"):
        sampler = ContrastSampler(labels, 30, mode)
        first = sampler(index, generator=torch.Generator().manual_seed(3))
        second = sampler(index, generator=torch.Generator().manual_seed(3))
        other = sampler(index, generator=torch.Generator().manual_seed(4))
        assert torch.equal(first, second)
        assert not torch.equal(first, other)


def chi_square_statistic(counts: np.ndarray) -> float:
    expected = counts.sum() / len(counts)
    return float(((counts - expected) ** 2 / expected).sum())


def test_sampler_negatives_cover_the_other_classes_uniformly() -> None:
    labels = torch.arange(30) % 3  # anchor 0 has 20 negatives
    sampler = ContrastSampler(labels, nce_k=8, mode="exact")
    generator = torch.Generator().manual_seed(0)
    counts = np.zeros(30)
    for draw in range(1500):
        out = sampler(torch.tensor([0]), generator=generator)
        np.add.at(counts, out[0, 1:].numpy(), 1)
    negatives = counts[(labels != 0).numpy()]
    assert counts[(labels == 0).numpy()].sum() == 0
    assert chi_square_statistic(negatives) < chi2.ppf(1 - 1e-4, df=len(negatives) - 1)


def test_sampler_draws_every_subset_of_negatives_equally_often() -> None:
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2])  # anchor 0: 5 negatives, 10 possible pairs
    sampler = ContrastSampler(labels, nce_k=2, mode="exact")
    generator = torch.Generator().manual_seed(1)
    subsets = {pair: 0 for pair in itertools.combinations(range(2, 7), 2)}
    for draw in range(2000):
        out = sampler(torch.tensor([0]), generator=generator)
        subsets[tuple(sorted(out[0, 1:].tolist()))] += 1
    counts = np.array(list(subsets.values()))
    assert chi_square_statistic(counts) < chi2.ppf(1 - 1e-4, df=len(counts) - 1)


def test_relax_positive_is_uniform_over_the_class() -> None:
    labels = torch.tensor([0, 1, 0, 1, 0, 2, 0, 2])  # class 0 = {0, 2, 4, 6}
    sampler = ContrastSampler(labels, nce_k=2, mode="relax")
    generator = torch.Generator().manual_seed(2)
    positives = torch.cat([sampler(torch.tensor([2, 4]), generator=generator)[:, 0] for _ in range(800)])
    counts = np.bincount(positives.numpy(), minlength=8)
    assert counts[[1, 3, 5, 7]].sum() == 0
    assert chi_square_statistic(counts[[0, 2, 4, 6]]) < chi2.ppf(1 - 1e-4, df=3)


def test_sampler_draws_with_replacement_where_a_class_has_too_few_negatives() -> None:
    """As RepDistiller's sampler: replace=True for an anchor whose class has fewer than nce_k negatives,
    distinct negatives for the others (classes 0 and 2 have 7 and 8 negatives, class 1 has 5)."""
    labels = torch.tensor([0] * 3 + [1] * 5 + [2] * 2)
    ContrastSampler(labels, nce_k=5)  # every class has enough
    sampler = ContrastSampler(labels, nce_k=6)
    assert sampler.short_classes == [1] and sampler.smallest_negatives == 5 and sampler.num_classes == 3
    generator = torch.Generator().manual_seed(0)
    counts = np.zeros(10)
    repeated = 0
    for draw in range(600):
        index = torch.tensor([0, 3, 8])  # classes 0, 1, 2
        out = sampler(index, generator=generator)
        assert out.shape == (3, 7) and torch.equal(out[:, 0], index)
        for row, anchor in zip(out.tolist(), index.tolist()):
            assert all(labels[n] != labels[anchor] for n in row[1:])
        assert len(set(out[0, 1:].tolist())) == 6 and len(set(out[2, 1:].tolist())) == 6  # enough: distinct
        repeated += len(set(out[1, 1:].tolist())) < 6  # 6 draws from 5: always a repeat
        np.add.at(counts, out[1, 1:].numpy(), 1)
    assert repeated == 600
    negatives = counts[(labels != 1).numpy()]
    assert counts[(labels == 1).numpy()].sum() == 0
    assert chi_square_statistic(negatives) < chi2.ppf(1 - 1e-4, df=len(negatives) - 1)  # uniform


def test_sampler_with_replacement_is_reproducible_and_far_above_the_dataset() -> None:
    labels = torch.arange(40) % 4
    sampler = ContrastSampler(labels, nce_k=16384)  # the default --nce_k on 40 images
    index = torch.tensor([0, 1, 2, 3, 4])
    first = sampler(index, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, sampler(index, generator=torch.Generator().manual_seed(3)))
    assert first.shape == (5, 16385) and bool((labels[first[:, 1:]] != labels[index, None]).all())
    with pytest.raises(ValueError, match="one class"):
        ContrastSampler(torch.zeros(5, dtype=torch.long), nce_k=2)
    with pytest.raises(ValueError):
        ContrastSampler(labels, nce_k=2, mode="approximate")

@pytest.mark.slow
def test_default_nce_k_on_a_small_dataset_trains_with_one_notice(cifar_folder, tmp_path, capsys) -> None:
    """--nce_k 16384 (the default) on 500 images: the references draw with replacement, and so does this."""
    from training import student as train_student
    from helpers import write_published_teacher

    teacher = write_published_teacher(tmp_path, "resnet8")
    best = train_student.main(["--path_t", str(teacher), "--distill", "crd", "--model_s", "resnet8", "--epochs", "1",
                               "--batch_size", "16", "--data_folder", str(cifar_folder), "--save_folder",
                               str(tmp_path), "--device", "cpu", "--no_progress"])
    out = capsys.readouterr().out
    assert out.count("drawn with replacement") == 1 and "--nce_k 16384 is more than the negatives" in out
    assert 0 <= best <= 100
