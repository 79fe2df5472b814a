"""Compares the byte matrices replayed by `moebench alltoall --pattern replay` (recorded in its
trace under /bench/alltoall/replay/layer_i/bytes_sent) with the /comm matrices of the training
trace it replayed: equal element for element, for the first STEPS steps.

usage: alltoall_check_replay.py TRAIN_TRACE REPLAY_TRACE RANKS STEPS
"""
import sys

import h5py
import numpy as np


def main():
    train_path, replay_path, ranks, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    with h5py.File(train_path, "r") as train, h5py.File(replay_path, "r") as replay:
        group = replay["bench/alltoall"]
        assert group.attrs["pattern"] == "replay", group.attrs["pattern"]
        assert int(group.attrs["complete"]) == 1
        out = group["replay"]
        layers = sorted((k for k in train["comm"] if k.startswith("layer_")), key=lambda k: int(k[6:]))
        assert layers, "the training trace has no /comm layers"
        assert int(out.attrs["layers"]) == len(layers), (out.attrs["layers"], layers)
        assert int(out.attrs["steps"]) == steps, (out.attrs["steps"], steps)
        wire = np.zeros(steps)
        for name in layers:
            recorded = train["comm"][name]["bytes_sent"][:steps]
            replayed = out[name]["bytes_sent"]
            assert replayed.dtype == np.int64, replayed.dtype
            replayed = replayed[...]
            assert recorded.shape == (steps, ranks, 4, ranks), recorded.shape
            assert replayed.shape == recorded.shape, (replayed.shape, recorded.shape)
            if not np.array_equal(replayed, recorded):
                bad = np.argwhere(replayed != recorded)[0]
                raise SystemExit(f"{name}: first difference at [step, src, phase, dst] = {bad.tolist()}: "
                                 f"replayed {replayed[tuple(bad)]}, recorded {recorded[tuple(bad)]}")
            off_diagonal = recorded.copy()
            for r in range(ranks):
                off_diagonal[:, r, :, r] = 0
            wire += off_diagonal.sum(axis=(1, 2, 3))
            assert recorded.sum() > 0, f"{name}: no traffic recorded, the comparison would be empty"
        assert np.array_equal(out["wire_bytes"][...], wire), (out["wire_bytes"][...], wire)
        if ranks > 1:
            assert wire.min() > 0, "no bytes crossed between ranks"
        assert out["wrong"][...].sum() == 0, out["wrong"][...]
        times = out["time_ms"][...]
        algorithms = group.attrs["algorithms"].split(",")
        assert times.shape == (steps, len(algorithms)), (times.shape, algorithms)
        assert (times > 0).all(), times
    print("replay matrices equal")


if __name__ == "__main__":
    main()
