"""Report figures (ROC/DET, score histograms, latency) written straight to PNG.

Figures are built on ``matplotlib.figure.Figure`` with an explicit Agg canvas, never through
pyplot, so nothing registers in pyplot's global figure list, no GUI backend is touched on a
headless Jetson, and concurrent callers cannot leak state into each other. matplotlib and
scipy are imported inside the functions: the device runtime only pays for them when plotting.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.metrics import eer, roc

DET_TICKS = (0.0001, 0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95)


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, out_png: str | Path) -> Path:
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out


def plot_roc_det(
    curves: Mapping[str, tuple[Any, Any]],
    out_png: str | Path,
    title: str,
    operating_points: Mapping[str, float] | None = None,
) -> Path:
    """ROC (TAR vs FAR, log FAR axis) and DET (normal-deviate axes) side by side.

    ``curves`` maps a label to (genuine, impostor) scores; the legend shows each EER.
    ``operating_points`` maps a label to a target FAR drawn as a vertical line on both panels.
    A FAR or FRR of exactly 0 or 1 cannot be shown on log or probit axes, so rates are
    clipped to [0.5/n, 1 - 0.5/n] (n = number of scores behind that rate) for display only.
    """
    from scipy.stats import norm

    fig = _figure(12, 5.2)
    ax_roc, ax_det = fig.subplots(1, 2)
    lowest = 1.0
    for label, (genuine, impostor) in curves.items():
        far, frr, _ = roc(genuine, impostor)
        n_g, n_i = np.asarray(genuine).size, np.asarray(impostor).size
        far_c = np.clip(far, 0.5 / n_i, 1 - 0.5 / n_i)
        frr_c = np.clip(frr, 0.5 / n_g, 1 - 0.5 / n_g)
        lowest = min(lowest, 0.5 / n_i, 0.5 / n_g)
        rate, _ = eer(genuine, impostor)
        name = f"{label} (EER {100 * rate:.2f}%)"
        ax_roc.step(far_c, 1 - frr, where="post", label=name)
        ax_det.plot(norm.ppf(far_c), norm.ppf(frr_c), label=name)
    ax_roc.set_xscale("log")
    ax_roc.set_xlim(max(lowest, 1e-5), 1.0)
    ax_roc.set_ylim(0.0, 1.01)
    ax_roc.set_xlabel("false accept rate")
    ax_roc.set_ylabel("true accept rate")
    ax_roc.set_title("ROC")
    ax_roc.grid(True, which="both", alpha=0.3)

    ticks = [t for t in DET_TICKS if t >= min(lowest, 0.01) * 0.99]
    pos = norm.ppf(ticks)
    lim = (norm.ppf(max(min(lowest, 0.01), 1e-5)), norm.ppf(0.95))
    for setter, tick_setter, label_setter in (
        (ax_det.set_xlim, ax_det.set_xticks, ax_det.set_xticklabels),
        (ax_det.set_ylim, ax_det.set_yticks, ax_det.set_yticklabels),
    ):
        setter(*lim)
        tick_setter(pos)
        label_setter([f"{100 * t:g}%" for t in ticks])
    ax_det.set_xlabel("false accept rate")
    ax_det.set_ylabel("false reject rate")
    ax_det.set_title("DET")
    ax_det.grid(True, alpha=0.3)

    for label, far_target in (operating_points or {}).items():
        ax_roc.axvline(far_target, linestyle="--", color="grey", linewidth=1)
        ax_det.axvline(norm.ppf(far_target), linestyle="--", color="grey", linewidth=1)
        ax_det.annotate(label, (norm.ppf(far_target), lim[0]), rotation=90, fontsize=8,
                        va="bottom", ha="right", color="grey")
    if curves:
        ax_roc.legend(loc="lower right", fontsize=8)
        ax_det.legend(loc="upper right", fontsize=8)
    fig.suptitle(title)
    return _save(fig, out_png)


def plot_score_histograms(
    sets: Mapping[str, tuple[Any, Any]],
    out_png: str | Path,
    thresholds: Mapping[str, float | Mapping[str, float]] | None = None,
) -> Path:
    """One panel per score set: genuine vs impostor densities, to see overlap and calibration.

    ``thresholds`` maps a set name to one threshold, or to {label: threshold} for several
    operating points; each is drawn as a vertical line on that set's panel.
    """
    names = list(sets)
    fig = _figure(5.0 * max(1, len(names)), 4.0)
    axes = np.atleast_1d(fig.subplots(1, max(1, len(names)), squeeze=False)[0])
    for ax, name in zip(axes, names, strict=False):
        genuine = np.asarray(sets[name][0], dtype=np.float64).ravel()
        impostor = np.asarray(sets[name][1], dtype=np.float64).ravel()
        both = np.concatenate([genuine, impostor])
        edges = np.histogram_bin_edges(both, bins=min(60, max(10, both.size // 20)))
        ax.hist(impostor, bins=edges, density=True, alpha=0.55, label=f"impostor (n={impostor.size})")
        ax.hist(genuine, bins=edges, density=True, alpha=0.55, label=f"genuine (n={genuine.size})")
        marks = (thresholds or {}).get(name)
        if marks is not None:
            if not isinstance(marks, Mapping):
                marks = {"threshold": float(marks)}
            for label, value in marks.items():
                ax.axvline(value, linestyle="--", color="black", linewidth=1)
                ax.annotate(label, (value, ax.get_ylim()[1]), rotation=90, fontsize=8,
                            va="top", ha="right")
        ax.set_title(name)
        ax.set_xlabel("score")
        ax.set_ylabel("density")
        ax.legend(fontsize=8)
    return _save(fig, out_png)


def plot_latency(hist: Mapping[str, Any], out_png: str | Path) -> Path:
    """Latency per stage: distributions (left) and p50/p95/p99 bars (right), in milliseconds.

    Tail percentiles matter more than the mean for an access gate, hence the bar panel.
    """
    names = list(hist)
    fig = _figure(12, 4.5)
    ax_hist, ax_pct = fig.subplots(1, 2)
    percentiles = (50, 95, 99)
    values = np.zeros((len(names), len(percentiles)))
    for row, name in enumerate(names):
        ms = np.asarray(hist[name], dtype=np.float64).ravel()
        if ms.size == 0:
            continue
        ax_hist.hist(ms, bins=min(50, max(5, ms.size // 5)), alpha=0.5, label=f"{name} (n={ms.size})")
        values[row] = np.percentile(ms, percentiles)
    ax_hist.set_xlabel("latency (ms)")
    ax_hist.set_ylabel("count")
    ax_hist.set_title("distribution")
    if names:
        ax_hist.legend(fontsize=8)
    width = 0.8 / len(percentiles)
    x = np.arange(len(names))
    for col, p in enumerate(percentiles):
        ax_pct.bar(x + (col - 1) * width, values[:, col], width=width, label=f"p{p}")
    ax_pct.set_xticks(x)
    ax_pct.set_xticklabels(names, rotation=20, ha="right")
    ax_pct.set_ylabel("latency (ms)")
    ax_pct.set_title("percentiles")
    ax_pct.legend(fontsize=8)
    return _save(fig, out_png)
