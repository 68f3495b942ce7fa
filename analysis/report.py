"""Teacher + students + test split -> every figure and the CSV/JSON numbers behind it, in one folder."""
from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from analysis import metrics, plots
from analysis.extract import LoadedModel, Outputs, extract, run_trial
from dataset.base import ImageData


@dataclass
class Settings:
    """How much of the test split each analysis uses."""

    num_samples: int = 1000  # samples for layer CKA and the t-SNE (a fixed random subset when there are more)
    classes: int = 10  # classes shown in the t-SNE (the first ones)
    batch_size: int = 256
    seed: int = 0


@dataclass
class LayerSimilarity:
    """Linear CKA between every student feature map (rows) and every teacher feature map (columns)."""

    matrix: np.ndarray
    student_layers: list[str]
    teacher_layers: list[str]


def analyze(teacher: LoadedModel, students: Sequence[LoadedModel], data: ImageData, out: Path,
            device: torch.device, settings: Settings) -> list[dict[str, Any]]:
    """Write tsne.png, logit_correlation.png, cka.png, reliability.png, class_accuracy.png and their numbers
    (CSV) plus summary.csv/summary.json into ``out``; return the summary rows (teacher first)."""
    out.mkdir(parents=True, exist_ok=True)
    models = [teacher, *students]
    make_labels_unique(models)
    subset = sample_subset(data.num_test, settings.num_samples, settings.seed)
    outputs, similarities = run_models(models, data, subset, device, settings)
    labels = data.test_labels
    rows = [summary_row(m, "teacher" if i == 0 else "student", o, outputs[0], labels)
            for i, (m, o) in enumerate(zip(models, outputs))]
    write_tsne(models, outputs, labels, out, settings)
    for row, calibration_error in zip(rows, write_calibration(models, outputs, labels, out)):
        row["ece_percent"] = 100 * calibration_error
    if students:
        correlation = write_logit_correlation(models, outputs, labels, data.num_classes, out)
        penultimate = write_cka(models, similarities, len(subset), out)
        write_class_accuracy(models, outputs, labels, data.num_classes, out)
        for row, mean_difference, cka_last in zip(rows[1:], correlation, penultimate):
            row["logit_corr_mean_abs_diff"] = mean_difference
            row["cka_penultimate"] = cka_last
    write_summary(rows, out, data, settings)
    return rows


def run_models(models: Sequence[LoadedModel], data: ImageData, subset: torch.Tensor, device: torch.device,
               settings: Settings) -> tuple[list[Outputs], list[LayerSimilarity]]:
    """One batched pass per model over the test split: logits and embeddings of every image, and linear CKA
    (Kornblith et al., ICML 2019; float64) of the feature maps of the ``subset`` images against the teacher's
    (first model), computed right away so that no student's maps or Gram matrices outlive its pass."""
    gram_device = device if device.type == "cuda" else torch.device("cpu")
    outputs, similarities, teacher_grams, teacher_layers = [], [], [], []
    for model in models:
        output = extract(model.model, data.test_images, data.mean, data.std, device, settings.batch_size, subset)
        grams = [metrics.centered_gram(layer, gram_device) for layer in output.feature_maps]
        layers = [f"{i}: {'x'.join(str(size) for size in layer.shape[1:])}"
                  for i, layer in enumerate(output.feature_maps)]
        output.feature_maps = None
        outputs.append(output)
        if not teacher_grams:
            teacher_grams, teacher_layers = grams, layers
        else:
            similarities.append(LayerSimilarity(metrics.cka_matrix(grams, teacher_grams), layers, teacher_layers))
    return outputs, similarities


def make_labels_unique(models: Sequence[LoadedModel]) -> None:
    """Tell apart models with the same label: by their --trial when those differ, else by ' #2', ' #3' ..."""
    by_label: dict[str, list[LoadedModel]] = {}
    for model in models:
        by_label.setdefault(model.label, []).append(model)
    for label, group in by_label.items():
        trials = [run_trial(model.path) for model in group]
        for number, (model, trial) in enumerate(zip(group, trials), start=1):
            if len(group) > 1 and None not in trials and len(set(trials)) == len(trials):
                model.label = f"{label} trial {trial}"
            elif number > 1:
                model.label = f"{label} #{number}"


def summary_row(model: LoadedModel, role: str, outputs: Outputs, teacher: Outputs,
                labels: torch.Tensor) -> dict[str, Any]:
    """Top-1 and top-1 agreement with the teacher, in % of the test split."""
    predicted = outputs.logits.argmax(dim=1)
    return {"model": model.label, "role": role, "arch": model.arch, "checkpoint": str(model.path),
            "test_acc1": 100 * float((predicted == labels).double().mean()),
            "agreement_with_teacher": 100 * float((predicted == teacher.logits.argmax(dim=1)).double().mean())}


def sample_subset(count: int, limit: int, seed: int) -> torch.Tensor:
    """Sorted indices of a fixed random subset of ``limit`` out of ``count`` (all when ``count`` <= ``limit``)."""
    if count <= limit:
        return torch.arange(count)
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:limit].sort().values


