"""Checks the output of `moebench analyze` against the traces it read (tests/cli/analyze_run.sh).

usage: analyze_check.py CSV MARKDOWN WINDOW COUNTS TRACE...
  COUNTS: expected rows per kind, e.g. "train=2,capacity=8,alltoall=9"

Recomputes every row from the traces with h5py and numpy, following docs/analyze.md, and
asserts that the CSV holds exactly those rows (in the order of the traces, same columns, text
equal, numbers equal to 1e-9 relative), that the row counts are COUNTS, and that the Markdown
has one table per kind, with exactly the columns the CSV fills in one of that kind's rows, whose
cells agree with the CSV (rounded to the Markdown's digits).
"""
import csv
import math
import sys

import h5py
import numpy as np

COLUMNS = [
    # DESIGN §1
    "command", "router", "router_arch", "top_k", "experts", "capacity_factor", "ranks", "steps",
    "ppl", "bpb", "tokens_per_s", "drop_rate", "token_drop_rate", "load_cv", "gate_entropy",
    "router_entropy", "mean_topk_prob", "router_params", "a2a_bytes_per_step", "a2a_ms_per_step",
    # extra
    "max_load_ratio", "dispatch", "balance", "eval_step", "capacity", "pattern", "algorithm",
    "size_bytes", "algbw_GBps", "busbw_GBps", "rank_bytes_max", "padded_over_ragged", "wrong",
    "complete", "file",
]
LAYER_METRICS = ["drop_rate", "token_drop_rate", "load_cv", "max_load_ratio", "gate_entropy",
                 "router_entropy", "mean_topk_prob"]
# docs/trace-schema.md
ALGORITHMS = {0: "alltoallv", 1: "pairwise", 2: "hierarchical"}
ROUTERS = {0: "top1", 1: "topk_hard", 2: "softk", 3: "hash", 4: "expert_choice"}


def text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def nanmean(values):
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else None


def common(f, path, group):
    return {"command": text(f.attrs["command"]), "ranks": int(f.attrs["world_size"]), "file": path,
            "complete": 1 if int(f[group].attrs.get("complete", 0)) == 1 else 0}


def router_params(config, layers):
    d, h, E = int(config["d-model"]), int(config["router-hidden"]), int(config["experts"])
    per_layer = {"linear": d * E, "mlp": d * h + h * E, "mlp_hadamard": 2 * d * h + h * E}
    return 0 if config["router"] == "hash" else layers * per_layer[config["router-arch"]]


def train_rows(f, path, window):
    config = {name: text(value) for name, value in f["config"].attrs.items()}
    layers = 0
    while f"routing/layer_{layers}" in f:
        layers += 1
    series = ["train/step", "train/tokens_per_s", "train/ms_per_step"]
    for l in range(layers):
        series += [f"routing/layer_{l}/{m}" for m in LAYER_METRICS]
        series += [f"comm/layer_{l}/bytes_sent", f"comm/layer_{l}/exchange_ms"]
    n = min(f[s].shape[0] for s in series)
    step = f["train/step"][:n]
    broken = np.nonzero(step != step[0] + np.arange(n))[0] if n else []
    if len(broken):
        n = int(broken[0])
    reached = float(step[n - 1] + 1) if n else None
    balance = config["balance"]
    if balance == "auto":
        balance = "aux" if config["router"] in ("top1", "topk_hard", "softk") else "none"
    row = common(f, path, "train")
    row.update(router=config["router"], router_arch=config["router-arch"],
               top_k=float(config["top-k"]), experts=float(config["experts"]),
               capacity_factor=float(config["capacity-factor"]), dispatch=config["dispatch"],
               balance=balance, router_params=router_params(config, layers), steps=reached)
    evals = min(f[f"eval/{name}"].shape[0] for name in ("step", "ppl", "bpb"))
    eval_step = f["eval/step"][:evals]
    done = [j for j in range(evals) if reached is not None and eval_step[j] <= reached]
    if done:
        j = done[-1]
        row.update(eval_step=float(eval_step[j]), ppl=float(f["eval/ppl"][j]), bpb=float(f["eval/bpb"][j]))
    count = n if n <= 1 else min(window, n - 1)
    w = slice(n - count, n)
    tps, ms = f["train/tokens_per_s"][w], f["train/ms_per_step"][w]
    row["tokens_per_s"] = float((tps * ms).sum() / ms.sum()) if count else None
    if layers and count:
        bytes_per_step = sum(f[f"comm/layer_{l}/bytes_sent"][w].astype(float).reshape(count, -1).sum(axis=1)
                             for l in range(layers))
        # [steps, P, phases]: slowest rank per phase, summed over phases and layers
        ms_per_step = sum(f[f"comm/layer_{l}/exchange_ms"][w].max(axis=1).sum(axis=1) for l in range(layers))
        row.update(a2a_bytes_per_step=float(bytes_per_step.mean()), a2a_ms_per_step=float(ms_per_step.mean()))
    for metric in LAYER_METRICS:
        row[metric] = nanmean(np.concatenate([f[f"routing/layer_{l}/{metric}"][w] for l in range(layers)])
                              if layers else [])
    return [row]


