"""Checks the alpha-beta fit and the --predict model table of a `moebench alltoall` uniform
sweep against an independent numpy computation from the sweep's own rows:
  - the fit (exchange_latency_us, exchange_GBps) is the relative-residual least-squares line of
    time_max on size (with a, b >= 0), and the per-message alpha / bandwidth follow from the
    algorithm's message shape at the measuring run's nodes;
  - every predicted time is the documented formula evaluated with the link parameters in its
    row, and those are the fitted ones except where --inter-bw replaced them.

usage: alltoall_check_sweep.py TRACE RANKS INTER_BW_GBPS
"""
import csv
import os
import sys

import h5py
import numpy as np

np.seterr(divide="ignore")

LABELS = ["alltoallv", "pairwise", "hierarchical", "raw"]


def fit(x, y):
    w = 1.0 / y**2
    xm, ym = (w * x).sum() / w.sum(), (w * y).sum() / w.sum()
    b = (w * (x - xm) * (y - ym)).sum() / (w * (x - xm) ** 2).sum()
    a = ym - b * xm
    if a < 0 or b < 0:
        b0 = max(0.0, (w * x * y).sum() / (w * x * x).sum())
        a0 = max(0.0, ym)
        r_b = (w * (y - b0 * x) ** 2).sum()
        r_a = (w * (y - a0) ** 2).sum()
        a, b = (0.0, b0) if r_b <= r_a else (a0, 0.0)
    return a, b


def shape(code, P, L, size):
    """(intra messages, intra bytes, inter messages, inter bytes) of docs/alltoall.md."""
    N, m = P // L, size / P
    if LABELS[code] == "hierarchical":
        return L - 1, N * m, N - 1, L * m
    return L - 1, m, P - L, m


def close(a, b, rel=1e-6):
    if np.isinf(a) or np.isinf(b):  # a slope fixed at 0 (noise) is an infinite bandwidth
        return a == b
    return abs(a - b) <= rel * max(abs(a), abs(b)) + 1e-12


def main():
    path, P, inter_bw = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    with h5py.File(path, "r") as f:
        g = f["bench/alltoall"]
        L_measured = int(g.attrs["ranks_per_node"])
        sizes, codes, tmax = g["size_bytes"][...], g["algorithm"][...].astype(int), g["time_max_us"][...]
        fitted = {}
        fg = g["fit"]
        fit_codes = fg["algorithm"][...].astype(int)
        algorithms = [LABELS.index(a) for a in g.attrs["algorithms"].split(",")]
        assert list(fit_codes) == algorithms, (fit_codes, algorithms)
        for i, code in enumerate(fit_codes):
            x, y = sizes[codes == code], tmax[codes == code] * 1e-6
            a, b = fit(x, y)
            assert close(fg["exchange_latency_us"][i], a * 1e6, 1e-6), (LABELS[code], fg["exchange_latency_us"][i], a * 1e6)
            assert close(fg["exchange_GBps"][i], np.float64(1e-9) / b, 1e-6), (LABELS[code], fg["exchange_GBps"][i], b)
            n1, b1, n2, b2 = shape(code, P, L_measured, 1.0)
            alpha, beta = a / (n1 + n2), b / (n1 * b1 + n2 * b2)
            assert close(fg["alpha_us"][i], alpha * 1e6), (LABELS[code], fg["alpha_us"][i], alpha * 1e6)
            assert close(fg["bandwidth_GBps"][i], np.float64(1e-9) / beta), (LABELS[code], fg["bandwidth_GBps"][i])
            assert int(fg["points"][i]) == len(x)
            fitted[code] = (alpha, beta)
        pg = g["predict"]
        assert "MODEL" in pg.attrs["model"]
        rows = len(pg["time_us"])
        assert rows > 0
        for i in range(rows):
            code, Pp, L = int(pg["algorithm"][i]), int(pg["ranks"][i]), int(pg["ranks_per_node"][i])
            alpha, beta = fitted[code]
            assert close(pg["intra_alpha_us"][i], alpha * 1e6) and close(pg["inter_alpha_us"][i], alpha * 1e6)
            assert close(pg["intra_bandwidth_GBps"][i], np.float64(1e-9) / beta)
            assert close(pg["inter_bandwidth_GBps"][i], inter_bw)
            n1, b1, n2, b2 = shape(code, Pp, L, pg["size_bytes"][i])
            t = n1 * (alpha + b1 * beta) + n2 * (alpha + b2 / (inter_bw * 1e9))
            assert close(pg["time_us"][i], t * 1e6), (i, pg["time_us"][i], t * 1e6)
            assert int(pg["nodes"][i]) * L == Pp
    base = os.path.splitext(path)[0]
    with open(base + "_fit.csv") as f:
        assert len(list(csv.DictReader(f))) == len(algorithms)
    with open(base + "_predict.csv") as f:
        assert len(list(csv.DictReader(f))) == rows
    print("fit and model OK")


if __name__ == "__main__":
    main()
