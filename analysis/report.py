#!/usr/bin/env python3
"""Writes the report of a results directory: RESULTS_DIR/report.md and RESULTS_DIR/report.html.

usage: /usr/bin/python3 analysis/report.py RESULTS_DIR [--summary CSV] [--figures DIR]
                                           [--moebench PATH] [--no-figures] [--out-name NAME]

The report holds, for the traces (*.h5) under RESULTS_DIR:
  - the summary tables of `moebench analyze` (one row per training run, capacity grid cell and
    all-to-all size), each row naming its trace and its line in the analyze CSV;
  - the tables the all-to-all benchmark writes beside its trace (cost per router, alpha-beta
    fit, the MODEL's predictions);
  - every file analysis/figures.py wrote, each figure with the traces it was drawn from;
  - the sources: every trace with the command line, ranks, hosts, start time and git revision
    stored in its root attributes (docs/trace-schema.md), and the driver's commands.sh if the
    directory has one.

Inputs are used as they are when they are up to date, and made otherwise:
  - the summary: --summary CSV, else RESULTS_DIR/summary/summary.csv; when it is missing or
    does not hold exactly the traces under RESULTS_DIR, or is older than one of them,
    `moebench analyze` is run (in RESULTS_DIR, into summary/; binary: --moebench, else
    $MOEBENCH, else build/moebench of this checkout). A --summary that is out of date is an
    error, not silently replaced.
  - the figures: --figures DIR, else RESULTS_DIR/figures; when it is missing, older than a
    trace or shows a run that is no trace under RESULTS_DIR, analysis/figures.py is run into it
    (an out-of-date --figures is an error). --no-figures leaves figures out.

Exit status: 0 when the report was written; 1 when there is no trace or a step failed; 2 for
bad arguments.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import html
import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import h5py
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import moetrace  # noqa: E402

ROOT = os.path.dirname(HERE)
FIGURE_EXTENSIONS = (".png", ".svg", ".pdf")


class ReportError(Exception):
    """A problem the user must fix; the message says how."""


def info(message: str) -> None:
    print(f"info: {message}", flush=True)


# ---- the traces -----------------------------------------------------------------------------------

@dataclass
class Source:
    """One trace: what its root attributes say about the run that wrote it."""
    path: str            # absolute
    rel: str             # relative to the results directory
    run_id: str          # moetrace.run_id_for: the name the figures use
    kind: str            # train, capacity or alltoall
    attrs: Dict[str, object]
    complete: bool
    pattern: str = ""    # alltoall: uniform, routed or replay

    @property
    def anchor(self) -> str:
        return "src-" + self.run_id

    @property
    def link(self) -> str:
        return f"[{self.run_id}](#{self.anchor})"

    @property
    def must_summarize(self) -> bool:
        """Must `moebench analyze` give this trace rows? Training runs, capacity grids and size
        sweeps always have them; a cost-per-router table (--pattern routed) has them from the
        analyze that reads it on, a replay has none."""
        return self.kind != "alltoall" or self.pattern in ("", "uniform")

    def attr(self, name: str, default: str = "") -> str:
        value = self.attrs.get(name, default)
        if isinstance(value, list):
            return ", ".join(str(v) for v in value)
        return str(value)


def _plain(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return _plain(value[()]) if value.shape == () else [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_source(path: str, root: str) -> Source:
    try:
        f = h5py.File(path, "r")
    except OSError as error:
        raise moetrace.TraceError(f"{path}: not a readable HDF5 file ({error})") from error
    with f:
        attrs = {name: _plain(f.attrs[name]) for name in f.attrs}
        if "schema_version" not in attrs:
            raise moetrace.TraceError(f"{path}: no schema_version attribute (not a moebench trace)")
        if int(attrs["schema_version"]) != moetrace.SCHEMA_VERSION:
            raise moetrace.TraceError(f"{path}: schema_version {attrs['schema_version']}, "
                                      f"this reader knows {moetrace.SCHEMA_VERSION}")
        kind = moetrace.classify(f)
        if kind is None:
            raise moetrace.TraceError(f"{path}: neither a train, capacity nor alltoall trace")
        group = {"train": "train", "capacity": "bench/capacity", "alltoall": "bench/alltoall"}[kind]
        complete = False
        pattern = ""
        if group in f:
            complete = int(np.asarray(f[group].attrs.get("complete", 0))) == 1
            pattern = str(_plain(f[group].attrs.get("pattern", ""))) if kind == "alltoall" else ""
    return Source(path=os.path.abspath(path), rel=os.path.relpath(path, root),
                  run_id=moetrace.run_id_for(path, root), kind=kind, attrs=attrs,
                  complete=complete, pattern=pattern)


def find_sources(root: str, skip_dirs: Sequence[str]) -> List[Source]:
    skip = [os.path.abspath(d) + os.sep for d in skip_dirs]
    sources = []
    for path in moetrace.find_traces(root):
        if any(os.path.abspath(path).startswith(d) for d in skip):
            continue
        try:
            sources.append(read_source(path, root))
        except moetrace.TraceError as error:
            info(f"skipping {error}")
    # in the order the runs started (a driver's order), then by path
    return sorted(sources, key=lambda s: (s.attr("start_time"), s.rel))


# ---- the summary (moebench analyze) --------------------------------------------------------------

def default_moebench() -> str:
    return os.environ.get("MOEBENCH") or os.path.join(ROOT, "build", "moebench")


def read_csv(path: str) -> List[Dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def summary_problem(path: str, sources: Sequence[Source], root: str) -> Optional[str]:
    """Why the summary CSV at `path` does not describe the traces, or None if it does."""
    if not os.path.isfile(path):
        return "it does not exist"
    rows = read_csv(path)
    listed = set()
    for row in rows:
        name = row.get("file", "")
        candidates = [name] if os.path.isabs(name) else [os.path.join(root, name), name]
        found = next((c for c in candidates if os.path.isfile(c)), None)
        listed.add(os.path.realpath(found) if found else name)
    expected = {os.path.realpath(s.path) for s in sources if s.must_summarize}
    known = {os.path.realpath(s.path) for s in sources}
    if not expected <= listed or not listed <= known:
        extra = sorted(os.path.basename(p) for p in listed - known)
        missing = sorted(os.path.relpath(p, os.path.realpath(root)) for p in expected - listed)
        parts = []
        if missing:
            parts.append("it lacks " + ", ".join(missing))
        if extra:
            parts.append("it has rows of traces that are not under the results directory: " + ", ".join(extra))
        return "; ".join(parts)
    newest = max((os.path.getmtime(s.path) for s in sources), default=0)
    if os.path.getmtime(path) < newest:
        return "a trace is newer than it"
    return None


def run_analyze(moebench: str, root: str, sources: Sequence[Source]) -> str:
    """Runs `moebench analyze` in `root` on the traces, into root/summary; returns the CSV path."""
    if not (os.path.isfile(moebench) and os.access(moebench, os.X_OK)):
        raise ReportError(f"no moebench binary at {moebench} to run analyze: build it "
                          f"(launch/build.sh), pass --moebench PATH or set MOEBENCH")
    command = [os.path.abspath(moebench), "analyze", *[s.rel for s in sources], "--out-dir", "summary"]
    info(f"running (in {root}): {' '.join(command)}")
    done = subprocess.run(command, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise ReportError(f"moebench analyze failed (exit status {done.returncode}):\n{done.stderr.strip()}")
    return os.path.join(root, "summary", "summary.csv")


# ---- the figures ---------------------------------------------------------------------------------

def newest_mtime(directory: str) -> float:
    times = [os.path.getmtime(os.path.join(directory, n)) for n in os.listdir(directory)]
    return max(times, default=0.0)


def figures_problem(directory: str, sources: Sequence[Source]) -> Optional[str]:
    """Why the figures in `directory` do not show the traces, or None if they may."""
    if not os.path.isdir(directory) or not os.listdir(directory):
        return "there are none"
    if newest_mtime(directory) < max(os.path.getmtime(s.path) for s in sources):
        return "a trace is newer than them"
    runs = {s.run_id for s in sources}
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".csv"):
            continue
        rows = read_csv(os.path.join(directory, name))
        column = next((c for c in ("run", "trace") if rows and c in rows[0]), None)
        gone = sorted({r[column] for r in rows} - runs) if column else []
        if gone:
            return f"{name} shows {', '.join(gone)}, which is no trace under the results directory"
    return None


def run_figures(root: str, out_dir: str) -> None:
    command = [sys.executable, os.path.join(HERE, "figures.py"), root, "--out", out_dir]
    info(f"running: {' '.join(command)}")
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=dict(os.environ, MPLBACKEND="Agg"))
    if done.returncode != 0:
        raise ReportError(f"analysis/figures.py failed (exit status {done.returncode}):\n{done.stdout.strip()}")


def figure_registry() -> Dict[str, str]:
    """figure name -> one-line summary, in the order figures.py draws them."""
    import figures  # matplotlib; only when there are figures to describe
    return {name: spec.summary for name, spec in figures.FIGURES.items()}


# ---- the document: blocks rendered as Markdown and as HTML ---------------------------------------

@dataclass
class Heading:
    level: int
    text: str
    anchor: str = ""


@dataclass
class Para:
    text: str   # inline Markdown: `code`, [text](href), **bold**


@dataclass
class Bullets:
    items: List[str]


@dataclass
class Code:
    text: str


@dataclass
class Image:
    src: str
    alt: str


@dataclass
class Table:
    header: List[str]
    rows: List[List[str]]
    numeric: List[bool] = field(default_factory=list)


INLINE = re.compile(r"`([^`]*)`|\[([^\]]+)\]\(([^)\s]+)\)|\*\*([^*]+)\*\*")


def inline_html(text: str) -> str:
    out, at = [], 0
    for match in INLINE.finditer(text):
        out.append(html.escape(text[at:match.start()]))
        code, label, href, bold = match.groups()
        if code is not None:
            out.append(f"<code>{html.escape(code)}</code>")
        elif label is not None:
            out.append(f'<a href="{html.escape(href)}">{inline_html(label)}</a>')
        else:
            out.append(f"<b>{inline_html(bold)}</b>")
        at = match.end()
    out.append(html.escape(text[at:]))
    return "".join(out)


def to_markdown(blocks: Sequence[object]) -> str:
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            anchor = f'<a id="{block.anchor}"></a>' if block.anchor else ""
            parts.append(f"{'#' * block.level} {anchor}{block.text}")
        elif isinstance(block, Para):
            parts.append(block.text)
        elif isinstance(block, Bullets):
            parts.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, Code):
            fence = "````" if "```" in block.text else "```"
            parts.append(f"{fence}\n{block.text.rstrip()}\n{fence}")
        elif isinstance(block, Image):
            parts.append(f"![{block.alt}]({block.src})")
        elif isinstance(block, Table):
            numeric = block.numeric or [False] * len(block.header)
            lines = ["| " + " | ".join(block.header) + " |",
                     "| " + " | ".join("---:" if n else "---" for n in numeric) + " |"]
            lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in block.rows]
            parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


HTML_STYLE = """body { font-family: sans-serif; max-width: 80rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.4; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0 1rem; }
th, td { border: 1px solid #ccc; padding: 0.15rem 0.45rem; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f6f6; padding: 0.6rem; overflow-x: auto; font-size: 0.8rem; }
img { max-width: 100%; border: 1px solid #eee; }
code { background: #f6f6f6; padding: 0 0.2rem; }"""


def to_html(blocks: Sequence[object], title: str) -> str:
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
             f"<title>{html.escape(title)}</title>\n<style>\n{HTML_STYLE}\n</style>\n</head>\n<body>"]
    for block in blocks:
        if isinstance(block, Heading):
            anchor = f' id="{html.escape(block.anchor)}"' if block.anchor else ""
            parts.append(f"<h{block.level}{anchor}>{inline_html(block.text)}</h{block.level}>")
        elif isinstance(block, Para):
            parts.append(f"<p>{inline_html(block.text)}</p>")
        elif isinstance(block, Bullets):
            parts.append("<ul>\n" + "\n".join(f"<li>{inline_html(i)}</li>" for i in block.items) + "\n</ul>")
        elif isinstance(block, Code):
            parts.append(f"<pre><code>{html.escape(block.text.rstrip())}</code></pre>")
        elif isinstance(block, Image):
            parts.append(f'<p><img src="{html.escape(block.src)}" alt="{html.escape(block.alt)}"></p>')
        elif isinstance(block, Table):
            numeric = block.numeric or [False] * len(block.header)
            head = "".join(f"<th>{inline_html(h)}</th>" for h in block.header)
            body = "\n".join("<tr>" + "".join(
                f"<td class=\"num\">{inline_html(c)}</td>" if n else f"<td>{inline_html(c)}</td>"
                for c, n in zip(row, numeric)) + "</tr>" for row in block.rows)
            parts.append(f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>")
    parts.append("</body>\n</html>\n")
    return "\n".join(parts)


# ---- numbers -------------------------------------------------------------------------------------

EMPTY = "–"
INTEGER = re.compile(r"-?\d+")


def number_text(text: str) -> Optional[str]:
    """A CSV field as the report prints it: integers as they are; other numbers to 4 significant
    digits, or to the unit from 1000 up; None if the field is not a number."""
    text = text.strip()
    if INTEGER.fullmatch(text):
        return text
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value):
        return text
    if abs(value) >= 1000:
        return f"{value:.0f}"
    return f"{value:.4g}"


def cell(text: str) -> str:
    if text is None or text.strip() == "":
        return EMPTY
    number = number_text(text)
    return number if number is not None else text.strip()


def is_number(text: str) -> bool:
    return text is not None and text.strip() != "" and number_text(text) is not None


# ---- the report ----------------------------------------------------------------------------------

SUMMARY_TABLES = {
    # kind -> [(title, columns)]; `#` (the CSV line) and `run` come first in every table
    "train": [
        ("quality and speed", ["router", "router_arch", "top_k", "experts", "capacity_factor", "ranks",
                               "steps", "ppl", "bpb", "tokens_per_s", "a2a_bytes_per_step",
                               "a2a_ms_per_step", "complete"]),
        ("routing", ["router", "top_k", "capacity_factor", "drop_rate", "token_drop_rate", "load_cv",
                     "max_load_ratio", "gate_entropy", "router_entropy", "mean_topk_prob",
                     "router_params", "balance", "dispatch"]),
    ],
    "capacity": [
        ("grid cells", ["router", "dispatch", "experts", "top_k", "capacity_factor", "capacity",
                        "drop_rate", "token_drop_rate", "load_cv", "max_load_ratio", "router_entropy",
                        "a2a_bytes_per_step", "a2a_ms_per_step", "wrong", "complete"]),
    ],
    "alltoall": [
        ("size sweep", ["ranks", "algorithm", "size_bytes", "algbw_GBps", "busbw_GBps",
                        "a2a_bytes_per_step", "a2a_ms_per_step", "wrong", "complete"]),
        ("cost per router", ["ranks", "router", "experts", "top_k", "capacity_factor", "capacity",
                             "dispatch", "drop_rate", "a2a_bytes_per_step", "rank_bytes_max",
                             "padded_over_ragged", "a2a_ms_per_step", "wrong", "complete"]),
    ],
}
# Which rows of a kind a table shows: alltoall rows by their `pattern` (docs/analyze.md).
TABLE_ROWS = {
    ("alltoall", "size sweep"): lambda row: row.get("pattern", "uniform") in ("", "uniform"),
    ("alltoall", "cost per router"): lambda row: row.get("pattern") == "routed",
}
KIND_TITLES = {"train": "Training runs", "capacity": "Capacity grid", "alltoall": "All-to-all"}


class Report:
    def __init__(self, root: str, sources: List[Source], summary_csv: str,
                 figures_dir: Optional[str]):
        self.root = root
        self.sources = sources
        self.by_path = {os.path.realpath(s.path): s for s in sources}
        self.by_run = {s.run_id: s for s in sources}
        self.summary_csv = summary_csv
        self.rows = read_csv(summary_csv)
        self.summarized = {os.path.realpath(self.source_of_row(row).path) for row in self.rows}
        self.figures_dir = figures_dir
        self.blocks: List[object] = []

    def rel(self, path: str) -> str:
        """A link target relative to the report (which lives in the results directory)."""
        return os.path.relpath(path, self.root).replace(os.sep, "/")

    def source_of_row(self, row: Dict[str, str]) -> Source:
        name = row.get("file", "")
        for candidate in ([name] if os.path.isabs(name) else [os.path.join(self.root, name), name]):
            source = self.by_path.get(os.path.realpath(candidate))
            if source:
                return source
        raise ReportError(f"{self.summary_csv}: a row names '{name}', which is not a trace under {self.root}")

    # -- sections --------------------------------------------------------------------------------
    def build(self) -> List[object]:
        b = self.blocks
        marker = self.experiment_marker()
        title = f"moebench report: {marker or os.path.basename(os.path.abspath(self.root))}"
        b.append(Heading(1, title))
        counts = {kind: sum(1 for s in self.sources if s.kind == kind) for kind in ("train", "capacity", "alltoall")}
        b.append(Para(
            f"{len(self.sources)} traces under `{self.root}` ({counts['train']} training runs, "
            f"{counts['capacity']} capacity grids, {counts['alltoall']} all-to-all runs), "
            f"written by `analysis/report.py` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. "
            f"Every table row names its trace in the column `run`; [Sources](#sources) gives each "
            f"trace's command line, ranks, hosts, start time and git revision, from the trace's root "
            f"attributes. In the summary tables `#` is the row's line in "
            f"[{self.rel(self.summary_csv)}]({self.rel(self.summary_csv)}) (`moebench analyze`; "
            f"columns defined in docs/analyze.md); numbers are rounded to 4 significant digits "
            f"(to the unit from 1000 up), {EMPTY} where a column does not apply."))
        self.commands_section()
        self.summary_section()
        self.bench_tables_section()
        self.figures_section()
        self.sources_section()
        return b

    def experiment_marker(self) -> str:
        path = os.path.join(self.root, ".moebench-experiment")
        if not os.path.isfile(path):
            return ""
        words = dict(line.split(" ", 1) for line in open(path).read().splitlines() if " " in line)
        name = words.get("experiment", "")
        return f"{name} experiment (--{words['mode']})" if name and "mode" in words else name

    def commands_section(self) -> None:
        path = os.path.join(self.root, "commands.sh")
        self.blocks.append(Heading(2, "How these results were made", "commands"))
        if os.path.isfile(path):
            self.blocks.append(Para(f"The driver's record [commands.sh](commands.sh): every command it "
                                    f"ran, from the repository root, with its wall time; each "
                                    f"command's output is in [logs/](logs/)."))
            self.blocks.append(Code(open(path).read()))
        else:
            self.blocks.append(Para("No driver record (commands.sh) in this directory: each trace's "
                                    "command line is under [Sources](#sources)."))

    def summary_section(self) -> None:
        b = self.blocks
        b.append(Heading(2, "Summary tables", "summary"))
        md = os.path.join(os.path.dirname(self.summary_csv), "summary.md")
        also = f" and [{self.rel(md)}]({self.rel(md)})" if os.path.isfile(md) else ""
        b.append(Para(f"From `moebench analyze` ([{self.rel(self.summary_csv)}]({self.rel(self.summary_csv)}){also}): "
                      f"{len(self.rows)} rows."))
        numbered = list(enumerate(self.rows, start=2))  # line 1 is the header
        for kind, tables in SUMMARY_TABLES.items():
            rows = [(line, row) for line, row in numbered if row.get("command") == kind]
            if not rows:
                continue
            b.append(Heading(3, f"{KIND_TITLES[kind]} ({len(rows)} rows)", f"summary-{kind}"))
            if kind == "train":
                self.train_highlights(rows)
            shown = set()
            for title, columns in tables:
                picked = [(line, row) for line, row in rows if TABLE_ROWS.get((kind, title), lambda r: True)(row)]
                if not picked:
                    continue
                shown.update(line for line, _ in picked)
                # the columns that exist and that at least one of these rows fills
                columns = [c for c in columns if any(row.get(c, "").strip() for _, row in picked)]
                self.summary_table(title, columns, picked)
            rest = [(line, row) for line, row in rows if line not in shown]
            if rest:  # rows of a kind of table this report does not know: every filled column
                columns = [c for c in self.rows[0] if c not in ("command", "file")
                           and any(row.get(c, "").strip() for _, row in rest)]
                self.summary_table("other rows", columns, rest)
        others = [(line, row) for line, row in numbered if row.get("command") not in SUMMARY_TABLES]
        if others:  # a kind of trace this report does not know: every filled column
            b.append(Heading(3, f"Other rows ({len(others)})", "summary-other"))
            columns = [c for c in self.rows[0] if c != "file" and any(row.get(c, "").strip() for _, row in others)]
            self.summary_table("other rows", columns, others)

    def summary_table(self, title: str, columns: List[str], rows) -> None:
        """One table of summary rows: `#` (the CSV line), `run` (the trace), then `columns`."""
        table_rows = [[str(line), self.source_of_row(row).link] + [cell(row.get(c, "")) for c in columns]
                      for line, row in rows]
        numeric = [True, False] + [all(is_number(row.get(c, "")) or not row.get(c, "").strip()
                                       for _, row in rows) for c in columns]
        self.blocks.append(Para(f"**{title}** ({len(rows)} rows)"))
        self.blocks.append(Table(["#", "run"] + columns, table_rows, numeric))

    def train_highlights(self, rows) -> None:
        items = []
        for column, best, what in (("ppl", min, "lowest validation perplexity"),
                                   ("bpb", min, "lowest bits per byte"),
                                   ("tokens_per_s", max, "highest throughput (tokens/s)")):
            valued = [(float(row[column]), line, row) for line, row in rows if is_number(row.get(column, ""))]
            if not valued:
                continue
            value, line, row = best(valued, key=lambda v: v[0])
            source = self.source_of_row(row)
            items.append(f"{what}: **{cell(row[column])}**, {source.link} ({row.get('router', '')} "
                         f"k{row.get('top_k', '')} CF {cell(row.get('capacity_factor', ''))}; line {line})")
        incomplete = [self.source_of_row(row).link for _, row in rows if row.get("complete") == "0"]
        if incomplete:
            items.append("runs that did not finish (read up to their last flushed step): " + ", ".join(incomplete))
        if items:
            self.blocks.append(Bullets(items))

    def bench_tables_section(self) -> None:
        """The tables `moebench alltoall` writes beside its trace that analyze does not summarize."""
        found = []
        for source in self.sources:
            if source.kind != "alltoall":
                continue
            stem = source.path[:-3] if source.path.endswith(".h5") else source.path
            tables = []
            if source.pattern not in ("", "uniform"):
                tables.append((stem + ".csv", f"`moebench alltoall --pattern {source.pattern}`, "
                                              f"with the time of each exchange algorithm"))
            tables.append((stem + "_fit.csv", "alpha-beta fit of the size sweep (docs/alltoall.md)"))
            tables.append((stem + "_predict.csv", "**MODEL, NOT MEASURED**: the fit's predicted time "
                                                  "of one exchange at larger rank counts"))
            found += [(source, path, what) for path, what in tables if os.path.isfile(path)]
        if not found:
            return
        b = self.blocks
        b.append(Heading(2, "Benchmark tables", "bench-tables"))
        b.append(Para("The tables `moebench alltoall` writes beside its trace (docs/alltoall.md) that "
                      "`moebench analyze` does not summarize; numbers as in the CSV, rounded as above."))
        for source, path, what in found:
            rows = read_csv(path)
            if not rows:
                continue
            header = list(rows[0].keys())
            b.append(Heading(3, f"{os.path.basename(path)}", "table-" + re.sub(r"[^A-Za-z0-9._-]", "_", self.rel(path))))
            b.append(Para(f"{what}; from [{self.rel(path)}]({self.rel(path)}), written by the run of {source.link}."))
            numeric = [all(is_number(r[h]) or not r[h].strip() for r in rows) for h in header]
            b.append(Table(header, [[cell(r[h]) for h in header] for r in rows], numeric))

    def figures_section(self) -> None:
        b = self.blocks
        b.append(Heading(2, "Figures", "figures"))
        if self.figures_dir is None:
            b.append(Para("Left out (`--no-figures`)."))
            return
        files = sorted(os.listdir(self.figures_dir)) if os.path.isdir(self.figures_dir) else []
        registry = figure_registry()
        used = set()
        b.append(Para(f"Drawn by `analysis/figures.py` into [{self.rel(self.figures_dir)}/]"
                      f"({self.rel(self.figures_dir)}/) from every trace under `{self.root}` "
                      f"(definitions: analysis/README.md). Next to each figure, its CSV holds the "
                      f"plotted points."))
        missing = []
        for name, summary in registry.items():
            stems = [name] if any(f.startswith(name + ".") for f in files) else []
            stems += sorted({os.path.splitext(f)[0] for f in files if f.startswith(name + "_")
                             and os.path.splitext(f)[0][len(name) + 1:] in self.by_run})
            if not stems:
                missing.append(name)
                continue
            for stem in stems:
                mine = [f for f in files if os.path.splitext(f)[0] == stem]
                used.update(mine)
                self.figure_block(stem, summary, mine)
            if name == "router_arch_frontier":  # its companion table
                table = [f for f in files if os.path.splitext(f)[0] == "router_arch"]
                if table:
                    used.update(table)
                    self.router_arch_table(table)
        others = [f for f in files if f not in used]
        if others:
            b.append(Heading(3, "Other files", "figures-other"))
            b.append(Bullets([f"[{f}]({self.rel(os.path.join(self.figures_dir, f))})" for f in others]))
        if missing:
            b.append(Para("Not drawn (figures.py draws a figure only where its data exists): "
                          + ", ".join(f"`{n}`" for n in missing) + "."))

    def figure_block(self, stem: str, summary: str, files: List[str]) -> None:
        b = self.blocks
        b.append(Heading(3, stem, "fig-" + stem))
        b.append(Para(summary[:1].upper() + summary[1:] + "."))
        image = next((f for ext in FIGURE_EXTENSIONS for f in files if f == stem + ext and ext != ".pdf"), None)
        if image:
            b.append(Image(self.rel(os.path.join(self.figures_dir, image)), stem))
        order = {ext: i for i, ext in enumerate(FIGURE_EXTENSIONS + (".csv", ".md"))}
        files = sorted(files, key=lambda f: order.get(os.path.splitext(f)[1], 99))
        links = " · ".join(f"[{f}]({self.rel(os.path.join(self.figures_dir, f))})" for f in files)
        b.append(Para(f"Files: {links}. From: {self.figure_sources(stem, files)}."))

    def figure_sources(self, stem: str, files: List[str]) -> str:
        """The traces a figure was drawn from: its run (per-run figures) or the runs its CSV names."""
        runs = []
        for run in self.by_run:
            if stem.endswith("_" + run):
                runs = [run]
        data = os.path.join(self.figures_dir, stem + ".csv")
        if not runs and stem + ".csv" in files:
            rows = read_csv(data)
            column = next((c for c in ("run", "trace") if rows and c in rows[0]), None)
            if column:
                runs = list(dict.fromkeys(r[column] for r in rows))
        if not runs:
            return "every trace under the results directory"
        return ", ".join(self.by_run[r].link if r in self.by_run else f"`{r}`" for r in runs)

    def router_arch_table(self, files: List[str]) -> None:
        links = " · ".join(f"[{f}]({self.rel(os.path.join(self.figures_dir, f))})" for f in files)
        self.blocks.append(Para(f"**Router architectures** (figures.py's table; routing metrics are "
                                f"means over the last 25 % of the steps, not analyze's window): {links}"))
        if "router_arch.csv" in files:
            rows = read_csv(os.path.join(self.figures_dir, "router_arch.csv"))
            if rows:
                header = list(rows[0].keys())
                table_rows = [[self.by_run[r[h]].link if h == "run" and r[h] in self.by_run else cell(r[h])
                               for h in header] for r in rows]
                numeric = [h != "run" and all(is_number(r[h]) or not r[h].strip() for r in rows) for h in header]
                self.blocks.append(Table(header, table_rows, numeric))

    def sources_section(self) -> None:
        b = self.blocks
        b.append(Heading(2, "Sources", "sources"))
        b.append(Para("Every trace under the results directory, with what its root attributes record "
                      "(docs/trace-schema.md). The command line is the one the trace stores (the "
                      "binary's name normalised to `moebench`; the launcher and rank count are in "
                      "`world_size`)."))
        for s in self.sources:
            hosts = s.attrs.get("hostnames", [])
            hosts = hosts if isinstance(hosts, list) else [hosts]
            host_text = ", ".join(f"{h} × {hosts.count(h)}" for h in dict.fromkeys(hosts)) or "?"
            size = os.path.getsize(s.path)
            what = s.kind + (f" --pattern {s.pattern}" if s.pattern else "")
            b.append(Heading(3, s.run_id, s.anchor))
            b.append(Para(
                f"[{s.rel}]({self.rel(s.path)}) ({size / 1e6:.2f} MB): `moebench {what}`, "
                f"{s.attr('world_size', '?')} ranks on {host_text}; started {s.attr('start_time', '?')}; "
                f"moebench {s.attr('moebench_version', '?')}, git {s.attr('git_revision', '?')}; "
                + ("complete" if s.complete else "**incomplete** (the run did not finish)")
                + ("" if os.path.realpath(s.path) in self.summarized else
                   "; no rows in the summary (analyze does not summarize this kind of table)")))
            b.append(Code(s.attr("command_line", "(no command_line attribute)")))


# ---- the command line ----------------------------------------------------------------------------

def main(argv: Sequence[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("results", help="results directory: the traces (*.h5) under it are reported")
    parser.add_argument("--summary", help="the CSV of `moebench analyze` on those traces "
                                          "(default RESULTS/summary/summary.csv, made if missing or stale)")
    parser.add_argument("--figures", help="directory of analysis/figures.py's output "
                                          "(default RESULTS/figures, made if missing or stale)")
    parser.add_argument("--no-figures", action="store_true", help="leave figures out")
    parser.add_argument("--moebench", help="the moebench binary for analyze (default $MOEBENCH or build/moebench)")
    parser.add_argument("--out-name", default="report", help="output base name (default report: report.md, report.html)")
    args = parser.parse_args(argv)

    root = args.results
    if not os.path.isdir(root):
        print(f"report.py: error: '{root}' is not a directory (pass the results directory)", file=sys.stderr)
        return 2
    if args.figures and args.no_figures:
        print("report.py: error: --figures and --no-figures contradict each other", file=sys.stderr)
        return 2
    figures_dir = None if args.no_figures else (args.figures or os.path.join(root, "figures"))
    skip = [os.path.join(root, "summary")] + ([figures_dir] if figures_dir else [])
    try:
        sources = find_sources(root, skip)
        if not sources:
            raise ReportError(f"no moebench trace (*.h5) under '{root}'")

        if args.summary:
            problem = summary_problem(args.summary, sources, root)
            if problem:
                raise ReportError(f"--summary {args.summary} does not describe the traces under {root}: "
                                  f"{problem} (run moebench analyze again, or leave out --summary and "
                                  f"report.py runs it)")
            summary_csv = args.summary
        else:
            summary_csv = os.path.join(root, "summary", "summary.csv")
            problem = summary_problem(summary_csv, sources, root)
            if problem:
                info(f"{os.path.relpath(summary_csv)}: {problem}; running moebench analyze")
                summary_csv = run_analyze(args.moebench or default_moebench(), root, sources)
        if figures_dir is not None:
            problem = figures_problem(figures_dir, sources)
            if problem and args.figures:
                raise ReportError(f"--figures {args.figures} does not show the traces under {root}: {problem} "
                                  f"(run analysis/figures.py again, or leave out --figures and report.py runs it)")
            if problem:
                info(f"{os.path.relpath(figures_dir)}: {problem}; running analysis/figures.py")
                run_figures(root, figures_dir)

        report = Report(root, sources, summary_csv, figures_dir)
        blocks = report.build()
    except ReportError as error:
        print(f"report.py: error: {error}", file=sys.stderr)
        return 1

    title = next(b.text for b in blocks if isinstance(b, Heading))
    written = []
    for extension, text in (("md", to_markdown(blocks)), ("html", to_html(blocks, title))):
        path = os.path.join(root, f"{args.out_name}.{extension}")
        with open(path + ".partial", "w") as f:
            f.write(text)
        os.replace(path + ".partial", path)
        written.append(path)
    print(f"report: wrote {' and '.join(written)} ({len(report.rows)} summary rows, "
          f"{len(sources)} traces)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
