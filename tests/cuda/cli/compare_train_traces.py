"""Compares the loss curves of two `moebench train` traces, CPU and CUDA (train_backends.sh).

usage: compare_train_traces.py CPU_TRACE CUDA_TRACE [FIRST_STEP_TOLERANCE CURVE_TOLERANCE]
"""
import sys

import h5py
import numpy as np

FIRST_STEP_TOLERANCE = 1e-4  # the same model and batch: only the order of fp32 sums differs
CURVE_TOLERANCE = 2e-2       # 40 AdamW steps of drift, or a flipped near-tied routing decision


def main(cpu_path, cuda_path, first_tolerance=FIRST_STEP_TOLERANCE,
         curve_tolerance=CURVE_TOLERANCE):
    first_tolerance, curve_tolerance = float(first_tolerance), float(curve_tolerance)
    with h5py.File(cpu_path, "r") as cpu, h5py.File(cuda_path, "r") as cuda:
        assert cpu["train"].attrs["backend"] == "cpu", cpu["train"].attrs["backend"]
        assert cuda["train"].attrs["backend"] == "cuda", cuda["train"].attrs["backend"]
        assert len(cuda["train"].attrs["device"]) > 0, "the CUDA trace names no device"
        want, got = cpu["train/loss"][...], cuda["train/loss"][...]
        assert want.shape == got.shape, (want.shape, got.shape)
        relative = np.abs(got - want) / np.abs(want)
        print(f"loss: first step cpu {want[0]:.6f} cuda {got[0]:.6f} (rel {relative[0]:.2g}); "
              f"last cpu {want[-1]:.4f} cuda {got[-1]:.4f}; max rel diff {relative.max():.2g} "
              f"at step {int(relative.argmax())}")
        assert relative[0] <= first_tolerance, relative[0]
        assert relative.max() <= curve_tolerance, relative.max()
        assert got[-1] < got[0], "the CUDA run's training loss did not fall"
        final_cpu = float(cpu["eval"].attrs["final_loss"])
        final_cuda = float(cuda["eval"].attrs["final_loss"])
        print(f"final validation loss: cpu {final_cpu:.4f} cuda {final_cuda:.4f}")
        assert abs(final_cuda - final_cpu) / final_cpu <= curve_tolerance
    print("loss curves agree")


if __name__ == "__main__":
    main(*sys.argv[1:])
