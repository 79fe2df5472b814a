"""Asserts two capacity traces hold bitwise-identical results, timings and rates aside.

usage: compare_capacity_traces.py A.h5 B.h5
"""
import sys

import h5py

TIMED = ("_ms", "_ms_per_rank", "_per_s")


def main() -> int:
    with h5py.File(sys.argv[1], "r") as a, h5py.File(sys.argv[2], "r") as b:
        names = [n for n in a["bench/capacity"] if not n.endswith(TIMED)]
        assert len(names) >= 15, names
        for name in names:
            x, y = a["bench/capacity"][name][...], b["bench/capacity"][name][...]
            assert x.tobytes() == y.tobytes(), f"{name} differs"
    print(f"identical datasets: {len(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