def write_tsne(models: Sequence[LoadedModel], outputs: Sequence[Outputs], labels: torch.Tensor, out: Path,
               settings: Settings) -> None:
    """t-SNE (van der Maaten and Hinton, JMLR 2008) of each model's penultimate embeddings of the test samples
    of the first ``settings.classes`` classes; scikit-learn, fixed seed, one OpenMP thread (its 2-thread
    Barnes-Hut gradient slows down ~20x when another process shares the cores)."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    shown = torch.unique(labels)[:settings.classes]
    candidates = torch.isin(labels, shown).nonzero().flatten()
    chosen = candidates[sample_subset(len(candidates), settings.num_samples, settings.seed)]
    chosen_labels = labels[chosen].numpy()
    panels, records = [], []
    for model, output in zip(models, outputs):
        embedding = output.embeddings[chosen].double().numpy()
        perplexity = float(min(30.0, max(1.0, (len(chosen) - 1) / 3)))
        with threadpool_limits(limits=1, user_api="openmp"):
            points = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                          random_state=settings.seed).fit_transform(embedding)
        panels.append((f"{model.label} ({model.arch})", points, chosen_labels))
        records += [(model.label, int(i), int(c), float(x), float(y))
                    for i, c, (x, y) in zip(chosen.tolist(), chosen_labels, points)]
    plots.plot_tsne(panels, out / "tsne.png")
    write_csv(out / "tsne_points.csv", ("model", "test_index", "class", "x", "y"), records)


def write_logit_correlation(models: Sequence[LoadedModel], outputs: Sequence[Outputs], labels: torch.Tensor,
                            num_classes: int, out: Path) -> list[float]:
    """|C_teacher - C_student| heatmap per student and the long-form matrix CSV; returns the off-diagonal means."""
    panels, records, means = [], [], []
    for model, output in zip(models[1:], outputs[1:]):
        difference, mean = metrics.correlation_difference(outputs[0].logits, output.logits, labels, num_classes)
        means.append(mean)
        names = [str(c) for c in range(num_classes)]
        panels.append((f"{model.label}\nmean {mean:.4f}", difference, names, names))
        records += [(model.label, i, j, float(difference[i, j]))
                    for i in range(num_classes) for j in range(num_classes)]
    vmax = max(0.05, float(np.nanmax([np.nanmax(p[1]) for p in panels])))
    plots.plot_heatmaps(panels, out / "logit_correlation.png", "|C_teacher - C_student| of class-mean logits",
                        "class", "class", 0.0, vmax, "viridis", "absolute difference")
    write_csv(out / "logit_correlation.csv", ("student", "class_i", "class_j", "abs_difference"), records)
    return means


def write_cka(models: Sequence[LoadedModel], similarities: Sequence[LayerSimilarity], num_samples: int,
              out: Path) -> list[float]:
    """One linear-CKA heatmap per student and the long-form CSV; returns each CKA of the last features."""
    panels, records = [], []
    for model, similarity in zip(models[1:], similarities):
        rows, columns = similarity.student_layers, similarity.teacher_layers
        panels.append((f"{model.label} ({model.arch})", similarity.matrix, rows, columns))
        records += [(model.label, i, rows[i], j, columns[j], float(similarity.matrix[i, j]))
                    for i in range(len(rows)) for j in range(len(columns))]
    plots.plot_heatmaps(panels, out / "cka.png", f"Linear CKA, student vs teacher features ({num_samples} test "
                        "samples)", f"teacher ({models[0].arch}) feature", "student feature", 0.0, 1.0, "magma",
                        "linear CKA")
    write_csv(out / "cka.csv", ("student", "student_layer", "student_shape", "teacher_layer", "teacher_shape",
                                "cka"), records)
    return [float(similarity.matrix[-1, -1]) for similarity in similarities]


def write_calibration(models: Sequence[LoadedModel], outputs: Sequence[Outputs], labels: torch.Tensor,
                      out: Path) -> list[float]:
    """ECE with 15 bins and a reliability diagram per model (Guo et al., ICML 2017); returns the ECEs."""
    results = [metrics.calibration(torch.softmax(o.logits.double(), dim=1), labels) for o in outputs]
    plots.plot_reliability([(m.label, r) for m, r in zip(models, results)], out / "reliability.png")
    records = [(m.label, b, float(r.bin_edges[b]), float(r.bin_edges[b + 1]), int(r.counts[b]),
                float(r.accuracy[b]), float(r.confidence[b]))
               for m, r in zip(models, results) for b in range(len(r.counts))]
    write_csv(out / "calibration_bins.csv", ("model", "bin", "lower", "upper", "count", "accuracy",
                                             "mean_confidence"), records)
    return [r.ece for r in results]


def write_class_accuracy(models: Sequence[LoadedModel], outputs: Sequence[Outputs], labels: torch.Tensor,
                         num_classes: int, out: Path) -> None:
    """Per-class top-1 of every model and the student-minus-teacher difference (sorted bar chart per student)."""
    accuracy = [metrics.per_class_accuracy(o.logits, labels, num_classes) for o in outputs]
    plots.plot_class_accuracy_difference([(m.label, a - accuracy[0]) for m, a in zip(models[1:], accuracy[1:])],
                                         out / "class_accuracy.png")
    records = [(m.label, c, float(a[c]), float(a[c] - accuracy[0][c]))
               for m, a in zip(models, accuracy) for c in range(num_classes)]
    write_csv(out / "class_accuracy.csv", ("model", "class", "test_acc1", "minus_teacher"), records)


def write_summary(rows: list[dict[str, Any]], out: Path, data: ImageData, settings: Settings) -> None:
    """summary.csv (one row per model) and summary.json (the same rows plus the settings)."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    write_csv(out / "summary.csv", columns, [[row.get(key, "") for key in columns] for row in rows])
    payload = {"dataset": data.name, "num_classes": data.num_classes, "num_test": data.num_test,
               "settings": vars(settings), "models": rows}
    (out / "summary.json").write_text(json.dumps(payload, indent=2, allow_nan=True) + "\n")


def write_csv(path: Path, header: Sequence[str], records: Iterable[Sequence[Any]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(records)
