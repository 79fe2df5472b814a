"""Checks the data behind the figures of analysis/figures.py (used by tests/cli/figures_run.sh).

usage: figures_check.py RESULTS_DIR FIGURES_DIR [--require NAME,...]

Recomputes, straight from the traces with h5py and without analysis/moetrace.py, the points
each figure's CSV says it plotted, and compares:
  frontier / router_arch_frontier: (final eval perplexity, median tokens/s after warm-up) per
      training run, and the Pareto set (complete runs; lower ppl, higher tokens/s);
  capacity: drop rate and exchange time per (trace, E, k, CF) of /bench/capacity;
  balance: load CV (mean over MoE blocks of the mean over the last quarter of the steps);
  expert_load: mean kept assignments per expert over the same tail, and their shares;
  curves: every training-loss and validation-perplexity point;
  colored_tokens: the expert of every token of the last /samples sequence;
  alltoall_bandwidth: busbw and algbw per (trace, algorithm, size);
  alltoall_cost_per_router: wire bytes, drop rate and exchange times per (trace, router, k, CF)
      of /bench/alltoall/routed.
Definitions follow analysis/README.md. Figures named by --require (default: all of the above)
must have a CSV; the others are checked when their CSV is there. Exits 1 on the first
mismatch, printing it.
"""
import argparse
import csv
import math
import os
import re
import sys

import h5py
import numpy as np

RTOL = 1e-9
ALL = ("frontier", "router_arch_frontier", "capacity", "balance", "expert_load", "curves",
       "colored_tokens", "alltoall_bandwidth", "alltoall_cost_per_router")


class Mismatch(Exception):
    pass


def close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= RTOL * max(1.0, abs(a), abs(b))


def expect_close(what: str, got: float, want: float) -> None:
    if not close(got, want):
        raise Mismatch(f"{what}: CSV has {got!r}, the trace gives {want!r}")


def number(text: str) -> float:
    return math.nan if text == "" else float(text)


def read_csv(directory: str, name: str):
    path = os.path.join(directory, f"{name}.csv")
    if not os.path.exists(path):
        return None
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run_id(path: str, root: str) -> str:
    stem = os.path.relpath(path, root)[:-3]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem)


def traces(root: str, skip: str):
    """(run id, open h5py.File, kind) for every *.h5 under root outside `skip`."""
    found = []
    for directory, _, files in os.walk(root):
        if os.path.abspath(directory).startswith(os.path.abspath(skip)):
            continue
        for name in files:
            if name.endswith(".h5"):
                path = os.path.join(directory, name)
                f = h5py.File(path, "r")
                kind = ("capacity" if "bench/capacity" in f else "alltoall" if "bench/alltoall" in f
                        else "train" if "train" in f else None)
                found.append((run_id(path, root), f, kind))
    return sorted(found, key=lambda t: t[0])


def step_count(f) -> int:
    """Rows of the per-step series the run holds: all of them for a complete run, the common
    length for one without `complete` (series appended after a flush can be a row short)."""
    lengths = []
    for group in ("train", "timing", "routing", "comm"):
        if group in f:
            f[group].visititems(lambda _, o: lengths.append(o.shape[0]) if isinstance(o, h5py.Dataset) else None)
    return min(lengths)


def complete(f) -> bool:
    return int(f["train"].attrs.get("complete", 0)) == 1


def last_eval_ppl(f) -> float:
    ppl = f["eval/ppl"][...]
    value = float(ppl[min(len(ppl), len(f["eval/loss"])) - 1])
    if complete(f):  # the final evaluation is also stored as an attribute
        expect_close("final eval ppl vs exp(/eval final_loss)", value, math.exp(f["eval"].attrs["final_loss"]))
    return value


def median_tokens_per_s(f) -> float:
    tps = f["train/tokens_per_s"][:step_count(f)]
    skip = max(1, int(0.1 * len(tps))) if len(tps) >= 2 else 0
    return float(np.median(tps[skip:]))


def tail(n: int) -> int:
    return max(1, math.ceil(0.25 * n))


def blocks(f):
    names = [k for k in f["routing"] if re.fullmatch(r"layer_\d+", k)]
    return [f["routing"][k] for k in sorted(names, key=lambda k: int(k.split("_")[1]))]


def pareto(points):
    """Set of run ids on the front: sweep by descending tokens/s, keep strictly lower ppl."""
    front, best = set(), math.inf
    for run, ppl, tps in sorted(points, key=lambda p: (-p[2], p[1])):
        if ppl < best:
            front.add(run)
            best = ppl
    return front


# ---- one check per figure -----------------------------------------------------------------------

