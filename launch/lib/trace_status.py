#!/usr/bin/env python3
"""Prints the state of one moebench trace for the experiment drivers (launch/lib/experiment.bash).

usage: trace_status.py TRACE

Prints one line: `complete COMMAND_LINE` when the trace's run finished (`complete` = 1 on
/train, /bench/capacity or /bench/alltoall) and `incomplete` otherwise (a missing or
unreadable file, a run that died). Exit status 0 either way; 2 for bad usage.
"""
import sys

import h5py
import numpy as np


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    try:
        with h5py.File(argv[1], "r") as f:
            groups = [f[name] for name in ("train", "bench/capacity", "bench/alltoall") if name in f]
            done = any("complete" in g.attrs and int(np.asarray(g.attrs["complete"])) == 1 for g in groups)
            command_line = f.attrs.get("command_line", b"")
            if isinstance(command_line, bytes):
                command_line = command_line.decode("utf-8", "replace")
    except (OSError, KeyError):
        done = False
    print(f"complete {command_line}" if done else "incomplete")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
