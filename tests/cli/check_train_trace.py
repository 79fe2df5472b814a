"""Checks a `moebench train` trace (used by tests/cli/train_run.sh).

usage: check_train_trace.py TRACE.h5 RANKS STEPS MOE_BLOCKS EXPERTS [bpe]
With `bpe`, the data is BPE tokens of more than one text byte each; otherwise byte-level.
Asserts every group of DESIGN §5 is there with the documented shapes, the run is marked
complete, loads add up to the kept assignments, and the byte matrices match the loads.
"""
import sys

import h5py
import numpy as np


def main() -> int:
    path, ranks, steps, blocks, experts = sys.argv[1], *map(int, sys.argv[2:6])
    bpe = sys.argv[6:] == ["bpe"]
    with h5py.File(path, "r") as f:
        assert f.attrs["command"] == "train", f.attrs["command"]
        assert int(f.attrs["world_size"]) == ranks
        assert int(f["train"].attrs["complete"]) == 1
        for name in ("step", "loss", "router_loss", "lr", "grad_norm", "tokens_per_s", "ms_per_step"):
            assert f["train"][name].shape == (steps,), name
        assert np.all(np.isfinite(f["train/loss"][...]))
        assert f["eval/loss"].shape[0] >= 1 and f["eval/bpb"].shape == f["eval/loss"].shape
        bytes_per_token = f["eval/bytes_per_token"][...]
        assert np.allclose(f["eval/bpb"][...], f["eval/loss"][...] / np.log(2) / bytes_per_token)
        if bpe:
            assert np.all((bytes_per_token > 1.3) & (bytes_per_token < 4.0)), bytes_per_token
            assert int(f["eval"].attrs["vocab_size"]) > 256
        else:
            assert np.all(bytes_per_token == 1.0), bytes_per_token
            assert int(f["eval"].attrs["vocab_size"]) == 256
        assert np.allclose(f["eval/ppl"][...], np.exp(f["eval/loss"][...]))
        # the resolved settings: --balance auto's choice, the text and the tokenizer
        config, data = f["config"].attrs, f["data"].attrs
        balance, router = f["train"].attrs["balance"], config["router"]
        if config["balance"] == "auto":
            assert balance == ("none" if router in ("hash", "expert_choice") else "aux"), (router, balance)
        else:
            assert balance == config["balance"], (config["balance"], balance)
        # the backend the run took (--backend) and, on a GPU, the device it names
        backend = f["train"].attrs["backend"]
        assert backend == config["backend"], (backend, config["backend"])
        assert (len(f["train"].attrs.get("device", "")) > 0) == (backend == "cuda"), dict(f["train"].attrs)
        if bpe:
            assert data["tokenizer"] == "bpe" and data["source"] == config["data"], dict(data)
            assert data["tokenizer_model"] == config["data"][:-len(".bin")] + ".model", dict(data)
        else:
            assert data["tokenizer"] == "byte" and "tokenizer_model" not in data, dict(data)
            assert data["source"] == (config["data"] or "the built-in story corpus"), dict(data)
        flops_per_token = float(f["train"].attrs["model_flops_per_token"])
        assert flops_per_token > 0
        assert np.allclose(f["train/model_flops_per_s"][...], f["train/tokens_per_s"][...] * flops_per_token)
        exchange_ms_total = 0.0
        for layer in range(blocks):
            routing = f[f"routing/layer_{layer}"]
            load, demand = routing["load"][...], routing["demand"][...]
            assert load.shape == (steps, experts) and demand.shape == (steps, experts)
            assert np.all(load <= demand)
            comm = f[f"comm/layer_{layer}"]
            sent = comm["bytes_sent"][...]  # [step, src, phase, dst]
            assert sent.shape == (steps, ranks, 4, ranks), sent.shape
            # dispatch forward bytes, all sources and destinations, = kept rows x d x 4 bytes
            d_model = int(f["config"].attrs["d-model"])
            assert np.array_equal(sent[:, :, 0, :].sum(axis=(1, 2)), load.sum(axis=1) * d_model * 4)
            assert comm["exchange_ms"].shape == (steps, ranks, 4)
            exchange_ms_total = exchange_ms_total + comm["exchange_ms"][...].sum(axis=2)
            for name in ("drop_rate", "load_cv", "gate_entropy", "router_entropy", "mean_topk_prob"):
                assert routing[name].shape == (steps,), name
        assert f["timing/phase_ms"].shape == (steps, ranks, 9)
        # The layers' exchange phases (count exchange in the dispatch phase) are the step's
        # exchange time.
        assert np.allclose(exchange_ms_total, f["timing/phase_ms"][:, :, 2], rtol=1e-6, atol=1e-9)
        assert f["samples/tokens"].shape[1:] == (int(f["config"].attrs["seq-len"]),)
    print("train trace OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
