"""Reads moebench traces (docs/trace-schema.md, schema version 1) into plain Python/NumPy.

    import moetrace
    for path in moetrace.find_traces("results"):
        trace = moetrace.load(path)          # TrainRun, CapacityBench or AlltoallBench
        print(trace.kind, trace.run_id, trace.complete, trace.notes)

A trace is classified by its groups (`/bench/capacity`, `/bench/alltoall`, `/train`) and,
failing that, by the root attribute `command`. A run that did not finish (no `complete`
attribute) is read up to its last flushed row and flagged: `complete` is False and `notes`
says what was read. Everything is copied into memory; no HDF5 object outlives `load`.

The per-run summaries that the figures plot (throughput, tail means of routing metrics,
router parameter counts) are defined here, once, and documented in analysis/README.md.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import h5py
import numpy as np

SCHEMA_VERSION = 1

# Fraction of the steps at the end of a run over which routing metrics and expert loads are
# averaged ("tail"), and fraction at the start left out of the throughput median (warm-up).
TAIL_FRACTION = 0.25
WARMUP_FRACTION = 0.10

ROUTING_SCALARS = ("drop_rate", "token_drop_rate", "load_cv", "max_load_ratio", "unused_experts",
                   "router_entropy", "gate_entropy", "mean_topk_prob", "aux_loss", "z_loss")

ALLTOALL_ALGORITHMS_DEFAULT = {0: "alltoallv", 1: "pairwise", 2: "hierarchical"}


class TraceError(Exception):
    """A file that is not a readable moebench trace of a supported schema."""


# ---- small readers ------------------------------------------------------------------------------

def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _text(value[()])
    return str(value)


def _plain(value):
    """An HDF5 attribute value as a plain Python value (str, int, float or list)."""
    if isinstance(value, (bytes, str)):
        return _text(value)
    if isinstance(value, np.ndarray):
        if value.shape == ():
            return _plain(value[()])
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def _attrs(obj) -> Dict[str, object]:
    return {name: _plain(obj.attrs[name]) for name in obj.attrs}


def _datasets(group) -> Dict[str, np.ndarray]:
    """Every dataset directly in `group`, read into memory."""
    return {name: item[...] for name, item in group.items() if isinstance(item, h5py.Dataset)}


def _layer_groups(group) -> List[h5py.Group]:
    """The `layer_i` subgroups of `group`, in numeric order."""
    layers = []
    for name, item in group.items():
        match = re.fullmatch(r"layer_(\d+)", name)
        if match and isinstance(item, h5py.Group):
            layers.append((int(match.group(1)), item))
    return [item for _, item in sorted(layers, key=lambda pair: pair[0])]


def _is_complete(group) -> bool:
    return "complete" in group.attrs and int(np.asarray(group.attrs["complete"])) == 1


def _truncate(series: Dict[str, np.ndarray], rows: int) -> Dict[str, np.ndarray]:
    return {name: values[:rows] for name, values in series.items()}


def find_traces(root: str) -> List[str]:
    """Every *.h5 file under `root` (or `root` itself if it is a file), sorted."""
    if os.path.isfile(root):
        return [root]
    found = []
    for directory, subdirs, files in os.walk(root):
        subdirs.sort()
        found.extend(os.path.join(directory, name) for name in files if name.endswith(".h5"))
    return sorted(found)


def run_id_for(path: str, root: Optional[str]) -> str:
    """A short name for a trace: its path relative to `root`, without `.h5`, `/` -> `_`."""
    relative = os.path.relpath(path, root) if root and os.path.isdir(root) else os.path.basename(path)
    stem = relative[:-3] if relative.endswith(".h5") else relative
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem)


# ---- the three kinds of trace -------------------------------------------------------------------

@dataclass
class Trace:
    path: str
    run_id: str
    kind: str
    attrs: Dict[str, object]          # root attributes
    config: Dict[str, str]            # /config: option name -> value as text
    complete: bool
    notes: List[str] = field(default_factory=list)

    @property
    def world_size(self) -> int:
        return int(self.attrs.get("world_size", 0))

    def option(self, name: str, default: str = "") -> str:
        return self.config.get(name, default)


@dataclass
class TrainRun(Trace):
    train: Dict[str, np.ndarray] = field(default_factory=dict)    # /train series, [steps]
    eval: Dict[str, np.ndarray] = field(default_factory=dict)     # /eval series, [evals]
    eval_attrs: Dict[str, object] = field(default_factory=dict)   # final_loss, final_bpb
    routing: List[Dict[str, np.ndarray]] = field(default_factory=list)  # per MoE block
    comm: List[Dict[str, np.ndarray]] = field(default_factory=list)     # per MoE block
    timing: Dict[str, np.ndarray] = field(default_factory=dict)
    phases: List[str] = field(default_factory=list)
    samples: Dict[str, np.ndarray] = field(default_factory=dict)  # step, tokens, experts

    # -- configuration ---------------------------------------------------------------------------
    @property
    def router(self) -> str:
        return self.option("router", "?")

    @property
    def router_arch(self) -> str:
        return self.option("router-arch", "linear")

    @property
    def top_k(self) -> int:
        return int(self.option("top-k", "0"))

    @property
    def experts(self) -> int:
        return int(self.option("experts", "0"))

    @property
    def capacity_factor(self) -> float:
        return float(self.option("capacity-factor", "nan"))

    @property
    def steps(self) -> int:
        return len(self.train.get("loss", ()))

    @property
    def moe_blocks(self) -> int:
        return len(self.routing)

    @property
    def label(self) -> str:
        """router, k, CF as the figures annotate a run."""
        text = f"{self.router} k{self.top_k} {format_cf(self.capacity_factor)}"
        return text if self.complete else text + " (incomplete)"

    @property
    def byte_level(self) -> bool:
        """Tokens are bytes: every evaluation stands for 1 byte per token (`/eval/bytes_per_token`,
        where the trace has it) and the sampled ids are below 256."""
        per_token = self.eval.get("bytes_per_token")
        if per_token is not None and len(per_token) and not np.all(per_token == 1.0):
            return False
        tokens = self.samples.get("tokens")
        return tokens is None or tokens.size == 0 or int(tokens.max()) < 256

    # -- summaries -------------------------------------------------------------------------------
    def final_eval(self) -> Optional[Dict[str, float]]:
        """The last evaluation: step, loss, ppl, bpb; None if the run has none."""
        if len(self.eval.get("loss", ())) == 0:
            return None
        return {name: float(self.eval[name][-1]) for name in ("step", "loss", "ppl", "bpb")
                if name in self.eval}

    def tokens_per_s(self) -> float:
        """Median of /train/tokens_per_s after the warm-up steps (see warmup_steps)."""
        values = self.train.get("tokens_per_s", np.empty(0))
        values = values[warmup_steps(len(values)):]
        return float(np.median(values)) if len(values) else math.nan

    def routing_summary(self, name: str) -> float:
        """Mean over MoE blocks of the tail mean of a routing scalar; NaN where undefined."""
        per_block = [tail_mean(block[name]) for block in self.routing if name in block]
        per_block = [value for value in per_block if not math.isnan(value)]
        return float(np.mean(per_block)) if per_block else math.nan

    def tail_load(self, block: int) -> np.ndarray:
        """Mean kept assignments per expert of one MoE block over the tail steps."""
        load = self.routing[block]["load"]
        return load[len(load) - tail_steps(len(load)):].mean(axis=0)

    def router_params(self) -> int:
        """Router parameters of the whole model, as the trainer counts them."""
        for source in (self.attrs, self.eval_attrs):
            if "router_params" in source:
                return int(source["router_params"])
        per_block = router_param_count(self.router_arch, int(self.option("d-model", "0")),
                                       int(self.option("router-hidden", "0")), self.experts)
        return per_block * self.moe_blocks


@dataclass
class CapacityBench(Trace):
    group_attrs: Dict[str, object] = field(default_factory=dict)
    cells: Dict[str, np.ndarray] = field(default_factory=dict)    # dataset name -> [cells, ...]

    @property
    def rows(self) -> int:
        return len(self.cells.get("experts", ()))


@dataclass
class AlltoallBench(Trace):
    group_attrs: Dict[str, object] = field(default_factory=dict)
    rows_data: Dict[str, np.ndarray] = field(default_factory=dict)
    algorithms: Dict[int, str] = field(default_factory=dict)      # code -> name
    measured: List[str] = field(default_factory=list)  # `algorithms`: order of the [..., A] axes
    tables: Dict[str, Dict[str, np.ndarray]] = field(default_factory=dict)  # subgroups: routed, fit, ...
    table_attrs: Dict[str, Dict[str, object]] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return len(self.rows_data.get("size_bytes", ()))

    def algorithm_name(self, code: int) -> str:
        return self.algorithms.get(int(code), f"algorithm {int(code)}")

    def routed_cells(self) -> int:
        """Rows of the cost-per-router table (/bench/alltoall/routed), 0 if there is none."""
        return len(self.tables.get("routed", {}).get("router", ()))

    def router_names(self) -> Dict[int, str]:
        """Router code -> name, from the `router_codes` attribute of /bench/alltoall/routed."""
        return parse_codes(_text(self.table_attrs.get("routed", {}).get("router_codes", "")))


# ---- definitions shared by the figures ----------------------------------------------------------

def tail_steps(n: int) -> int:
    """How many of the last steps the tail averages cover: ceil(TAIL_FRACTION n), at least 1."""
    return max(1, math.ceil(TAIL_FRACTION * n)) if n else 0


def warmup_steps(n: int) -> int:
    """Steps left out at the start of the throughput median: floor(WARMUP_FRACTION n), at
    least 1 when there are 2 or more steps."""
    return max(1, int(WARMUP_FRACTION * n)) if n >= 2 else 0


def tail_mean(values: np.ndarray) -> float:
    """NaN-ignoring mean of the last tail_steps(n) rows; NaN if none is finite."""
    tail = np.asarray(values, dtype=float)[len(values) - tail_steps(len(values)):]
    tail = tail[np.isfinite(tail)]
    return float(tail.mean()) if tail.size else math.nan


def router_param_count(arch: str, d_model: int, hidden: int, experts: int) -> int:
    """Parameters of one router network (src/routing/router_net.cpp, router_param_count)."""
    if arch == "linear":
        return d_model * experts
    if arch == "mlp":
        return d_model * hidden + hidden * experts
    if arch == "mlp_hadamard":
        return 2 * d_model * hidden + hidden * experts
    raise TraceError(f"unknown router architecture '{arch}'")


def format_cf(cf: float) -> str:
    if math.isnan(cf):
        return "CF ?"
    return "dropless" if cf <= 0 else f"CF {cf:g}"


def pareto_mask(ppl: np.ndarray, tokens_per_s: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """True for the eligible points that no other eligible point dominates (lower or equal
    perplexity and higher or equal tokens/s, one of them strictly)."""
    ppl, tps, eligible = map(np.asarray, (ppl, tokens_per_s, eligible))
    mask = np.zeros(len(ppl), dtype=bool)
    for i in range(len(ppl)):
        if not eligible[i]:
            continue
        dominated = False
        for j in range(len(ppl)):
            if j == i or not eligible[j]:
                continue
            if ppl[j] <= ppl[i] and tps[j] >= tps[i] and (ppl[j] < ppl[i] or tps[j] > tps[i]):
                dominated = True
                break
        mask[i] = not dominated
    return mask


# ---- loading ------------------------------------------------------------------------------------

def classify(f: h5py.File) -> Optional[str]:
    """'train', 'capacity', 'alltoall', or None for a file of none of these kinds."""
    if "bench" in f and "capacity" in f["bench"]:
        return "capacity"
    if "bench" in f and "alltoall" in f["bench"]:
        return "alltoall"
    if "train" in f:
        return "train"
    command = _text(f.attrs.get("command", ""))
    return command if command in ("train", "capacity", "alltoall") else None


def load(path: str, root: Optional[str] = None) -> Trace:
    """Reads one trace. Raises TraceError for a file that is not a supported trace."""
    try:
        f = h5py.File(path, "r")
    except OSError as error:
        raise TraceError(f"{path}: not a readable HDF5 file ({error})") from error
    with f:
        version = f.attrs.get("schema_version")
        if version is None:
            raise TraceError(f"{path}: no schema_version attribute (not a moebench trace)")
        if int(np.asarray(version)) != SCHEMA_VERSION:
            raise TraceError(f"{path}: schema_version {int(np.asarray(version))}, "
                             f"this reader knows {SCHEMA_VERSION}")
        kind = classify(f)
        if kind is None:
            raise TraceError(f"{path}: neither a train, capacity nor alltoall trace")
        common = dict(path=path, run_id=run_id_for(path, root), kind=kind, attrs=_attrs(f),
                      config={k: _text(v) for k, v in _attrs(f["config"]).items()}
                      if "config" in f else {},
                      complete=False)
        if kind == "train":
            return _load_train(f, common)
        if kind == "capacity":
            return _load_capacity(f, common)
        return _load_alltoall(f, common)


def _load_train(f: h5py.File, common: dict) -> TrainRun:
    if "train" not in f:
        raise TraceError(f"{common['path']}: a train trace without /train")
    run = TrainRun(**common)
    run.complete = _is_complete(f["train"])
    run.train = _datasets(f["train"])
    if "eval" in f:
        run.eval = _datasets(f["eval"])
        run.eval_attrs = _attrs(f["eval"])
    if "routing" in f:
        run.routing = [_datasets(g) for g in _layer_groups(f["routing"])]
    if "comm" in f:
        run.comm = [_datasets(g) for g in _layer_groups(f["comm"])]
    if "timing" in f:
        run.timing = _datasets(f["timing"])
        run.phases = [p for p in _text(f["timing"].attrs.get("phases", "")).split(",") if p]
    if "samples" in f:
        run.samples = _datasets(f["samples"])

    # Per-step series of one run share the step axis. In a run that died, series appended
    # after the flush of a step (tokens/s, timings) can be one row short of the others: read
    # every per-step series up to the last step they all hold.
    step_series = [run.train, run.timing, *run.routing, *run.comm]
    lengths = [len(v) for group in step_series for v in group.values()]
    steps = min(lengths) if lengths else 0
    if not run.complete:
        run.train = _truncate(run.train, steps)
        run.timing = _truncate(run.timing, steps)
        run.routing = [_truncate(g, steps) for g in run.routing]
        run.comm = [_truncate(g, steps) for g in run.comm]
        evals = min((len(v) for v in run.eval.values()), default=0)
        run.eval = _truncate(run.eval, evals)
        samples = min((len(v) for v in run.samples.values()), default=0)
        run.samples = _truncate(run.samples, samples)
        run.notes.append(f"incomplete run (no /train complete): read {steps} steps and "
                         f"{evals} evaluations up to the last flush")
    elif lengths and max(lengths) != steps:
        run.notes.append(f"per-step series of unequal length ({steps}..{max(lengths)} rows)")
    return run


def _load_capacity(f: h5py.File, common: dict) -> CapacityBench:
    group = f["bench/capacity"]
    bench = CapacityBench(**common)
    bench.complete = _is_complete(group)
    bench.group_attrs = _attrs(group)
    bench.cells = _datasets(group)
    rows = min((len(v) for v in bench.cells.values()), default=0)
    bench.cells = _truncate(bench.cells, rows)
    if not bench.complete:
        bench.notes.append(f"incomplete capacity grid: read {rows} cells up to the last flush")
    return bench


def parse_codes(text: str) -> Dict[int, str]:
    """'0 = alltoallv, 1 = pairwise' -> {0: 'alltoallv', 1: 'pairwise'}."""
    codes = {}
    for part in text.split(","):
        match = re.fullmatch(r"\s*(-?\d+)\s*=\s*(\S.*?)\s*", part)
        if match:
            codes[int(match.group(1))] = match.group(2)
    return codes


def _load_alltoall(f: h5py.File, common: dict) -> AlltoallBench:
    group = f["bench/alltoall"]
    bench = AlltoallBench(**common)
    bench.complete = _is_complete(group)
    bench.group_attrs = _attrs(group)
    bench.rows_data = _datasets(group)
    rows = len(bench.rows_data.get("size_bytes", ()))
    bench.algorithms = parse_codes(_text(bench.group_attrs.get("algorithm_codes", ""))) \
        or dict(ALLTOALL_ALGORITHMS_DEFAULT)
    bench.measured = [a.strip() for a in _text(bench.group_attrs.get("algorithms", "")).split(",")
                      if a.strip()]
    subgroups = {name: item for name, item in group.items() if isinstance(item, h5py.Group)}
    bench.tables = {name: _datasets(item) for name, item in subgroups.items()}
    bench.table_attrs = {name: _attrs(item) for name, item in subgroups.items()}
    if not bench.complete:
        bench.notes.append(f"incomplete alltoall run: read {rows} sweep rows and "
                           f"{bench.routed_cells()} routed cells up to the last flush")
    return bench
