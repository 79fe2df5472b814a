"""Makes the damaged and foreign fixtures of tests/cli/analyze_run.sh from real traces (h5py).

usage: analyze_fixtures.py TRAIN.h5 CAPACITY.h5 ALLTOALL.h5 ROUTED.h5 OUTDIR
Writes into OUTDIR:
  trunc.h5      TRAIN as a run that died while flushing: no `complete`, no final eval
                attributes, /train series 4 rows, layer_1's /routing and /comm series 3 rows
                (so 3 complete steps); /eval left as it is
  cap_trunc.h5  CAPACITY with 5 cells and no `complete`
  a2a_extra.h5  ALLTOALL with datasets analyze does not know: a group and a top-level
                series of another length
  routed_trunc.h5 ROUTED (alltoall --pattern routed, 5 cells) as a run that died while
                flushing: no `complete`, its /bench/alltoall/routed series 4 rows but
                wire_bytes 3 (so 3 complete cells)
  v999.h5       TRAIN with schema_version 999
  foreign.h5    an HDF5 file without moebench's root attributes
  notes.txt     a text file
"""
import shutil
import sys

import h5py
import numpy as np


def resize_series(group, rows):
    for dataset in group.values():
        if isinstance(dataset, h5py.Dataset):
            dataset.resize(rows, axis=0)


def main() -> int:
    train, capacity, alltoall, routed, out = sys.argv[1:6]

    shutil.copy(train, f"{out}/trunc.h5")
    with h5py.File(f"{out}/trunc.h5", "r+") as f:
        del f["train"].attrs["complete"]
        del f["eval"].attrs["final_loss"]
        del f["eval"].attrs["final_bpb"]
        resize_series(f["train"], 4)
        for layer in f["routing"]:
            resize_series(f["routing"][layer], 4 if layer != "layer_1" else 3)
            resize_series(f["comm"][layer], 4 if layer != "layer_1" else 3)

    shutil.copy(capacity, f"{out}/cap_trunc.h5")
    with h5py.File(f"{out}/cap_trunc.h5", "r+") as f:
        group = f["bench/capacity"]
        del group.attrs["complete"]
        resize_series(group, 5)

    shutil.copy(alltoall, f"{out}/a2a_extra.h5")
    with h5py.File(f"{out}/a2a_extra.h5", "r+") as f:
        f["bench/alltoall/future_table/alpha_us"] = np.array([1.5, 2.5, 3.5])
        f["bench/alltoall/future_series"] = np.zeros(4)

    shutil.copy(routed, f"{out}/routed_trunc.h5")
    with h5py.File(f"{out}/routed_trunc.h5", "r+") as f:
        del f["bench/alltoall"].attrs["complete"]
        group = f["bench/alltoall/routed"]
        assert group["router"].shape[0] == 5, group["router"].shape
        resize_series(group, 4)
        group["wire_bytes"].resize(3, axis=0)

    shutil.copy(train, f"{out}/v999.h5")
    with h5py.File(f"{out}/v999.h5", "r+") as f:
        f.attrs["schema_version"] = np.int32(999)

    with h5py.File(f"{out}/foreign.h5", "w") as f:
        f.attrs["title"] = "measurements from another tool"
        f["values"] = np.arange(10.0)

    with open(f"{out}/notes.txt", "w") as f:
        f.write("step,loss\n0,5.5\n")
    print("fixtures written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
