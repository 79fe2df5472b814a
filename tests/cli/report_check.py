#!/usr/bin/env python3
"""Checks analysis/report.py's report against the traces, the analyze CSV and the figures.

usage: report_check.py RESULTS_DIR [--report FILE] [--summary CSV] [--figures DIR]
       report_check.py --tamper CASE REPORT_IN REPORT_OUT

Checks (each failure is one `MISMATCH: ...` line, exit status 1; all good: `report OK`):
  - every trace under RESULTS_DIR (outside the figures and summary folders) is linked from the
    report by its path, has its source anchor `src-<run>` (run = path relative to RESULTS_DIR
    without .h5, other characters than [A-Za-z0-9._-] as _), and its `command_line` root
    attribute (read here with h5py) appears verbatim in a code block;
  - every file in the figures folder is linked from the report, and every image the report
    shows exists;
  - the summary tables (header `| # | run | ...`): every row's `#` is a line of the analyze CSV,
    its `run` links to the anchor of that line's trace, and every other column equals the CSV
    field: `–` where the field is empty, the same text for words, and for numbers the CSV value
    rounded to the digits the report prints (|report − csv| <= half a unit of its last digit);
    every CSV row appears in the tables;
  - report.html exists beside the report and shows the same images and command lines.

--tamper writes a damaged copy of a report for the test of this checker: CASE is `number` (one
number of a summary table changed in its last printed digit), `figure` (the links to one
figure file removed) or `trace` (one trace's source section and links removed).
"""
import argparse
import csv
import html
import os
import re
import sys
from decimal import Decimal, InvalidOperation

import h5py

EMPTY = "–"
LINK = re.compile(r"\]\(([^)\s]+)\)")


def run_id(path, root):
    stem = os.path.relpath(path, root)
    stem = stem[:-3] if stem.endswith(".h5") else stem
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem)


def find_traces(root, skip):
    found = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if os.path.join(directory, d) not in skip)
        found += [os.path.join(directory, f) for f in sorted(files) if f.endswith(".h5")]
    return found


