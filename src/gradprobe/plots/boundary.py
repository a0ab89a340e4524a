"""Decision boundary over the 2-D input plane with the data points, one panel per arm."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from gradprobe.errors import GradprobeError
from gradprobe.plots.style import arm_colors, new_figure
from gradprobe.store.artifacts import BoundaryGrid

__all__ = ["CLASS_COLORS", "BoundaryGrid", "decision_boundary"]

# Class colours (not arm colours): regions drawn light, points dark.
CLASS_COLORS: tuple[str, ...] = (
    "#1b9e77", "#7570b3", "#d95f02", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666",
)


def decision_boundary(grids: Sequence[BoundaryGrid], title: str | None = None) -> Figure:
    """Predicted class regions over the input plane with the data points, one panel per arm.

    Requires: a decision-boundary grid stored per run (runs on 2-D data store one when they
    finish); read them with ``gradprobe.report.boundary.boundary_grid``.

    Args:
        grids: one grid per arm, in arm order.
        title: figure title; None for a generic one.

    Returns:
        Figure with one panel per grid; with two classes the p = 0.5 contour is drawn in black.

    Raises:
        GradprobeError: when ``grids`` is empty.
    """
    if not grids:
        raise GradprobeError("grids: the list is empty; pass one BoundaryGrid per arm")
    colors = arm_colors(g.arm for g in grids)
    n_classes = max(max(g.probs.shape[-1] for g in grids),
                    int(max(g.labels.max() for g in grids)) + 1)
    palette = [CLASS_COLORS[c % len(CLASS_COLORS)] for c in range(n_classes)]
    regions = ListedColormap(palette)
    fig, axes = new_figure(1, len(grids), panel=(4.0, 4.0), sharex=True, sharey=True)
    for ax, grid in zip(axes[0], grids):
        ax.pcolormesh(grid.xs, grid.ys, grid.predicted, cmap=regions, vmin=-0.5,
                      vmax=n_classes - 0.5, alpha=0.3, shading="nearest", rasterized=True)
        if grid.probs.shape[-1] == 2:
            ax.contour(grid.xs, grid.ys, grid.probs[..., 1], levels=[0.5], colors="black",
                       linewidths=1.0)
        ax.scatter(grid.points[:, 0], grid.points[:, 1], c=[palette[int(c)] for c in grid.labels],
                   s=8, edgecolors="white", linewidths=0.3)
        extra = "" if grid.accuracy is None else f"\naccuracy {grid.accuracy:.1%}"
        ax.set_title(f"arm: {grid.arm}{extra}", color=colors[grid.arm], fontweight="bold")
        ax.set_xlabel("x1")
        ax.set_aspect("equal")
    axes[0][0].set_ylabel("x2")
    handles = [Line2D([], [], marker="o", linestyle="", color=palette[c], label=f"class {c}")
               for c in range(n_classes)]
    if any(g.probs.shape[-1] == 2 for g in grids):
        handles.append(Line2D([], [], color="black", label="p(class 1) = 0.5"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles),
               title="class of the points (dark) and of the predicted region (light)",
               fontsize="small", title_fontsize="small")
    fig.suptitle(title or "decision boundary: predicted class over the input plane")
    return fig
