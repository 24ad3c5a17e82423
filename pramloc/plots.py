"""Plots of evaluation results (matplotlib figures rendered with Agg: no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_cumulative_errors(curves: dict[str, dict[str, dict[str, float]]], path: Path,
                           thresholds=()) -> Path:
    """Cumulative error curves: translation (left) and rotation (right), one curve per run.

    ``curves`` maps a label to per-query errors ``{name: {"translation": m, "rotation_deg": d}}``;
    the y axis is the share of *all* queries with an error up to x (infinite errors, i.e.
    unlocalized queries, never count). The x axes are logarithmic; dotted lines mark the
    ``(metres, degrees)`` thresholds.
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2)
    panels = [("translation", "translation error (m)", 1e-3), ("rotation_deg", "rotation error (deg)", 1e-2)]
    for ax, (key, xlabel, floor) in zip(axes, panels):
        errs = {label: np.array([e[key] for e in pq.values()], dtype=float) for label, pq in curves.items()}
        ths = sorted({t[0] if key == "translation" else t[1] for t in thresholds})
        finite_max = [e[np.isfinite(e)].max() for e in errs.values() if np.isfinite(e).any()]
        xmax = 1.5 * max(finite_max + ths + [10 * floor])
        for label, e in errs.items():
            finite = np.sort(np.maximum(e[np.isfinite(e)], floor))
            share = np.arange(1, finite.size + 1) / max(e.size, 1)
            # Start at 0 and run flat to the right edge: the plateau is the share localized.
            x = np.concatenate([[floor], finite, [xmax]])
            y = np.concatenate([[0.0], share, share[-1:] if share.size else [0.0]])
            ax.step(x, y, where="post", label=label)
        for th in ths:
            ax.axvline(th, color="0.6", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlim(floor, xmax)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("share of queries")
        ax.set_ylim(0, 1.02)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, format="png")  # rendered with the Agg canvas
    return path