def tables(text):
    """Markdown tables as lists of rows (lists of cells), header first, separator dropped."""
    result, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append([c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
        elif current:
            result.append([current[0]] + current[2:])
            current = []
    return result


def code_blocks(text):
    return re.findall(r"^```+\n(.*?)\n```+$", text, flags=re.S | re.M)


def precision(text):
    """Half a unit of the last printed digit of a number printed by the report."""
    exponent = Decimal(text).as_tuple().exponent
    return 0.5 * 10.0 ** exponent


def same_value(shown, field):
    if field.strip() == "":
        return shown == EMPTY
    try:
        value = float(field)
    except ValueError:
        return shown == field.strip()
    try:
        printed = float(shown)
        tolerance = precision(shown)
    except (ValueError, InvalidOperation):
        return False
    return abs(printed - value) <= tolerance * (1 + 1e-9) + 1e-12


class Checker:
    def __init__(self):
        self.problems = []

    def fail(self, message):
        self.problems.append(message)
        print(f"MISMATCH: {message}")


def check(args):
    root = args.results
    report_path = args.report or os.path.join(root, "report.md")
    summary_path = args.summary or os.path.join(root, "summary", "summary.csv")
    figures_dir = args.figures or os.path.join(root, "figures")
    c = Checker()
    text = open(report_path, encoding="utf-8").read()
    links = set(LINK.findall(text))
    blocks = code_blocks(text)

    # -- traces --------------------------------------------------------------------------------
    traces = find_traces(root, {figures_dir.rstrip("/"), os.path.join(root, "summary")})
    if not traces:
        c.fail(f"no trace under {root}")
    for trace in traces:
        rel = os.path.relpath(trace, root).replace(os.sep, "/")
        rid = run_id(trace, root)
        if rel not in links:
            c.fail(f"trace {rel}: no link to it")
        if f'<a id="src-{rid}"></a>' not in text:
            c.fail(f"trace {rel}: no source anchor src-{rid}")
        with h5py.File(trace, "r") as f:
            command_line = f.attrs["command_line"]
        command_line = command_line.decode() if isinstance(command_line, bytes) else str(command_line)
        if command_line not in blocks:
            c.fail(f"trace {rel}: its command line is not in a code block: {command_line}")

    # -- figures -------------------------------------------------------------------------------
    fig_rel = os.path.relpath(figures_dir, root).replace(os.sep, "/")
    files = sorted(os.listdir(figures_dir)) if os.path.isdir(figures_dir) else []
    if not files:
        c.fail(f"no figure files in {figures_dir}")
    for name in files:
        if f"{fig_rel}/{name}" not in links:
            c.fail(f"figure file {fig_rel}/{name}: not linked from the report")
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text)
    for image in images:
        if not os.path.isfile(os.path.join(root, image)):
            c.fail(f"image {image}: no such file")
    if not any(i.endswith(".png") for i in images):
        c.fail("the report shows no PNG figure")

    # -- summary tables ------------------------------------------------------------------------
    with open(summary_path, newline="") as f:
        rows = list(csv.DictReader(f))
    seen = set()
    summary_tables = [t for t in tables(text) if t[0][:2] == ["#", "run"]]
    if not summary_tables:
        c.fail("no summary table (header | # | run | ...)")
    for table in summary_tables:
        header = table[0]
        for cells in table[1:]:
            line = int(cells[0])
            if not 2 <= line <= len(rows) + 1:
                c.fail(f"summary row # {line}: no such line in {summary_path}")
                continue
            row = rows[line - 2]
            seen.add(line)
            trace = row["file"] if os.path.isabs(row["file"]) else os.path.join(root, row["file"])
            expected = f"(#src-{run_id(trace, root)})"
            if expected not in cells[1]:
                c.fail(f"summary row # {line}: run cell {cells[1]} does not link {expected}")
            for column, shown in zip(header[2:], cells[2:]):
                if column not in row:
                    c.fail(f"summary row # {line}: column {column} is not in the CSV")
                elif not same_value(shown, row[column]):
                    c.fail(f"summary row # {line}, {column}: report {shown!r}, CSV {row[column]!r}")
    for line in range(2, len(rows) + 2):
        if line not in seen:
            c.fail(f"CSV line {line} ({rows[line - 2].get('file')}) is in no summary table")

    # -- HTML ----------------------------------------------------------------------------------
    html_path = os.path.splitext(report_path)[0] + ".html"
    if not os.path.isfile(html_path):
        c.fail(f"{html_path}: missing")
    else:
        page = open(html_path, encoding="utf-8").read()
        for image in images:
            if f'src="{html.escape(image)}"' not in page:
                c.fail(f"report.html does not show {image}")
        for trace in traces:
            with h5py.File(trace, "r") as f:
                command_line = str(f.attrs["command_line"])
            if html.escape(command_line) not in page:
                c.fail(f"report.html lacks the command line of {trace}")
        if page.count("<tr>") < sum(len(t) for t in summary_tables):
            c.fail("report.html has fewer table rows than report.md's summary tables")

    if c.problems:
        print(f"{len(c.problems)} problems")
        return 1
    print(f"report OK: {len(traces)} traces, {len(files)} figure files, {len(rows)} summary rows "
          f"in {len(summary_tables)} tables")
    return 0


def tamper(case, source, target):
    text = open(source, encoding="utf-8").read()
    lines = text.splitlines(keepends=True)
    if case == "number":
        for i, line in enumerate(lines):
            cells = line.split(" | ")
            if not (line.startswith("| ") and len(cells) > 3 and re.fullmatch(r"\d+", cells[0][2:])):
                continue
            for j in range(len(cells) - 1, 1, -1):
                match = re.fullmatch(r"(-?\d+)(\.\d+)?", cells[j].strip())
                if match and "." in cells[j]:
                    last = int(cells[j].strip()[-1])
                    cells[j] = cells[j].strip()[:-1] + str((last + 3) % 10)
                    lines[i] = " | ".join(cells)
                    break
            else:
                continue
            break
        else:
            sys.exit("tamper: no number to change")
        text = "".join(lines)
    elif case == "figure":
        name = next(m for m in LINK.findall(text) if m.startswith("figures/") and m.endswith(".csv"))
        text = re.sub(r"\[[^\]]*\]\(" + re.escape(name) + r"\)", "(removed)", text)
    elif case == "trace":
        anchor = re.search(r'<a id="src-([^"]+)"></a>', text).group(1)
        start = text.index(f'### <a id="src-{anchor}"></a>')
        end = text.find("\n### ", start + 1)
        text = text[:start] + (text[end + 1:] if end >= 0 else "")
        text = re.sub(r"\[[^\]]*\]\([^)]*" + re.escape(anchor) + r"(\.h5)?\)", anchor, text)
    else:
        sys.exit(f"tamper: unknown case {case}")
    with open(target, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"tampered: {case}")
    return 0


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--tamper":
        return tamper(*sys.argv[2:])
    parser = argparse.ArgumentParser()
    parser.add_argument("results")
    parser.add_argument("--report")
    parser.add_argument("--summary")
    parser.add_argument("--figures")
    return check(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