def check_frontier(name, rows, train):
    by_run = {r["run"]: r for r in rows}
    if sorted(by_run) != sorted(train):
        raise Mismatch(f"{name}: runs {sorted(by_run)}, traces {sorted(train)}")
    points = []
    for run, f in train.items():
        row = by_run[run]
        ppl, tps = last_eval_ppl(f), median_tokens_per_s(f)
        expect_close(f"{name} {run} ppl", number(row["ppl"]), ppl)
        expect_close(f"{name} {run} tokens_per_s", number(row["tokens_per_s"]), tps)
        if int(row["complete"]) != int(complete(f)):
            raise Mismatch(f"{name} {run}: complete {row['complete']}, trace {complete(f)}")
        config = f["config"].attrs
        for column, option in (("router", "router"), ("router_arch", "router-arch"), ("top_k", "top-k")):
            if row[column] != str(config[option]):
                raise Mismatch(f"{name} {run} {column}: {row[column]} vs /config {config[option]}")
        if complete(f):
            points.append((run, ppl, tps))
    want = pareto(points)
    got = {r["run"] for r in rows if int(r["pareto"])}
    if got != want:
        raise Mismatch(f"{name}: Pareto set {sorted(got)}, expected {sorted(want)}")
    return f"{len(rows)} runs, Pareto {sorted(want)}"


def check_capacity(rows, benches):
    cells = {}
    for run, f in benches.items():
        g = f["bench/capacity"]
        for i in range(g["experts"].shape[0]):
            key = (run, int(g["experts"][i]), int(g["top_k"][i]), float(g["capacity_factor"][i]))
            cells[key] = (float(g["drop_rate"][i]), float(g["exchange_ms"][i]))
    if len(rows) != len(cells):
        raise Mismatch(f"capacity: {len(rows)} CSV rows, {len(cells)} cells in the traces")
    for r in rows:
        key = (r["trace"], int(r["experts"]), int(r["top_k"]), float(r["capacity_factor"]))
        if key not in cells:
            raise Mismatch(f"capacity: no cell {key} in the traces")
        expect_close(f"capacity {key} drop_rate", number(r["drop_rate"]), cells[key][0])
        expect_close(f"capacity {key} exchange_ms", number(r["exchange_ms"]), cells[key][1])
    return f"{len(rows)} cells"


def check_balance(rows, train):
    for r in rows:
        f = train[r["run"]]
        n = step_count(f)
        per_block = [float(np.mean(b["load_cv"][n - tail(n):n])) for b in blocks(f)]
        expect_close(f"balance {r['run']} load_cv", number(r["load_cv"]), float(np.mean(per_block)))
        expect_close(f"balance {r['run']} ppl", number(r["ppl"]), last_eval_ppl(f))
    return f"{len(rows)} runs"


def check_expert_load(rows, train):
    expected = 0
    got = {(r["run"], int(r["block"]), int(r["expert"])): r for r in rows}
    for run, f in train.items():
        n = step_count(f)
        for b, group in enumerate(blocks(f)):
            load = group["load"][n - tail(n):n].mean(axis=0)
            for e, value in enumerate(load):
                row = got.get((run, b, e))
                if row is None:
                    raise Mismatch(f"expert_load: no row for {run} block {b} expert {e}")
                expect_close(f"expert_load {run} {b} {e}", number(row["load_assignments_per_step"]), value)
                expect_close(f"expert_load {run} {b} {e} share", number(row["share_percent"]),
                             100.0 * value / load.sum())
                expected += 1
    if expected != len(rows):
        raise Mismatch(f"expert_load: {len(rows)} rows, expected {expected}")
    return f"{len(rows)} bars"


def check_curves(rows, train):
    for run, f in train.items():
        n = step_count(f)
        loss = [r for r in rows if r["run"] == run and r["series"] == "train_loss"]
        ppl = [r for r in rows if r["run"] == run and r["series"] == "eval_ppl"]
        want_loss, want_ppl = f["train/loss"][:n], f["eval/ppl"][:len(f["eval/loss"])]
        if len(loss) != len(want_loss) or len(ppl) != len(want_ppl):
            raise Mismatch(f"curves {run}: {len(loss)} loss / {len(ppl)} ppl points, trace has "
                           f"{len(want_loss)} / {len(want_ppl)}")
        for row, value in zip(loss + ppl, list(want_loss) + list(want_ppl)):
            expect_close(f"curves {run} {row['series']} step {row['step']}", number(row["value"]), float(value))
    return f"{len(rows)} points"


def check_colored_tokens(directory, train):
    for run, f in train.items():
        rows = read_csv(directory, f"colored_tokens_{run}")
        if rows is None:
            raise Mismatch(f"colored_tokens: no colored_tokens_{run}.csv")
        experts, tokens = f["samples/experts"][-1], f["samples/tokens"][-1]
        for r in rows:
            b, t = int(r["block"]), int(r["position"])
            if int(r["expert"]) != experts[b, t] or int(r["token"]) != tokens[t]:
                raise Mismatch(f"colored_tokens {run} block {b} position {t}: {r} vs trace "
                               f"token {tokens[t]} expert {experts[b, t]}")
        if len(rows) != experts.size:
            raise Mismatch(f"colored_tokens {run}: {len(rows)} rows, {experts.size} in the trace")
    return f"{len(train)} runs"


