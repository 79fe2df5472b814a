"""Checks a `moebench capacity` trace and its CSV (used by tests/cli/capacity_run.sh).

usage: check_capacity_trace.py TRACE.h5 CSV RANKS CELLS
Asserts the schema (root attributes, /config, /bench/capacity shapes), that every grid cell
delivered every token correctly, that dropless cells drop nothing and that the drop rate never
rises with the capacity factor, and that the CSV holds the same values as the trace.
"""
import csv
import sys

import h5py
import numpy as np


def main() -> int:
    trace_path, csv_path, ranks, cells = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    with h5py.File(trace_path, "r") as f:
        root = f.attrs
        assert int(root["schema_version"]) == 1, root["schema_version"]
        assert root["command"] in ("capacity", b"capacity"), root["command"]
        assert int(root["world_size"]) == ranks
        assert len(root["hostnames"]) == ranks
        assert "moebench capacity" in str(root["command_line"])
        assert "experts" in f["config"].attrs
        bench = f["bench/capacity"]
        assert int(bench.attrs["complete"]) == 1
        columns = {name: bench[name][...] for name in bench if bench[name].ndim == 1}
        for name, values in columns.items():
            assert values.shape == (cells,), (name, values.shape)
        assert bench["bytes_sent"].shape == (cells, ranks, ranks), bench["bytes_sent"].shape
        assert bench["exchange_ms_per_rank"].shape == (cells, ranks)
        assert np.all(columns["wrong"] == 0), columns["wrong"]
        dropless = columns["capacity_factor"] == 0
        assert np.all(columns["drop_rate"][dropless] == 0)
        # For fixed (E, k), more capacity never drops more.
        for e in np.unique(columns["experts"]):
            for k in np.unique(columns["top_k"]):
                cell = (columns["experts"] == e) & (columns["top_k"] == k) & ~dropless
                order = np.argsort(columns["capacity_factor"][cell])
                drops = columns["drop_rate"][cell][order]
                assert np.all(np.diff(drops) <= 1e-12), (e, k, drops)
        # Per-rank bytes add up to the mean the table reports.
        sent = bench["bytes_sent"][...].sum(axis=2)
        assert np.allclose(sent.mean(axis=1), columns["bytes_per_rank_mean"]), "bytes mismatch"
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == cells, len(rows)
    for i, row in enumerate(rows):
        for name in ("experts", "top_k", "capacity"):
            assert float(row[name]) == columns[name][i], (name, i)
        for name in ("drop_rate", "token_drop_rate", "load_cv"):
            assert abs(float(row[name]) - columns[name][i]) <= 1e-8, (name, i)
    print(f"trace OK: {cells} cells, {ranks} ranks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