def capacity_rows(f, path):
    g = f["bench/capacity"]
    copied = ["experts", "top_k", "capacity_factor", "capacity", "drop_rate", "token_drop_rate",
              "load_cv", "max_load_ratio", "gate_entropy", "router_entropy", "mean_topk_prob", "wrong"]
    n = min(g[name].shape[0] for name in copied + ["exchange_ms", "bytes_sent"])
    rows = []
    for c in range(n):
        row = common(f, path, "bench/capacity")
        row.update(router=text(g.attrs["router"]), dispatch=text(g.attrs["dispatch"]))
        row.update({name: float(g[name][c]) for name in copied})
        row.update(a2a_bytes_per_step=float(g["bytes_sent"][c].sum()), a2a_ms_per_step=float(g["exchange_ms"][c]))
        rows.append(row)
    return rows


def alltoall_rows(f, path):
    """The size sweep (uniform), then the cost-per-router table (routed); other tables: none."""
    return size_sweep_rows(f, path) + routed_rows(f, path)


def size_sweep_rows(f, path):
    g = f["bench/alltoall"]
    names = ["size_bytes", "algorithm", "time_max_us", "algbw_GBps", "busbw_GBps", "wrong"]
    if "size_bytes" not in g:
        return []
    n = min(g[name].shape[0] for name in names)
    rows = []
    for i in range(n):
        row = common(f, path, "bench/alltoall")
        row.update(pattern=text(g.attrs["pattern"]), algorithm=ALGORITHMS[int(g["algorithm"][i])],
                   size_bytes=float(g["size_bytes"][i]), algbw_GBps=float(g["algbw_GBps"][i]),
                   busbw_GBps=float(g["busbw_GBps"][i]), wrong=float(g["wrong"][i]),
                   a2a_bytes_per_step=float(g["size_bytes"][i]) * row["ranks"],
                   a2a_ms_per_step=float(g["time_max_us"][i]) / 1e3)
        rows.append(row)
    return rows


def routed_rows(f, path):
    """One row per cell of /bench/alltoall/routed; the bytes recomputed from bytes_sent."""
    if "bench/alltoall/routed/router" not in f:
        return []
    g = f["bench/alltoall/routed"]
    copied = ["top_k", "capacity_factor", "capacity", "drop_rate", "rank_bytes_max",
              "padded_over_ragged", "wrong"]
    names = copied + ["router", "wire_bytes", "dispatch_ms", "combine_ms"]
    n = min(g[name].shape[0] for name in names)
    codes = text(g.attrs["router_codes"])
    assert codes == ", ".join(f"{k} = {v}" for k, v in ROUTERS.items()), codes
    P = int(f.attrs["world_size"])
    rows = []
    for c in range(n):
        # [P, 2, P]: src, phase (dispatch_forward, combine_forward), dst; the diagonal is the
        # local copy, not on the wire
        sent = g["bytes_sent"][c].astype(float)
        off_diagonal = sent.sum(axis=1) * (1 - np.eye(P))  # [src, dst]
        wire, rank_max = float(off_diagonal.sum()), float(off_diagonal.sum(axis=1).max())
        assert wire == float(g["wire_bytes"][c]), (path, c, wire, g["wire_bytes"][c])
        assert rank_max == float(g["rank_bytes_max"][c]), (path, c, rank_max, g["rank_bytes_max"][c])
        row = common(f, path, "bench/alltoall")
        row.update(pattern=text(f["bench/alltoall"].attrs["pattern"]), router=ROUTERS[int(g["router"][c])],
                   experts=float(g.attrs["experts"]), dispatch=text(g.attrs["dispatch"]))
        row.update({name: float(g[name][c]) for name in copied})
        ragged, padded = float(g["ragged_wire_bytes"][c]), float(g["padded_wire_bytes"][c])
        row.update(padded_over_ragged=padded / ragged if ragged > 0 else None)
        row.update(a2a_bytes_per_step=wire,
                   a2a_ms_per_step=float(g["dispatch_ms"][c]) + float(g["combine_ms"][c]))
        rows.append(row)
    return rows


