"""Matplotlib figures of the analysis, drawn with the Agg canvas (no display, no pyplot state).

Each function takes one panel per model (teacher and/or students) and writes one PNG.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from analysis.metrics import Calibration

MAX_COLUMNS = 4
MAX_TICK_LABELS = 20  # above this many rows/columns a heatmap shows no per-row tick labels
DPI = 100


def panel_grid(count: int, width: float = 3.4, height: float = 3.2) -> tuple[Figure, list[Axes]]:
    """A figure with ``count`` panels in rows of at most MAX_COLUMNS (unused grid cells hidden)."""
    columns = min(count, MAX_COLUMNS)
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(width * columns, height * rows), dpi=DPI, layout="constrained")
    axes = list(np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel())
    for extra in axes[count:]:
        extra.set_visible(False)
    return figure, axes[:count]


def save(figure: Figure, path: Path, title: str) -> Path:
    """Give ``figure`` a title and write it as PNG to ``path``."""
    figure.suptitle(title, fontsize=10, wrap=True)
    figure.savefig(path, format="png", dpi=DPI)
    return path


def plot_tsne(panels: Sequence[tuple[str, np.ndarray, np.ndarray]], path: Path) -> Path:
    """t-SNE scatter per model: panels of (title, points (n, 2), class labels (n,)), coloured by class."""
    figure, axes = panel_grid(len(panels))
    classes = np.unique(np.concatenate([labels for _, _, labels in panels]))
    colors = class_colors(len(classes))
    for axis, (title, points, labels) in zip(axes, panels):
        for value, color in zip(classes, colors):
            chosen = labels == value
            axis.scatter(points[chosen, 0], points[chosen, 1], s=5, color=color, label=str(value), linewidths=0)
        axis.set_title(title, fontsize=9)
        axis.set_xticks([])
        axis.set_yticks([])
    if len(classes) <= MAX_TICK_LABELS:
        axes[0].legend(fontsize=6, markerscale=2, ncol=2, loc="best", title="class", title_fontsize=6)
    return save(figure, path, "t-SNE of the penultimate embeddings (test split)")


def class_colors(count: int) -> list[tuple[float, ...]]:
    """Distinct colours for ``count`` classes: tab10/tab20, or evenly spaced hues beyond 20."""
    if count <= 20:
        cmap = matplotlib.colormaps["tab10" if count <= 10 else "tab20"]
        return [cmap(i) for i in range(count)]
    return [matplotlib.colormaps["hsv"](i / count) for i in range(count)]


def plot_heatmaps(panels: Sequence[tuple[str, np.ndarray, Sequence[str], Sequence[str]]], path: Path, title: str,
                  xlabel: str, ylabel: str, vmin: float, vmax: float, cmap: str, colorbar: str) -> Path:
    """One heatmap per panel: (title, matrix, row labels, column labels), a shared colour scale."""
    figure, axes = panel_grid(len(panels), width=3.8, height=3.4)
    image = None
    for axis, (panel_title, matrix, rows, columns) in zip(axes, panels):
        image = axis.imshow(np.ma.masked_invalid(matrix), vmin=vmin, vmax=vmax, cmap=cmap, aspect="auto",
                            origin="upper", interpolation="nearest")
        _tick_labels(axis, rows, columns)
        axis.set_title(panel_title, fontsize=9)
        axis.set_xlabel(xlabel, fontsize=8)
        axis.set_ylabel(ylabel, fontsize=8)
    figure.colorbar(image, ax=axes, shrink=0.8, label=colorbar)
    return save(figure, path, title)


def _tick_labels(axis: Axes, rows: Sequence[str] | None, columns: Sequence[str] | None) -> None:
    """Label every row/column when there are at most MAX_TICK_LABELS, else none; None leaves an axis as is."""
    for labels, set_ticks, set_labels, rotation in ((rows, axis.set_yticks, axis.set_yticklabels, 0),
                                                    (columns, axis.set_xticks, axis.set_xticklabels, 90)):
        if labels is None:
            continue
        if len(labels) <= MAX_TICK_LABELS:
            set_ticks(range(len(labels)))
            set_labels(labels, fontsize=6, rotation=rotation)
        else:
            set_ticks([])


def plot_reliability(panels: Sequence[tuple[str, Calibration]], path: Path) -> Path:
    """Reliability diagram per model (Guo et al., ICML 2017): accuracy per confidence bin against the
    diagonal of perfect calibration, the gap to each bin's mean confidence shaded."""
    figure, axes = panel_grid(len(panels), width=3.0, height=3.0)
    for axis, (title, result) in zip(axes, panels):
        centres = (result.bin_edges[:-1] + result.bin_edges[1:]) / 2
        width = result.bin_edges[1] - result.bin_edges[0]
        filled = result.counts > 0
        accuracy = np.where(filled, result.accuracy, 0.0)
        confidence = np.where(filled, result.confidence, 0.0)
        axis.bar(centres, accuracy, width=width, edgecolor="black", linewidth=0.5, color="#4c72b0",
                 label="accuracy")
        axis.bar(centres[filled], (confidence - accuracy)[filled], bottom=accuracy[filled], width=width,
                 facecolor="none", edgecolor="#c44e52", hatch="///", linewidth=0.8, label="gap to mean confidence")
        axis.plot([0, 1], [0, 1], linestyle="--", color="gray", linewidth=1)
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1)
        axis.set_xlabel("confidence", fontsize=8)
        axis.set_ylabel("accuracy", fontsize=8)
        axis.set_title(f"{title}\nECE {100 * result.ece:.2f}%", fontsize=9)
    axes[0].legend(fontsize=7, loc="upper left")
    return save(figure, path, f"Reliability diagrams ({len(panels[0][1].counts)} confidence bins)")


def plot_class_accuracy_difference(panels: Sequence[tuple[str, np.ndarray]], path: Path) -> Path:
    """Per-class top-1 accuracy of student minus teacher, sorted, one bar chart per student (one y-scale
    for all, so the bars of different students compare)."""
    figure, axes = panel_grid(len(panels), width=3.8, height=3.0)
    finite = np.concatenate([difference[np.isfinite(difference)] for _, difference in panels] + [np.zeros(1)])
    margin = 0.05 * max(float(finite.max() - finite.min()), 1.0)
    limits = (float(finite.min()) - margin, float(finite.max()) + margin)
    for axis, (title, difference) in zip(axes, panels):
        present = np.flatnonzero(np.isfinite(difference))
        order = present[np.argsort(difference[present], kind="stable")]
        values = difference[order]
        axis.bar(range(len(order)), values, width=0.9,
                 color=np.where(values >= 0, "#55a868", "#c44e52"))
        axis.axhline(0, color="black", linewidth=0.6)
        _tick_labels(axis, None, [str(c) for c in order])
        axis.set_xlabel("class (sorted)", fontsize=8)
        axis.set_ylabel("student - teacher (points)", fontsize=8)
        axis.set_title(f"{title}\nmean {np.mean(values):+.2f}", fontsize=9)
        axis.set_ylim(limits)
    return save(figure, path, "Per-class top-1 accuracy: student minus teacher")
