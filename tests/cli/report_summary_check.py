#!/usr/bin/env python3
"""Checks an experiment driver's summary CSV against the runs it planned.

usage: report_summary_check.py SUMMARY_CSV PLAN [--steps N] [--ranks P]

PLAN holds the driver's --dry-run lines, one moebench command per run (`... train OPTIONS
--out DIR/NAME.h5`). The CSV (moebench analyze) must have exactly one row per planned run, in
the plan's order (the driver passes the traces to analyze in that order), each naming the
trace NAME.h5, complete, with the run's --router, --top-k and --capacity-factor, and with N
steps and P ranks when given. Prints `summary OK: N rows`, or one `MISMATCH: ...` line per
problem and exits 1.
"""
import argparse
import csv
import os
import shlex
import sys


def planned_runs(path):
    runs = []
    for line in open(path):
        words = shlex.split(line)
        if "--out" not in words:
            continue
        options = {}
        for i, word in enumerate(words):
            if word.startswith("--") and i + 1 < len(words) and not words[i + 1].startswith("--"):
                options[word[2:]] = words[i + 1]
        runs.append(options)
    return runs


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("summary")
    parser.add_argument("plan")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--ranks", type=int)
    args = parser.parse_args()
    rows = list(csv.DictReader(open(args.summary, newline="")))
    runs = planned_runs(args.plan)
    problems = []
    if not runs:
        problems.append(f"no run in the plan {args.plan}")
    if len(rows) != len(runs):
        problems.append(f"{len(rows)} CSV rows for {len(runs)} planned runs")
    for row, run in zip(rows, runs):
        name = os.path.basename(run["out"])
        where = f"row of {row.get('file')}"
        if os.path.basename(row.get("file", "")) != name:
            problems.append(f"{where}: expected the trace {name} (plan order)")
        expected = {"command": "train", "complete": "1", "router": run.get("router"),
                    "top_k": run.get("top-k")}
        if args.steps is not None:
            expected["steps"] = str(args.steps)
        if args.ranks is not None:
            expected["ranks"] = str(args.ranks)
        for column, value in expected.items():
            if value is not None and row.get(column) != value:
                problems.append(f"{where}: {column} = {row.get(column)!r}, expected {value!r}")
        if "capacity-factor" in run and float(row["capacity_factor"]) != float(run["capacity-factor"]):
            problems.append(f"{where}: capacity_factor = {row['capacity_factor']}, expected {run['capacity-factor']}")
        for column in ("ppl", "bpb", "tokens_per_s", "load_cv"):
            try:
                if not float(row[column]) > 0:
                    problems.append(f"{where}: {column} = {row[column]} is not positive")
            except (KeyError, ValueError):
                problems.append(f"{where}: {column} = {row.get(column)!r} is not a number")
    for problem in problems:
        print(f"MISMATCH: {problem}")
    if problems:
        return 1
    print(f"summary OK: {len(rows)} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