def expected_rows(paths, window):
    rows = []
    for path in paths:
        with h5py.File(path, "r") as f:
            command = text(f.attrs["command"])
            if command == "train":
                rows += train_rows(f, path, window)
            elif command == "capacity":
                rows += capacity_rows(f, path)
            else:
                rows += alltoall_rows(f, path)
    return rows


def same(cell, want):
    if want is None or (isinstance(want, float) and math.isnan(want)):
        return cell == ""
    if isinstance(want, str):
        return cell == want
    return cell != "" and abs(float(cell) - want) <= 1e-9 * abs(want) + 1e-12


def markdown_tables(path):
    """{kind: (header, rows)} from '## kind (...)' sections of '| a | b |' tables."""
    tables, kind = {}, None
    for line in open(path):
        line = line.rstrip("\n")
        if line.startswith("## "):
            kind = line[3:].split(" ")[0]
            tables[kind] = (None, [])
        elif line.startswith("|") and kind is not None:
            cells = [c.strip().replace("\\|", "|") for c in line.replace("\\|", "\0").strip("|").split("|")]
            cells = [c.replace("\0", "|") for c in cells]
            header, rows = tables[kind]
            if header is None:
                tables[kind] = (cells, rows)
            elif not all(set(c) <= set("-:") for c in cells):
                rows.append(cells)
    return tables


def main() -> int:
    csv_path, markdown_path, window, counts, *traces = sys.argv[1:]
    window = int(window)
    want_counts = {k: int(v) for k, v in (item.split("=") for item in counts.split(","))}
    with open(csv_path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        got = [dict(zip(header, row)) for row in reader]
    assert header == COLUMNS, f"CSV columns {header}"
    want = expected_rows(traces, window)
    assert len(got) == len(want), f"{len(got)} CSV rows, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        for column in COLUMNS:
            assert same(g[column], w.get(column)), f"row {i} ({w['file']}) {column}: CSV '{g[column]}', expected {w.get(column)}"
    have_counts = {}
    for row in got:
        have_counts[row["command"]] = have_counts.get(row["command"], 0) + 1
    assert have_counts == want_counts, f"rows per kind {have_counts}, expected {want_counts}"

    tables = markdown_tables(markdown_path)
    assert list(tables) == [k for k in ("train", "capacity", "alltoall") if k in want_counts], list(tables)
    for kind, (md_header, md_rows) in tables.items():
        csv_rows = [row for row in got if row["command"] == kind]
        assert len(md_rows) == len(csv_rows), f"{kind}: {len(md_rows)} Markdown rows, {len(csv_rows)} in the CSV"
        # the columns, in CSV order, that the CSV fills in at least one row of this kind
        filled = [c for c in COLUMNS if any(row[c] != "" for row in csv_rows)]
        assert md_header == filled, f"{kind}: Markdown columns {md_header}, expected {filled}"
        for md, row in zip(md_rows, csv_rows):
            assert len(md) == len(md_header), md
            for column, cell in zip(md_header, md):
                if row[column] == "" or cell == "":
                    assert cell == row[column], f"{kind} {column}: Markdown '{cell}', CSV '{row[column]}'"
                    continue
                try:
                    value = float(row[column])
                except ValueError:
                    assert cell == row[column], f"{kind} {column}: Markdown '{cell}', CSV '{row[column]}'"
                    continue
                digits = len(cell.split(".")[1]) if "." in cell else 0
                assert abs(float(cell) - value) <= 0.5 * 10 ** -digits * (1 + 1e-9) + 1e-12 * abs(value), \
                    f"{kind} {column}: Markdown '{cell}', CSV '{row[column]}'"
    print(f"analyze rows OK: {have_counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
