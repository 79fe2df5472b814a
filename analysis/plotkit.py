"""Plotting helpers shared by analysis/figures.py: sizes and colours, the output directory
(figures in several formats and the CSV of their points), legends, axis scales, and readable
names for byte tokens."""
from __future__ import annotations

import csv
import math
import os
from typing import Dict, List, Sequence

import matplotlib

matplotlib.use("Agg")  # headless, whatever MPLBACKEND says
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

SINGLE = (6.4, 4.2)   # inches, one panel at report size
WIDE = (9.6, 4.2)     # two panels side by side
DPI = 150
FORMATS = ("png", "svg", "pdf")

ROUTER_COLORS = {"top1": "C0", "topk_hard": "C1", "softk": "C2", "hash": "C3", "expert_choice": "C4"}
ARCH_MARKERS = {"linear": "o", "mlp": "s", "mlp_hadamard": "^"}

plt.rcParams.update({
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
    "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.grid": True, "grid.alpha": 0.3,
    "svg.hashsalt": "moebench",  # reproducible SVG ids
})


class Skip(Exception):
    """A figure whose data is not in the traces; the message says what is missing."""


def info(message: str) -> None:
    print(f"info: {message}", flush=True)



class Output:
    def __init__(self, directory: str, formats: Sequence[str]):
        self.directory = directory
        self.formats = list(formats)
        self.written: List[str] = []
        os.makedirs(directory, exist_ok=True)

    def _path(self, filename: str) -> str:
        path = os.path.join(self.directory, filename)
        self.written.append(path)
        return path

    def figure(self, fig: plt.Figure, name: str) -> None:
        for fmt in self.formats:
            metadata = {"Date": None} if fmt in ("svg", "pdf") else {}
            fig.savefig(self._path(f"{name}.{fmt}"), dpi=DPI, format=fmt, metadata=metadata)
        plt.close(fig)

    def table(self, name: str, header: Sequence[str], rows: Sequence[Sequence]) -> None:
        with open(self._path(f"{name}.csv"), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows([_cell(v) for v in row] for row in rows)

    def text(self, filename: str, text: str) -> None:
        with open(self._path(filename), "w") as f:
            f.write(text)


def _cell(value):
    """CSV text of one value: floats with full precision, NaN as empty."""
    if isinstance(value, (float, np.floating)):
        return "" if math.isnan(value) else repr(float(value))
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    return value


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    def fmt(value):
        if isinstance(value, (float, np.floating)):
            return "n/a" if math.isnan(value) else f"{value:.4g}"
        return str(value)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def router_color(router: str) -> str:
    return ROUTER_COLORS.get(router, "C7")


def run_colors(runs: Sequence) -> Dict[str, str]:
    cmap = plt.get_cmap("tab10" if len(runs) <= 10 else "tab20")
    return {run.run_id: cmap(i % cmap.N) for i, run in enumerate(runs)}


def router_legend_handles(routers: Sequence[str]) -> List[Line2D]:
    return [Line2D([], [], ls="", marker="o", color=router_color(r), label=r) for r in routers]


def with_legend_row(figsize, panels: int, legend_lines: int, sharex=False, rows=1):
    """A figure with `rows` x `panels` axes above a strip that holds the legend (constrained
    layout in matplotlib 3.6 does not make room for a figure legend). Returns (fig, axes
    [rows, panels], legend_axis)."""
    strip = 0.09 * max(legend_lines, 1)
    fig = plt.figure(figsize=(figsize[0], figsize[1] + strip * 2), layout="constrained")
    grid = fig.add_gridspec(rows + 1, panels, height_ratios=[1.0] * rows + [strip * rows])
    axes = np.empty((rows, panels), dtype=object)
    for r in range(rows):
        for c in range(panels):
            share = axes[0, c] if sharex and r > 0 else None
            axes[r, c] = fig.add_subplot(grid[r, c], sharex=share)
    legend_axis = fig.add_subplot(grid[rows, :])
    legend_axis.set_axis_off()
    return fig, axes, legend_axis


def plain_log_ticks(axis) -> None:
    """Log-scale ticks as plain numbers (120, 200) instead of 1.2 x 10^2."""
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def log_y_if_wide(ax, values, ratio: float = 100.0) -> None:
    """Log y scale when the positive values span more than `ratio`; linear from 0 otherwise."""
    values = np.asarray([v for v in values if np.isfinite(v) and v > 0])
    if values.size and values.max() > ratio * values.min():
        ax.set_yscale("log")
        ax.set_ylabel(ax.get_ylabel() + " (log scale)")
    else:
        ax.set_ylim(bottom=0)


def ordered_unique(values) -> list:
    seen = []
    for value in values:
        if value not in seen:
            seen.append(value)
    return seen


def token_glyphs(tokens: Sequence[int], byte_level: bool = True) -> List[str]:
    """One printable glyph per token. Byte tokens: ASCII as is, newline and tab as arrows,
    a UTF-8 character on its lead byte (continuation bytes blank), other bytes as '¤'.
    Other tokens (BPE pieces; byte_level False) as their id."""
    glyphs = []
    i = 0
    while i < len(tokens):
        t = int(tokens[i])
        if not byte_level or t >= 256 or t < 0:
            glyphs.append(f"#{t}")
        elif t == 10:
            glyphs.append("↵")
        elif t == 9:
            glyphs.append("⇥")
        elif 32 <= t < 127:
            glyphs.append(chr(t))
        elif t >= 0xC0:
            length = 2 if t < 0xE0 else 3 if t < 0xF0 else 4
            chunk = bytes(int(x) for x in tokens[i:i + length] if 0 <= int(x) < 256)
            try:
                char = chunk.decode("utf-8")
            except UnicodeDecodeError:
                char = ""
            if len(char) == 1 and len(chunk) == length:
                glyphs += [char] + [""] * (length - 1)
                i += length
                continue
            glyphs.append("¤")
        else:
            glyphs.append("¤")
        i += 1
    return glyphs


def token_name(token: int, byte_level: bool = True) -> str:
    """A token id as a readable label: 'a', '␣', '\\n', '0xc3' for bytes, '#300' otherwise."""
    if not byte_level:
        return f"#{token}"
    if 32 < token < 127:
        return repr(chr(token))
    return {32: "'␣'", 10: "'\\n'", 9: "'\\t'"}.get(token, f"0x{token:02x}" if 0 <= token < 256 else f"#{token}")


def expert_colors(experts: int):
    cmap = plt.get_cmap("tab10" if experts <= 10 else "tab20")
    if experts <= cmap.N:
        return [cmap(e) for e in range(experts)]
    return [plt.get_cmap("hsv")(e / experts) for e in range(experts)]


def size_label(size: float, _pos=None) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:g} {unit}"
    return f"{size:g} B"
