#!/usr/bin/env python3
"""Draws the moebench figures from a directory of traces.

usage: /usr/bin/python3 analysis/figures.py RESULTS_DIR [--out DIR] [--only NAME[,NAME...]]
                                            [--format png,svg] [--list]

Finds every trace (*.h5) under RESULTS_DIR, sorts them into training runs, capacity grids and
all-to-all sweeps (analysis/moetrace.py), and draws each registered figure whose data exists;
a figure without data is skipped with one `info:` line. Next to each figure it writes the
plotted points as CSV (NAME.csv), so the numbers behind a picture can be checked. What each
figure shows and which trace fields it reads: analysis/README.md.

Exit status: 0 when every requested figure was drawn or skipped for lack of data, 1 when no
trace was found or a figure failed, 2 for bad arguments (an unknown figure name, format).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Sequence

import matplotlib

matplotlib.use("Agg")  # headless, whatever MPLBACKEND says
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moetrace  # noqa: E402
from plotkit import (ARCH_MARKERS, FORMATS, SINGLE, WIDE, Output, Skip, expert_colors,  # noqa: E402
                     info, log_y_if_wide, markdown_table, ordered_unique, plain_log_ticks,
                     router_color, router_legend_handles, run_colors, size_label, token_glyphs,
                     token_name, with_legend_row)


# ---- the traces of one results directory --------------------------------------------------------

@dataclass
class Results:
    root: str
    train: List[moetrace.TrainRun] = field(default_factory=list)
    capacity: List[moetrace.CapacityBench] = field(default_factory=list)
    alltoall: List[moetrace.AlltoallBench] = field(default_factory=list)

    @classmethod
    def scan(cls, root: str, skip_dirs: Sequence[str] = ()) -> "Results":
        results = cls(root)
        # the output directory, unless it is the results directory itself
        skip = [os.path.abspath(d) + os.sep for d in skip_dirs
                if os.path.abspath(d) != os.path.abspath(root)]
        for path in moetrace.find_traces(root):
            if any(os.path.abspath(path).startswith(d) for d in skip):
                continue
            try:
                trace = moetrace.load(path, root)
            except moetrace.TraceError as error:
                info(f"skipping {error}")
                continue
            for note in trace.notes:
                info(f"{trace.run_id}: {note}")
            getattr(results, trace.kind).append(trace)
        return results

    def __len__(self) -> int:
        return len(self.train) + len(self.capacity) + len(self.alltoall)


# ---- the registry -------------------------------------------------------------------------------

@dataclass
class FigureSpec:
    name: str
    draw: Callable[[Results, Output], None]
    summary: str


FIGURES: Dict[str, FigureSpec] = {}


def figure(name: str, summary: str):
    def register(draw):
        FIGURES[name] = FigureSpec(name, draw, summary)
        return draw
    return register


# ---- shared pieces ------------------------------------------------------------------------------

def evaluated_runs(results: Results) -> List[moetrace.TrainRun]:
    runs = [run for run in results.train if run.final_eval() is not None]
    if not runs:
        raise Skip("no training trace with an evaluation")
    return runs


def frontier_points(runs: Sequence[moetrace.TrainRun]) -> List[dict]:
    """One point per run: final evaluation perplexity and throughput, plus the Pareto flag
    (complete runs only take part in the front)."""
    points = []
    for run in runs:
        final = run.final_eval()
        points.append(dict(run=run.run_id, router=run.router, router_arch=run.router_arch,
                           top_k=run.top_k, experts=run.experts, capacity_factor=run.capacity_factor,
                           complete=run.complete, eval_step=int(final["step"]), ppl=final["ppl"],
                           tokens_per_s=run.tokens_per_s(), label=run.label))
    ppl = np.array([p["ppl"] for p in points])
    tps = np.array([p["tokens_per_s"] for p in points])
    eligible = np.array([p["complete"] for p in points]) & np.isfinite(ppl) & np.isfinite(tps)
    for point, on_front in zip(points, moetrace.pareto_mask(ppl, tps, eligible)):
        point["pareto"] = bool(on_front)
    return points


FRONTIER_COLUMNS = ("run", "router", "router_arch", "top_k", "experts", "capacity_factor",
                    "complete", "eval_step", "ppl", "tokens_per_s", "pareto")


def draw_frontier(ax, points: Sequence[dict], marker_of: Callable[[dict], str]) -> None:
    for p in points:
        color = router_color(p["router"])
        ax.scatter(p["tokens_per_s"], p["ppl"], marker=marker_of(p), s=46, zorder=3,
                   facecolors=color if p["complete"] else "none", edgecolors=color, linewidths=1.2)
        ax.annotate(p["label"], (p["tokens_per_s"], p["ppl"]), textcoords="offset points",
                    xytext=(5, 4), fontsize=7)
    front = sorted((p for p in points if p["pareto"]), key=lambda p: p["tokens_per_s"])
    if front:
        ax.plot([p["tokens_per_s"] for p in front], [p["ppl"] for p in front], ls="--",
                color="0.35", lw=1, zorder=2, drawstyle="steps-pre" if len(front) > 1 else "default",
                label="Pareto front")
    ax.set_xlabel("training throughput (tokens/s, median after warm-up)")
    ax.set_ylabel("validation perplexity (final evaluation)")
    ax.margins(x=0.15, y=0.12)


# ---- training-run figures -----------------------------------------------------------------------

@figure("frontier", "final validation perplexity vs tokens/s per training run, Pareto front")
def frontier(results: Results, out: Output) -> None:
    points = frontier_points(evaluated_runs(results))
    fig, ax = plt.subplots(figsize=SINGLE, layout="constrained")
    draw_frontier(ax, points, lambda p: "o")
    handles = router_legend_handles(ordered_unique(p["router"] for p in points))
    handles.append(Line2D([], [], ls="--", color="0.35", label="Pareto front"))
    if not all(p["complete"] for p in points):
        handles.append(Line2D([], [], ls="", marker="o", mfc="none", color="0.3", label="incomplete run"))
    ax.legend(handles=handles, title="router", loc="best")
    ax.set_title(f"Quality vs throughput ({len(points)} training runs; lower-right is better)")
    out.figure(fig, "frontier")
    out.table("frontier", FRONTIER_COLUMNS, [[p[c] for c in FRONTIER_COLUMNS] for p in points])


@figure("router_arch_frontier", "the frontier with marker shape by router architecture, "
                                "and the router_arch table (params, entropy, top-k mass)")
def router_arch_frontier(results: Results, out: Output) -> None:
    runs = evaluated_runs(results)
    points = frontier_points(runs)
    archs = ordered_unique(p["router_arch"] for p in points)
    routers = ordered_unique(p["router"] for p in points)
    fig, axes, legend_axis = with_legend_row(SINGLE, 1, 3 + math.ceil((len(routers) + 1) / 5))
    ax = axes[0, 0]
    draw_frontier(ax, points, lambda p: ARCH_MARKERS.get(p["router_arch"], "D"))
    arch_handles = [Line2D([], [], ls="", marker=ARCH_MARKERS.get(a, "D"), color="0.3", label=a)
                    for a in archs]
    arch_legend = legend_axis.legend(handles=arch_handles, title="router architecture (marker)",
                                     loc="upper center", ncol=len(archs), frameon=False)
    legend_axis.add_artist(arch_legend)
    router_handles = router_legend_handles(routers)
    router_handles.append(Line2D([], [], ls="--", color="0.35", label="Pareto front"))
    legend_axis.legend(handles=router_handles, title="router (colour)", loc="upper center",
                       bbox_to_anchor=(0.5, 0.5),
                       ncol=min(len(router_handles), 5), frameon=False)
    ax.set_title(f"Quality vs throughput by router architecture ({len(points)} runs)")
    out.figure(fig, "router_arch_frontier")
    out.table("router_arch_frontier", FRONTIER_COLUMNS, [[p[c] for c in FRONTIER_COLUMNS] for p in points])

    header = ("run", "router", "router_arch", "top_k", "capacity_factor", "router_params",
              "router_entropy_nats", "mean_topk_prob", "ppl", "tokens_per_s")
    rows = [[run.run_id, run.router, run.router_arch, run.top_k, run.capacity_factor,
             run.router_params(), run.routing_summary("router_entropy"),
             run.routing_summary("mean_topk_prob"), p["ppl"], p["tokens_per_s"]]
            for run, p in zip(runs, points)]
    out.table("router_arch", header, rows)
    note = (f"Router parameters: all MoE blocks; entropy and top-k probability: mean over MoE "
            f"blocks of the mean over the last {moetrace.TAIL_FRACTION:.0%} of the training "
            f"steps (n/a: no learned router); ppl: final evaluation.\n\n")
    out.text("router_arch.md", "# Router architectures\n\n" + note + markdown_table(header, rows))


@figure("curves", "training loss and validation perplexity per run, overlaid")
def curves(results: Results, out: Output) -> None:
    runs = [run for run in results.train if run.steps > 0]
    if not runs:
        raise Skip("no training trace with steps")
    colors = run_colors(runs)
    ncol = min(2, len(runs))
    fig, axes, legend_axis = with_legend_row(WIDE, 2, math.ceil(len(runs) / ncol))
    ax_loss, ax_ppl = axes[0]
    rows = []
    for run in runs:
        steps, loss = run.train["step"], run.train["loss"]
        ax_loss.plot(steps, loss, color=colors[run.run_id], lw=1.2, label=f"{run.run_id}: {run.label}")
        rows += [[run.run_id, "train_loss", int(s), float(v)] for s, v in zip(steps, loss)]
        if len(run.eval.get("ppl", ())):
            ax_ppl.plot(run.eval["step"], run.eval["ppl"], marker="o", ms=3.5,
                        color=colors[run.run_id], lw=1.2)
            rows += [[run.run_id, "eval_ppl", int(s), float(v)]
                     for s, v in zip(run.eval["step"], run.eval["ppl"])]
    ax_loss.set(xlabel="step", ylabel="training loss (nats/token)", title="Training loss")
    ax_ppl.set(xlabel="step", ylabel="validation perplexity (log scale)", title="Validation perplexity",
               yscale="log")
    plain_log_ticks(ax_ppl.yaxis)
    legend_axis.legend(*ax_loss.get_legend_handles_labels(), loc="center", ncol=ncol, fontsize=7,
                       frameon=False)
    fig.suptitle(f"Training curves ({len(runs)} runs)")
    out.figure(fig, "curves")
    out.table("curves", ("run", "series", "step", "value"), rows)


def balance_rows(runs: Sequence[moetrace.TrainRun]) -> List[dict]:
    rows = []
    for run in runs:
        final = run.final_eval()
        rows.append(dict(run=run.run_id, router=run.router, top_k=run.top_k,
                         capacity_factor=run.capacity_factor, complete=run.complete,
                         load_cv=run.routing_summary("load_cv"),
                         gate_entropy=run.routing_summary("gate_entropy"),
                         drop_rate=run.routing_summary("drop_rate"),
                         ppl=final["ppl"] if final else math.nan, label=run.label))
    return rows


BALANCE_COLUMNS = ("run", "router", "top_k", "capacity_factor", "complete", "load_cv",
                   "gate_entropy", "drop_rate", "ppl")
TAIL_TEXT = f"mean over MoE blocks and the last {moetrace.TAIL_FRACTION:.0%} of steps"


@figure("balance", "load balance (load CV) vs final validation perplexity per run")
def balance(results: Results, out: Output) -> None:
    rows = [r for r in balance_rows(evaluated_runs(results)) if math.isfinite(r["load_cv"])]
    if not rows:
        raise Skip("no training trace with routing metrics")
    fig, ax = plt.subplots(figsize=SINGLE, layout="constrained")
    for r in rows:
        color = router_color(r["router"])
        ax.scatter(r["load_cv"], r["ppl"], s=46, color=color, zorder=3,
                   facecolors=color if r["complete"] else "none")
        ax.annotate(r["label"], (r["load_cv"], r["ppl"]), textcoords="offset points", xytext=(5, 4),
                    fontsize=7)
    ax.set(xlabel=f"load CV = std/mean of expert loads ({TAIL_TEXT})",
           ylabel="validation perplexity (final evaluation)",
           title=f"Load balance vs quality ({len(rows)} runs)")
    ax.margins(x=0.15, y=0.12)
    ax.legend(handles=router_legend_handles(ordered_unique(r["router"] for r in rows)), title="router")
    out.figure(fig, "balance")
    out.table("balance", BALANCE_COLUMNS, [[r[c] for c in BALANCE_COLUMNS] for r in rows])


@figure("gate_balance", "load CV vs gate entropy per run, annotated by k")
def gate_balance(results: Results, out: Output) -> None:
    runs = [run for run in results.train if run.routing]
    rows = [r for r in balance_rows(runs)
            if math.isfinite(r["load_cv"]) and math.isfinite(r["gate_entropy"])]
    if not rows:
        raise Skip("no training trace with routing metrics")
    fig, ax = plt.subplots(figsize=SINGLE, layout="constrained")
    for r in rows:
        color = router_color(r["router"])
        ax.scatter(r["load_cv"], r["gate_entropy"], s=46, color=color, zorder=3,
                   facecolors=color if r["complete"] else "none")
        ax.annotate(f"k={r['top_k']}", (r["load_cv"], r["gate_entropy"]), textcoords="offset points",
                    xytext=(5, 4), fontsize=8)
    ax.set(xlabel=f"load CV = std/mean of expert loads ({TAIL_TEXT})",
           ylabel="gate entropy (nats, kept combine weights)",
           title=f"Load balance vs gate entropy ({len(rows)} runs)")
    ax.margins(x=0.15, y=0.15)
    ax.legend(handles=router_legend_handles(ordered_unique(r["router"] for r in rows)), title="router")
    out.figure(fig, "gate_balance")
    out.table("gate_balance", BALANCE_COLUMNS, [[r[c] for c in BALANCE_COLUMNS] for r in rows])


@figure("expert_load", "share of kept assignments per expert and MoE block, per run "
                       "(mean over the last steps)")
def expert_load(results: Results, out: Output) -> None:
    runs = [run for run in results.train if run.routing and run.steps > 0]
    if not runs:
        raise Skip("no training trace with /routing loads")
    blocks = max(run.moe_blocks for run in runs)
    max_experts = max(run.experts for run in runs)
    colors = run_colors(runs)
    entries = len(runs) + len({run.experts for run in runs})
    fig, axes, legend_axis = with_legend_row((6.4, 0.8 + 2.3 * blocks), 1, math.ceil(entries / 2),
                                             sharex=True, rows=blocks)
    width = 0.8 / len(runs)
    rows = []
    for b in range(blocks):
        ax = axes[b, 0]
        for i, run in enumerate(runs):
            if b >= run.moe_blocks:
                continue
            load = run.tail_load(b)
            share = 100.0 * load / load.sum() if load.sum() > 0 else np.zeros_like(load)
            x = np.arange(len(load)) - 0.4 + width * (i + 0.5)
            ax.bar(x, share, width=width, color=colors[run.run_id],
                   label=f"{run.run_id}: {run.label}" if b == 0 else None)
            rows += [[run.run_id, b, e, float(load[e]), float(share[e])] for e in range(len(load))]
        for E, style in zip(sorted({run.experts for run in runs}), ("dotted", "dashdot", "dashed") * 8):
            ax.axhline(100.0 / E, color="0.3", ls=style, lw=1,
                       label=(f"uniform share 1/{E}" if b == 0 else None))
        ax.set_ylabel(f"block {b}: share of\nkept assignments (%)")
    axes[-1, 0].set_xlabel("expert")
    axes[-1, 0].set_xticks(range(max_experts))
    tail = ", ".join(f"{moetrace.tail_steps(run.steps)}" for run in runs)
    axes[0, 0].set_title(f"Expert load per MoE block, mean over the last {moetrace.TAIL_FRACTION:.0%} "
                         f"of steps ({tail} steps)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    legend_axis.legend(handles, labels, loc="center", ncol=min(2, len(labels)), fontsize=7, frameon=False)
    out.figure(fig, "expert_load")
    out.table("expert_load", ("run", "block", "expert", "load_assignments_per_step", "share_percent"), rows)


# ---- samples: token x expert --------------------------------------------------------------------

def final_samples(results: Results):
    """(run, step, tokens [T], experts [blocks, T]) of the last /samples row of every training
    run that has one."""
    for run in results.train:
        samples = run.samples
        if len(samples.get("tokens", ())) == 0 or len(samples.get("experts", ())) == 0:
            continue
        step = int(samples["step"][-1]) if len(samples.get("step", ())) else -1
        yield (run, step, samples["tokens"][-1].astype(int),
               samples["experts"][-1][:max(run.moe_blocks, 1)])


MAX_HEATMAP_TOKENS = 24


@figure("token_expert_heatmap", "token x expert assignment counts of the last /samples "
                                "sequence, one file per run, with top tokens per expert")
def token_expert_heatmap(results: Results, out: Output) -> None:
    drawn = 0
    for run, step, tokens, experts in final_samples(results):
        blocks, E = experts.shape[0], run.experts
        # counts[b, token, e]; the last column counts dropped tokens (expert -1)
        vocab = np.unique(tokens)
        index = {t: i for i, t in enumerate(vocab)}
        counts = np.zeros((blocks, len(vocab), E + 1), dtype=int)
        for b in range(blocks):
            for t, e in zip(tokens, experts[b]):
                counts[b, index[t], e if 0 <= e < E else E] += 1
        frequency = np.bincount([index[t] for t in tokens], minlength=len(vocab))
        shown = np.argsort(-frequency, kind="stable")[:MAX_HEATMAP_TOKENS]
        fig, axes = plt.subplots(1, blocks, figsize=(3.2 * blocks + 0.6, 5.2), squeeze=False,
                                 layout="constrained")
        for b in range(blocks):
            ax = axes[0, b]
            matrix = counts[b][shown]
            image = ax.imshow(matrix, aspect="auto", cmap="viridis", interpolation="nearest")
            ax.set_xticks(range(E + 1), [str(e) for e in range(E)] + ["drop"])
            ax.set_yticks(range(len(shown)), [token_name(int(vocab[i]), run.byte_level) for i in shown])
            ax.set_xlabel("expert (first kept choice)")
            ax.set_title(f"MoE block {b}")
            ax.grid(False)
            if b == 0:
                ax.set_ylabel(f"token (the {len(shown)} most frequent of {len(vocab)})")
            fig.colorbar(image, ax=ax, label="tokens (count)", shrink=0.8)
        fig.suptitle(f"{run.run_id}: token -> expert, validation sample at step {step} "
                     f"({len(tokens)} tokens)\n{run.label}")
        name = f"token_expert_heatmap_{run.run_id}"
        out.figure(fig, name)
        rows = [[b, int(vocab[i]), token_name(int(vocab[i]), run.byte_level), e if e < E else -1, int(counts[b, i, e])]
                for b in range(blocks) for i in range(len(vocab)) for e in range(E + 1) if counts[b, i, e]]
        out.table(name, ("block", "token", "token_text", "expert", "count"), rows)
        out.text(f"{name}.md", top_tokens_summary(run, step, vocab, counts))
        drawn += 1
    if not drawn:
        raise Skip("no training trace with /samples")


def top_tokens_summary(run, step, vocab, counts, top: int = 5) -> str:
    blocks, _, columns = counts.shape
    lines = [f"# Top tokens per expert: {run.run_id} ({run.label})", "",
             f"Validation sample at step {step}; first kept expert of each token "
             f"(`/samples/experts`); 'drop' = no kept assignment.", ""]
    for b in range(blocks):
        lines += [f"## MoE block {b}", "", "| expert | tokens | top tokens (count) |", "|---|---|---|"]
        for e in range(columns):
            column = counts[b, :, e]
            order = [i for i in np.argsort(-column, kind="stable")[:top] if column[i] > 0]
            listed = ", ".join(f"{token_name(int(vocab[i]), run.byte_level)} ({column[i]})" for i in order)
            lines.append(f"| {e if e < columns - 1 else 'drop'} | {int(column.sum())} | {listed} |")
        lines.append("")
    return "\n".join(lines)


TOKENS_PER_LINE = 48


@figure("colored_tokens", "the last /samples sequence with each token coloured by its expert, "
                          "one panel per MoE block, one file per run")
def colored_tokens(results: Results, out: Output) -> None:
    drawn = 0
    for run, step, tokens, experts in final_samples(results):
        blocks, E = experts.shape[0], run.experts
        glyphs = token_glyphs(tokens, run.byte_level)
        palette = expert_colors(E)
        lines = math.ceil(len(tokens) / TOKENS_PER_LINE)
        fig, axes, legend_axis = with_legend_row((6.4, 0.7 + blocks * (0.3 * lines + 0.35)), 1,
                                                 math.ceil((E + 1) / 6), rows=blocks)
        for b in range(blocks):
            ax = axes[b, 0]
            for t, (glyph, e) in enumerate(zip(glyphs, experts[b])):
                x, y = t % TOKENS_PER_LINE, -(t // TOKENS_PER_LINE)
                dropped = not 0 <= e < E
                ax.add_patch(Rectangle((x, y - 0.5), 1, 0.9, facecolor="0.88" if dropped else palette[e],
                                       edgecolor="white", linewidth=0.4, hatch="///" if dropped else None))
                ax.text(x + 0.5, y - 0.05, glyph, ha="center", va="center", family="DejaVu Sans Mono",
                        fontsize=7 if len(glyph) <= 1 else 4)
            ax.set_xlim(0, TOKENS_PER_LINE)
            ax.set_ylim(-lines + 0.4, 0.5)
            ax.set_axis_off()
            ax.set_title(f"MoE block {b}", fontsize=9, loc="left")
        handles = [Patch(facecolor=palette[e], label=f"expert {e}") for e in range(E)]
        handles.append(Patch(facecolor="0.88", hatch="///", label="dropped"))
        legend_axis.legend(handles=handles, loc="center", ncol=min(len(handles), 6), fontsize=7,
                           frameon=False)
        fig.suptitle(f"{run.run_id}: validation sample at step {step}, each token coloured by its "
                     f"first kept expert\n{run.label}", fontsize=9)
        name = f"colored_tokens_{run.run_id}"
        out.figure(fig, name)
        rows = [[b, t, int(tokens[t]), glyphs[t], int(experts[b, t])]
                for b in range(blocks) for t in range(len(tokens))]
        out.table(name, ("block", "position", "token", "glyph", "expert"), rows)
        drawn += 1
    if not drawn:
        raise Skip("no training trace with /samples")


# ---- benchmarks ---------------------------------------------------------------------------------

def capacity_rows(results: Results) -> List[dict]:
    rows = []
    for bench in results.capacity:
        c = bench.cells
        for i in range(bench.rows):
            rows.append(dict(trace=bench.run_id, router=bench.group_attrs.get("router", "?"),
                             dispatch=bench.group_attrs.get("dispatch", "?"),
                             experts=int(c["experts"][i]), top_k=int(c["top_k"][i]),
                             capacity_factor=float(c["capacity_factor"][i]),
                             drop_rate=float(c["drop_rate"][i]),
                             token_drop_rate=float(c["token_drop_rate"][i]),
                             exchange_ms=float(c["exchange_ms"][i]),
                             bytes_per_rank_mean=float(c["bytes_per_rank_mean"][i]),
                             complete=bench.complete))
    return rows


CAPACITY_COLUMNS = ("trace", "router", "dispatch", "experts", "top_k", "capacity_factor",
                    "drop_rate", "token_drop_rate", "exchange_ms", "bytes_per_rank_mean", "complete")


@figure("capacity", "drop rate and exchange time vs capacity factor, one line per (E, k)")
def capacity(results: Results, out: Output) -> None:
    rows = capacity_rows(results)
    if not rows:
        raise Skip("no capacity trace (/bench/capacity) with cells")
    factors = sorted({r["capacity_factor"] for r in rows if r["capacity_factor"] > 0})
    dropless_x = (max(factors) if factors else 1.0) + max(0.25, 0.15 * (max(factors) - min(factors))
                                                          if factors else 0.25)

    def x_of(cf: float) -> float:
        return dropless_x if cf <= 0 else cf

    # One row of two panels per trace (router, dispatch, distribution), one colour per (E, k)
    # across rows, so several grids stay readable side by side.
    benches = results.capacity
    fig, axes = plt.subplots(len(benches), 2, figsize=(WIDE[0], WIDE[1] * len(benches)),
                             layout="constrained", squeeze=False)
    colours = {key: f"C{i % 10}" for i, key in
               enumerate(ordered_unique((r["experts"], r["top_k"]) for r in rows))}
    ticks = factors + ([dropless_x] if any(r["capacity_factor"] <= 0 for r in rows) else [])
    labels = [f"{cf:g}" for cf in factors] + (["dropless"] if len(ticks) > len(factors) else [])
    for (ax_drop, ax_time), bench in zip(axes, benches):
        mine = [r for r in rows if r["trace"] == bench.run_id]
        for key in ordered_unique((r["experts"], r["top_k"]) for r in mine):
            cells = sorted((r for r in mine if (r["experts"], r["top_k"]) == key),
                           key=lambda r: x_of(r["capacity_factor"]))
            x = [x_of(r["capacity_factor"]) for r in cells]
            style = dict(color=colours[key], marker="o", ms=4, lw=1.3, label=f"E={key[0]}, k={key[1]}")
            ax_drop.plot(x, [100.0 * r["drop_rate"] for r in cells], **style)
            ax_time.plot(x, [r["exchange_ms"] for r in cells], **style)
        for ax in (ax_drop, ax_time):
            ax.set_xticks(ticks, labels)
            ax.set_xlabel("capacity factor CF")
        attrs = bench.group_attrs
        what = (f"{attrs.get('router', '?')}, {attrs.get('dispatch', '?')}, "
                f"{attrs.get('distribution', '?')} logits" + ("" if bench.complete else " (incomplete)"))
        ax_drop.set(ylabel="dropped assignments (% of requested)", title=f"Drop rate: {what}")
        ax_time.set(ylabel="dispatch + combine exchange\n(ms/iteration, slowest rank)",
                    title=f"Exchange time: {what}")
        log_y_if_wide(ax_time, [r["exchange_ms"] for r in mine])
        ax_drop.legend(title="experts, top-k", fontsize="small")
    bench = benches[0]
    fig.suptitle(f"Capacity factor: {bench.group_attrs.get('tokens_per_rank', '?')} tokens/rank, "
                 f"{bench.world_size} ranks, one row per grid")
    out.figure(fig, "capacity")
    out.table("capacity", CAPACITY_COLUMNS, [[r[c] for c in CAPACITY_COLUMNS] for r in rows])


@figure("alltoall_bandwidth", "all-to-all busbw and algbw vs message size per algorithm")
def alltoall_bandwidth(results: Results, out: Output) -> None:
    benches = [b for b in results.alltoall if b.rows > 0]
    if not benches:
        raise Skip("no alltoall trace (/bench/alltoall) with rows")
    fig, ax = plt.subplots(figsize=SINGLE, layout="constrained")
    rows = []
    color = 0
    for bench in benches:
        data = bench.rows_data
        prefix = f"{bench.run_id} (P={bench.world_size}) " if len(benches) > 1 else ""
        for code in ordered_unique(int(c) for c in data["algorithm"]):
            pick = np.flatnonzero(data["algorithm"].astype(int) == code)
            pick = pick[np.argsort(data["size_bytes"][pick], kind="stable")]
            name = bench.algorithm_name(code)
            size = data["size_bytes"][pick]
            ax.plot(size, data["busbw_GBps"][pick], color=f"C{color % 10}", marker="o", ms=4, lw=1.3,
                    label=f"{prefix}{name} busbw")
            ax.plot(size, data["algbw_GBps"][pick], color=f"C{color % 10}", ls="--", lw=1, alpha=0.8,
                    label=f"{prefix}{name} algbw")
            rows += [[bench.run_id, bench.world_size, name, int(data["size_bytes"][i]),
                      float(data["busbw_GBps"][i]), float(data["algbw_GBps"][i]),
                      float(data["time_max_us"][i])] for i in pick]
            color += 1
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(size_label))
    ax.set(xlabel="size: bytes each rank sends in all (log scale)", ylabel="bandwidth (GB/s)")
    log_y_if_wide(ax, [r[4] for r in rows] + [r[5] for r in rows])
    ax.legend(ncol=1 if color <= 3 else 2)
    first = benches[0]
    ax.set_title(f"All-to-all bandwidth, {first.world_size} ranks, "
                 f"{first.group_attrs.get('pattern', '?')} pattern, "
                 f"{first.group_attrs.get('nodes', '?')} node(s)" + (" (first trace)" if len(benches) > 1 else ""))
    out.figure(fig, "alltoall_bandwidth")
    out.table("alltoall_bandwidth", ("trace", "ranks", "algorithm", "size_bytes", "busbw_GBps",
                                     "algbw_GBps", "time_max_us"), rows)


def routed_rows(results: Results) -> List[dict]:
    """One row per cell of every cost-per-router table (/bench/alltoall/routed)."""
    rows = []
    for bench in results.alltoall:
        table, routers = bench.tables.get("routed", {}), bench.router_names()
        for i in range(bench.routed_cells()):
            exchange = np.atleast_1d(table["exchange_ms"][i]) if "exchange_ms" in table else []
            rows.append(dict(
                trace=bench.run_id, router=routers.get(int(table["router"][i]), f"router {int(table['router'][i])}"),
                top_k=int(table["top_k"][i]), capacity_factor=float(table["capacity_factor"][i]),
                drop_rate=float(table["drop_rate"][i]), wire_bytes=float(table["wire_bytes"][i]),
                rank_bytes_max=float(table["rank_bytes_max"][i]),
                padded_over_ragged=float(table["padded_over_ragged"][i]),
                dispatch_ms=float(table["dispatch_ms"][i]), combine_ms=float(table["combine_ms"][i]),
                algorithms={name: float(exchange[a]) for a, name in enumerate(bench.measured)
                            if a < len(exchange)}))
    return rows


def byte_scale(values) -> tuple:
    """(divisor, unit) that puts the largest value between 1 and 1024."""
    top = max(values, default=0.0)
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if top >= scale:
            return scale, unit
    return 1.0, "bytes"


@figure("alltoall_cost_per_router", "bytes per forward step and exchange time per router cell, "
                                    "from the cost-per-router table (alltoall --pattern routed)")
def alltoall_cost_per_router(results: Results, out: Output) -> None:
    rows = routed_rows(results)
    if not rows:
        raise Skip("no cost-per-router table (/bench/alltoall/routed) in the traces")
    many = len({r["trace"] for r in rows}) > 1
    algorithms = ordered_unique(name for r in rows for name in r["algorithms"])
    fig, axes, legend_axis = with_legend_row(WIDE, 2, 2 + math.ceil((len(algorithms) + 2) / 5))
    ax_bytes, ax_time = axes[0]
    x = np.arange(len(rows))
    colors = [router_color(r["router"]) for r in rows]
    scale, unit = byte_scale([r["wire_bytes"] for r in rows])
    ax_bytes.bar(x, [r["wire_bytes"] / scale for r in rows], color=colors, width=0.7)
    ax_bytes.set(ylabel=f"{unit} per forward step, all ranks",
                 title="Traffic between ranks: dispatch + combine")
    ax_time.bar(x, [r["dispatch_ms"] for r in rows], color=colors, width=0.7)
    ax_time.bar(x, [r["combine_ms"] for r in rows], bottom=[r["dispatch_ms"] for r in rows],
                color=colors, width=0.7, hatch="///", edgecolor="white", linewidth=0)
    markers = ("o", "s", "^", "D", "v")
    for a, name in enumerate(algorithms):
        ax_time.plot(x, [r["algorithms"].get(name, math.nan) for r in rows], ls="", color="black",
                     marker=markers[a % len(markers)], ms=4, mfc="none")
    ax_time.set(ylabel="ms per forward step (slowest rank)",
                title="Exchange time (median over iterations)")
    labels = [(f"{r['trace']}: " if many else "") + f"{r['router']} k{r['top_k']} CF {r['capacity_factor']:g}"
              for r in rows]
    for ax in (ax_bytes, ax_time):
        ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=7 if len(rows) <= 20 else 6)
        ax.grid(axis="x", visible=False)
    handles = router_legend_handles(ordered_unique(r["router"] for r in rows))
    handles += [Patch(facecolor="0.6", label="Dispatcher dispatch"),
                Patch(facecolor="0.6", hatch="///", edgecolor="white", label="Dispatcher combine")]
    handles += [Line2D([], [], ls="", color="black", marker=markers[a % len(markers)], mfc="none",
                       label=f"{name} (dispatch + combine)") for a, name in enumerate(algorithms)]
    legend_axis.legend(handles=handles, loc="center", ncol=5, fontsize=7, frameon=False)
    first = next(b for b in results.alltoall if b.routed_cells())
    attrs = first.table_attrs.get("routed", {})
    fig.suptitle(f"Cost per router: E={attrs.get('experts', '?')}, {attrs.get('tokens_per_rank', '?')} tokens/rank, "
                 f"d={attrs.get('d_model', '?')}, {attrs.get('dispatch', '?')} dispatch, "
                 f"{attrs.get('distribution', '?')} logits, {first.world_size} ranks"
                 + (" (first trace)" if many else ""))
    out.figure(fig, "alltoall_cost_per_router")
    header = ["trace", "router", "top_k", "capacity_factor", "drop_rate", "wire_bytes", "rank_bytes_max",
              "padded_over_ragged", "dispatch_ms", "combine_ms"] + [f"{name}_ms" for name in algorithms]
    out.table("alltoall_cost_per_router", header,
              [[r[c] for c in header[:10]] + [r["algorithms"].get(name, math.nan) for name in algorithms]
               for r in rows])


# ---- the command line ---------------------------------------------------------------------------

def parse_names(text: str) -> List[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in FIGURES]
    if unknown or not names:
        raise ValueError(f"--only: unknown figure '{','.join(unknown) or text}' "
                         f"(known: {', '.join(FIGURES)})")
    return names


def parse_formats(text: str) -> List[str]:
    formats = [f.strip().lower() for f in text.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(f"--format: unknown format '{','.join(bad) or text}' (accepted: {', '.join(FORMATS)})")
    return formats


def main(argv: Sequence[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="figures:\n" + "\n".join(f"  {s.name:24} {s.summary}"
                                                                     for s in FIGURES.values()))
    parser.add_argument("results", nargs="?", help="directory searched for traces (*.h5), or one trace")
    parser.add_argument("--out", help="output directory (default RESULTS/figures)")
    parser.add_argument("--only", help="comma-separated figure names to draw (default: all)")
    parser.add_argument("--format", default="png,svg", help="comma-separated: png, svg, pdf (default png,svg)")
    parser.add_argument("--list", action="store_true", help="list the figure names and exit")
    args = parser.parse_args(argv)
    if args.list:
        for spec in FIGURES.values():
            print(f"{spec.name:24} {spec.summary}")
        return 0
    if args.results is None:
        parser.error("the results directory is required")
    try:
        names = parse_names(args.only) if args.only is not None else list(FIGURES)
        formats = parse_formats(args.format)
    except ValueError as error:
        print(f"figures.py: error: {error}", file=sys.stderr)
        return 2
    if not os.path.exists(args.results):
        print(f"figures.py: error: '{args.results}' does not exist", file=sys.stderr)
        return 2
    default_out = args.results if os.path.isdir(args.results) else os.path.dirname(args.results) or "."
    out_dir = args.out or os.path.join(default_out, "figures")

    results = Results.scan(args.results, skip_dirs=[out_dir])
    if not len(results):
        print(f"figures.py: error: no moebench trace (*.h5) under '{args.results}'", file=sys.stderr)
        return 1
    info(f"{len(results.train)} training, {len(results.capacity)} capacity, "
         f"{len(results.alltoall)} alltoall trace(s) under {args.results}")
    out = Output(out_dir, formats)
    failed = 0
    for name in names:
        before = len(out.written)
        try:
            FIGURES[name].draw(results, out)
        except Skip as reason:
            info(f"{name}: skipped ({reason})")
            continue
        except Exception as error:  # one broken figure must not hide the others
            failed += 1
            print(f"figures.py: error: {name}: {type(error).__name__}: {error}", file=sys.stderr)
            plt.close("all")
            continue
        files = [os.path.basename(p) for p in out.written[before:]]
        print(f"{name}: wrote {len(files)} files: {' '.join(files)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
