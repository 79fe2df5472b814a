"""Checks a `moebench alltoall --pattern routed` trace: per cell, the wire bytes and per-rank
max/mean are the off-diagonal sums of the recorded Dispatcher matrix, the combine matrix is the
transpose of the dispatch one, padded bytes are E_local * C * d * 4 to every peer, the overhead
is padded / ragged (>= 1), every algorithm has a time and no element arrived wrong; the CSV
holds one row per cell in router x top-k x CF order (top1: k = 1 only).

usage: alltoall_check_routed.py TRACE RANKS ROUTERS TOP_KS CFS
"""
import csv
import os
import sys

import h5py
import numpy as np

ROUTERS = ["top1", "topk_hard", "softk", "hash", "expert_choice"]


def main():
    path, P = sys.argv[1], int(sys.argv[2])
    routers, ks, cfs = sys.argv[3].split(","), [int(k) for k in sys.argv[4].split(",")], [float(c) for c in sys.argv[5].split(",")]
    cells = [(r, k, cf) for r in routers for k in ([1] if r == "top1" else ks) for cf in cfs]
    with h5py.File(path, "r") as f:
        g = f["bench/alltoall"]
        assert g.attrs["pattern"] == "routed" and int(g.attrs["complete"]) == 1
        r = g["routed"]
        E, d = int(r.attrs["experts"]), int(r.attrs["d_model"])
        padded_mode = r.attrs["dispatch"] == "padded"
        n = len(cells)
        assert r["router"].shape == (n,), (r["router"].shape, n)
        got = [(ROUTERS[int(a)], int(b), float(c)) for a, b, c in zip(r["router"], r["top_k"], r["capacity_factor"])]
        assert got == cells, (got, cells)
        sent = r["bytes_sent"][...]
        assert sent.dtype == np.int64 and sent.shape == (n, P, 2, P), (sent.dtype, sent.shape)
        A = len(g.attrs["algorithms"].split(","))
        assert r["exchange_ms"].shape == (n, A)
        assert (r["exchange_ms"][...] > 0).all()
        off = ~np.eye(P, dtype=bool)
        for c in range(n):
            dispatch, combine = sent[c, :, 0, :], sent[c, :, 1, :]
            assert np.array_equal(combine, dispatch.T), (c, dispatch, combine)
            per_rank = (dispatch * off).sum(axis=1) + (combine * off).sum(axis=1)
            assert r["wire_bytes"][c] == per_rank.sum()
            assert r["rank_bytes_max"][c] == per_rank.max()
            assert np.isclose(r["rank_bytes_mean"][c], per_rank.mean())
            C = int(r["capacity"][c])
            padded_peer = (E // P) * C * d * 4
            assert r["padded_wire_bytes"][c] == padded_peer * P * (P - 1), (c, r["padded_wire_bytes"][c], padded_peer)
            if padded_mode:
                assert (dispatch == padded_peer).all(), (c, dispatch, padded_peer)
            else:
                assert r["ragged_wire_bytes"][c] == (dispatch * off).sum()
                assert (dispatch <= padded_peer).all()
            if P > 1:
                ratio = r["padded_over_ragged"][c]
                assert ratio >= 1.0 and np.isclose(ratio, r["padded_wire_bytes"][c] / r["ragged_wire_bytes"][c]), ratio
            assert r["wrong"][c] == 0
            assert r["dispatch_ms"][c] > 0 and r["combine_ms"][c] > 0
    with open(os.path.splitext(path)[0] + ".csv") as f:
        rows = list(csv.DictReader(f))
    assert [(x["router"], int(x["top_k"])) for x in rows] == [(a, b) for a, b, _ in cells], rows
    print("routed OK")


if __name__ == "__main__":
    main()