def check_alltoall(rows, benches):
    count = 0
    for run, f in benches.items():
        g = f["bench/alltoall"]
        if "size_bytes" not in g:  # a routed or replay run: no size sweep
            continue
        codes = dict(re.findall(r"(\d+)\s*=\s*(\w+)", str(g.attrs["algorithm_codes"])))
        for i in range(g["size_bytes"].shape[0]):
            algorithm, size = codes[str(int(g["algorithm"][i]))], int(g["size_bytes"][i])
            match = [r for r in rows if (r["trace"], r["algorithm"], int(r["size_bytes"])) == (run, algorithm, size)]
            if len(match) != 1:
                raise Mismatch(f"alltoall_bandwidth: {len(match)} rows for {run} {algorithm} {size}")
            expect_close(f"alltoall {run} {algorithm} {size} busbw", number(match[0]["busbw_GBps"]),
                         float(g["busbw_GBps"][i]))
            expect_close(f"alltoall {run} {algorithm} {size} algbw", number(match[0]["algbw_GBps"]),
                         float(g["algbw_GBps"][i]))
            count += 1
    if count != len(rows):
        raise Mismatch(f"alltoall_bandwidth: {len(rows)} rows, {count} in the traces")
    return f"{count} rows"


def check_cost_per_router(rows, benches):
    count = 0
    for run, f in benches.items():
        if "bench/alltoall/routed" not in f:
            continue
        g = f["bench/alltoall/routed"]
        routers = dict(re.findall(r"(\d+)\s*=\s*(\w+)", str(g.attrs["router_codes"])))
        algorithms = str(f["bench/alltoall"].attrs["algorithms"]).split(",")
        for i in range(g["router"].shape[0]):
            key = (run, routers[str(int(g["router"][i]))], int(g["top_k"][i]), float(g["capacity_factor"][i]))
            match = [r for r in rows if (r["trace"], r["router"], int(r["top_k"]), float(r["capacity_factor"])) == key]
            if len(match) != 1:
                raise Mismatch(f"alltoall_cost_per_router: {len(match)} rows for {key}")
            for column in ("wire_bytes", "drop_rate", "dispatch_ms", "combine_ms"):
                expect_close(f"alltoall_cost_per_router {key} {column}", number(match[0][column]),
                             float(g[column][i]))
            for a, name in enumerate(algorithms):
                expect_close(f"alltoall_cost_per_router {key} {name}_ms", number(match[0][f"{name}_ms"]),
                             float(g["exchange_ms"][i, a]))
            count += 1
    if count != len(rows):
        raise Mismatch(f"alltoall_cost_per_router: {len(rows)} rows, {count} cells in the traces")
    return f"{count} cells"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("results")
    parser.add_argument("figures")
    parser.add_argument("--require", default=",".join(ALL))
    args = parser.parse_args()
    required = [n for n in args.require.split(",") if n]
    found = traces(args.results, args.figures)
    train = {run: f for run, f, kind in found if kind == "train"}
    capacity = {run: f for run, f, kind in found if kind == "capacity"}
    alltoall = {run: f for run, f, kind in found if kind == "alltoall"}
    checks = {
        "frontier": lambda rows: check_frontier("frontier", rows, train),
        "router_arch_frontier": lambda rows: check_frontier("router_arch_frontier", rows, train),
        "capacity": lambda rows: check_capacity(rows, capacity),
        "balance": lambda rows: check_balance(rows, train),
        "expert_load": lambda rows: check_expert_load(rows, train),
        "curves": lambda rows: check_curves(rows, train),
        "colored_tokens": lambda rows: check_colored_tokens(args.figures, train),
        "alltoall_bandwidth": lambda rows: check_alltoall(rows, alltoall),
        "alltoall_cost_per_router": lambda rows: check_cost_per_router(rows, alltoall),
    }
    try:
        for name in required:
            if name not in checks:
                raise Mismatch(f"--require: unknown figure '{name}'")
        for name, check in checks.items():
            if name == "colored_tokens":  # one CSV per run, read by its check
                drawn = any(n.startswith("colored_tokens_") and n.endswith(".csv")
                            for n in os.listdir(args.figures))
                rows = [] if drawn else None
            else:
                rows = read_csv(args.figures, name)
            if rows is None:
                if name in required:
                    raise Mismatch(f"{name}: no {name}.csv in {args.figures}")
                continue
            print(f"{name}: {check(rows)} match the traces")
    except Mismatch as error:
        print(f"MISMATCH: {error}")
        return 1
    print("figures data OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
