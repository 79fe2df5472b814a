#!/usr/bin/env python3
"""PyTorch reference of the tiny MoE transformer (llm.c style): rebuild the model from the
weights, inputs and routing plans that tests/model/export_model_case.cpp wrote, run forward
and backward with autograd, and compare logits, losses and every gradient with the C++ ones.

    usage: torch_reference.py CASE.bin [--fault exact-gelu|grad] [--float64]

Prints, per tensor, the largest absolute difference, the largest |reference| and their ratio,
and exits 1 when any tensor is outside its tolerance (2 on a malformed file).

Tolerance, per tensor:  max |cpp - torch| <= ATOL + RTOL * max |torch|, with RTOL = 3e-5 and
ATOL = 1e-8. Both sides compute in fp32 with different summation orders (OpenBLAS and
OpenMP blocks vs. ATen kernels; the C++ sums some reductions in double and uses a vectorised
exp with relative error <= 2e-7), so each element carries a rounding error of a few ulp times
the conditioning of its computation through ~10 chained layers. Measured over the seven cases
of tests/cli/torch_reference.sh with 30 seeds each (--seed 1..30, 1 and 2 threads, identical):
max_abs / max|ref| <= 1.4e-6 for logits, losses, router logits and gates, and <= 5.4e-6 for
the gradients (the worst are small gradients of block 0's router and LayerNorm, sums of many
cancelling terms). Against a float64 reference (--float64) the C++ side is within ~3e-6, about
as close as the fp32 reference itself. RTOL 3e-5 leaves a margin of 5x over the worst of those
420 runs while real mistakes are far larger: the exact GELU instead of the tanh form moves
gradients by up to ~8e-4 relative (--fault exact-gelu), one gradient element off by 1 % is
1e-2 (--fault grad), a dropped aux-loss term or a 1/hs attention scale 1e-2 to 1. ATOL only
matters for a reference that is exactly 0 everywhere, where the C++ value must be 0 too.

The routing *selection* (which experts, which assignments were kept under capacity) is taken
from the C++ plan, not recomputed: fp32 differences between the two implementations can flip
a near-tie in a top-k or in an expert's top-C and would then change the model discretely. The
logits, probabilities, gates, auxiliary loss and z-loss are recomputed differentiably from the
torch tensors, so every gradient, router gradients included, is checked. The plan is checked
for consistency too: loads within capacity, demands equal to the selections, and (token
choice) the selection equal to the top-k of the C++ router logits, which are themselves
compared with torch's, except within TIE_MARGIN of a tie.
"""
import argparse
import math
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

RTOL = 3e-5
ATOL = 1e-8
TIE_MARGIN = 1e-4  # logit gap below which the two sides may legitimately pick differently

DTYPES = {0: np.float32, 1: np.int32, 2: np.float64}


class FormatError(Exception):
    pass


def read_records(path):
    """Records of export_model_case.cpp: name -> numpy array (scalars: 0-d) or str."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"MOEBREF1":
        raise FormatError(f"{path}: not a moebench reference file (bad magic)")
    version, count = struct.unpack_from("<II", data, 8)
    if version != 1:
        raise FormatError(f"{path}: version {version}, expected 1")
    offset = 16
    records = {}
    for _ in range(count):
        (name_length,) = struct.unpack_from("<I", data, offset)
        offset += 4
        name = data[offset:offset + name_length].decode()
        offset += name_length
        dtype, ndim = struct.unpack_from("<II", data, offset)
        offset += 8
        dims = struct.unpack_from(f"<{ndim}q", data, offset)
        offset += 8 * ndim
        size = math.prod(dims)
        if dtype == 3:
            records[name] = data[offset:offset + size].decode()
            offset += size
            continue
        if dtype not in DTYPES:
            raise FormatError(f"{path}: record {name}: unknown dtype {dtype}")
        kind = np.dtype(DTYPES[dtype]).newbyteorder("<")
        array = np.frombuffer(data, dtype=kind, count=size, offset=offset).reshape(dims)
        offset += size * kind.itemsize
        records[name] = array.copy()
    if offset != len(data):
        raise FormatError(f"{path}: {len(data) - offset} trailing bytes")
    return records


class Reference:
    def __init__(self, records, dtype, exact_gelu):
        self.r = records
        self.dtype = dtype
        self.approximate = "none" if exact_gelu else "tanh"
        cfg = {k[len("config."):]: v for k, v in records.items() if k.startswith("config.")}
        self.cfg = {k: (v if isinstance(v, str) else v.item()) for k, v in cfg.items()}
        # Every tensor the C++ side differentiated becomes a leaf that requires grad.
        self.params = {}
        for name in records:
            if name.startswith("grad."):
                param = name[len("grad."):]
                self.params[param] = torch.tensor(records[param], dtype=dtype, requires_grad=True)
        self.moe = {}  # per MoE block: torch values to compare

    def gelu(self, u):
        return F.gelu(u, approximate=self.approximate)

    def layernorm(self, x, prefix):
        C = x.shape[-1]
        return F.layer_norm(x, (C,), self.params[prefix + ".weight"], self.params[prefix + ".bias"],
                            eps=1e-5)

    def attention(self, x, prefix):
        # x [B, T, C] -> proj(causal softmax(q k^T / sqrt(hs)) v)
        B, T, C = x.shape
        NH = self.cfg["heads"]
        hs = C // NH
        qkv = x @ self.params[prefix + ".qkv.weight"] + self.params[prefix + ".qkv.bias"]
        q, k, v = qkv.split(C, dim=2)
        q, k, v = (t.view(B, T, NH, hs).transpose(1, 2) for t in (q, k, v))  # [B, NH, T, hs]
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
        mask = torch.ones(T, T, dtype=torch.bool).tril()
        att = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        return y @ self.params[prefix + ".proj.weight"] + self.params[prefix + ".proj.bias"]

    def router(self, x, prefix):
        # router_net.hpp: linear z = xW; mlp z = GELU(xW1)W2; mlp_hadamard (GELU(xWa)*(xWb))Wo
        p = self.params
        arch = self.cfg["router_arch"]
        if arch == "linear":
            return x @ p[prefix + "router.w"]
        if arch == "mlp":
            return self.gelu(x @ p[prefix + "router.w1"]) @ p[prefix + "router.w2"]
        if arch == "mlp_hadamard":
            a = self.gelu(x @ p[prefix + "router.wa"])
            return (a * (x @ p[prefix + "router.wb"])) @ p[prefix + "router.wo"]
        raise FormatError(f"unknown router_arch {arch}")

    def moe_layer(self, x, prefix):
        """x [N, C] -> y [N, C], router loss (aux + z) of the layer."""
        cfg, r = self.cfg, self.r
        N, C = x.shape
        E, k = cfg["num_experts"], cfg["top_k"]
        router_kind = cfg["router"]
        expert = torch.from_numpy(r[prefix + "plan.expert"]).long()  # [N, S]
        kept = torch.from_numpy(r[prefix + "plan.kept"]).bool()       # [N, S]
        safe_expert = expert.clamp(min=0)
        learned = router_kind != "hash"
        z = p = None
        loss = torch.zeros((), dtype=self.dtype)
        if learned:
            z = self.router(x, prefix)                # [N, E]
            p = z.softmax(dim=-1)                     # [N, E]
            lse = z.logsumexp(dim=-1)                 # [N]
            self.moe[prefix + "router_logits"] = z
        # Gates [N, S] (docs/routing.md), from the torch tensors with the C++ selection.
        if router_kind == "top1" and cfg["hard_gates"]:
            gate = torch.ones(expert.shape, dtype=self.dtype)
        elif router_kind in ("topk_hard", "hash"):
            gate = torch.full(expert.shape, 1.0 / k, dtype=self.dtype)
        elif router_kind in ("top1", "expert_choice"):
            gate = p.gather(1, safe_expert)
        elif router_kind == "softk":
            selected = z.gather(1, expert) / cfg["temperature"]  # [N, k]
            if cfg["renorm_after_drop"]:
                # softmax over the kept choices only; a token with none keeps gates 0
                any_kept = kept.any(dim=1, keepdim=True)
                masked = selected.masked_fill(~kept, float("-inf"))
                masked = torch.where(any_kept, masked, torch.zeros_like(masked))
                gate = masked.softmax(dim=1) * kept
            else:
                gate = selected.softmax(dim=1)
        else:
            raise FormatError(f"unknown router {router_kind}")
        gate = gate * (expert >= 0)
        self.moe[prefix + "plan.gate"] = gate
        # y_t = sum over kept (t, e) of gate * Expert_e(x_t), Expert = GELU(x W1 + b1) W2 + b2.
        w1, b1 = self.params[prefix + "experts.w1"], self.params[prefix + "experts.b1"]
        w2, b2 = self.params[prefix + "experts.w2"], self.params[prefix + "experts.b2"]
        y = torch.zeros(N, C, dtype=self.dtype)
        for e in range(E):
            token, slot = ((expert == e) & kept).nonzero(as_tuple=True)
            if token.numel() == 0:
                continue
            out = self.gelu(x[token] @ w1[e] + b1[e]) @ w2[e] + b2[e]
            y = y.index_add(0, token, gate[token, slot].unsqueeze(1) * out)
        # aux = alpha E sum_e f_e P_e, f_e = demand_e / (N k) (C++ demand: a selection count).
        if cfg["aux_loss_coeff"] > 0:
            demand = torch.from_numpy(r[prefix + "plan.demand"]).to(self.dtype)
            aux = cfg["aux_loss_coeff"] * E * (demand / (N * k) * p.mean(dim=0)).sum()
            self.moe[prefix + "aux_loss"] = aux
            loss = loss + aux
        if cfg["z_loss_coeff"] > 0:
            zl = cfg["z_loss_coeff"] * (lse * lse).mean()
            self.moe[prefix + "z_loss"] = zl
            loss = loss + zl
        return y, loss

    def forward(self):
        cfg, p = self.cfg, self.params
        tokens = torch.from_numpy(self.r["tokens"]).long()
        targets = torch.from_numpy(self.r["targets"]).long()
        B, T = tokens.shape
        x = p["wte"][tokens] + p["wpe"][:T]
        router_loss = torch.zeros((), dtype=self.dtype)
        for block in range(cfg["layers"]):
            prefix = f"block{block}."
            x = x + self.attention(self.layernorm(x, prefix + "ln1"), prefix + "attn")
            h = self.layernorm(x, prefix + "ln2")
            if block % cfg["moe_every"] == 0:
                ffn, loss = self.moe_layer(h.reshape(B * T, -1), prefix + "moe.")
                ffn = ffn.view(B, T, -1)
                router_loss = router_loss + loss
            else:
                hidden = self.gelu(h @ p[prefix + "mlp.fc1.weight"] + p[prefix + "mlp.fc1.bias"])
                ffn = hidden @ p[prefix + "mlp.fc2.weight"] + p[prefix + "mlp.fc2.bias"]
            x = x + ffn
        x = self.layernorm(x, "lnf")
        logits = x @ p["wte"].t()
        loss = F.cross_entropy(logits.view(B * T, -1), targets.view(-1))
        return logits, loss, router_loss


def check_plan(records, cfg):
    """Plan consistency and C++ selection vs. the C++ router logits; returns (problems, drops)."""
    problems, dropped = [], 0
    E, k = cfg["num_experts"], cfg["top_k"]
    for name in sorted(n for n in records if n.endswith(".plan.expert")):
        prefix = name[: -len("plan.expert")]
        expert, kept = records[name], records[prefix + "plan.kept"].astype(bool)
        capacity = int(records[prefix + "plan.capacity"])
        load = np.bincount(expert[kept], minlength=E)
        if (load != records[prefix + "plan.load"]).any() or load.max() > capacity:
            problems.append(f"{prefix}: loads {load} vs. plan {records[prefix + 'plan.load']}, C {capacity}")
        requested = expert.shape[0] * k
        dropped += requested - int(kept.sum())
        if cfg["router"] in ("top1", "topk_hard", "softk"):
            demand = np.bincount(expert.ravel(), minlength=E)
            if (demand != records[prefix + "plan.demand"]).any():
                problems.append(f"{prefix}: demand {records[prefix + 'plan.demand']}, selections {demand}")
            # The C++ selection is the top-k of its logits; away from near-ties it must be the
            # top-k of any accurate logits.
            z = records[prefix + "router_logits"]
            chosen = np.take_along_axis(z, expert, axis=1).min(axis=1)
            others = z.copy()
            np.put_along_axis(others, expert, -np.inf, axis=1)
            violations = (others.max(axis=1) > chosen + TIE_MARGIN).sum()
            if violations:
                problems.append(f"{prefix}: {violations} tokens whose selection is not their top-{k}")
        print(f"  {prefix} capacity {capacity}: kept {int(kept.sum())} of {requested} requested "
              f"assignments, loads {load.tolist()}")
    return problems, dropped


def compare(name, cpp, ref, failures, worst):
    ref = ref.detach().to(torch.float64).numpy()
    cpp = np.asarray(cpp, dtype=np.float64)
    if cpp.shape != ref.shape:
        failures.append(f"{name}: shape {cpp.shape} vs. {ref.shape}")
        return
    diff = float(np.abs(cpp - ref).max()) if cpp.size else 0.0
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    bound = ATOL + RTOL * scale
    relative = diff / scale if scale > 0 else (0.0 if diff == 0 else math.inf)
    ok = diff <= bound and np.isfinite(cpp).all()
    print(f"  {'ok  ' if ok else 'FAIL'} {name:34s} max_abs {diff:9.2e}  max|ref| {scale:9.2e}  "
          f"rel {relative:9.2e}  (tol {bound:8.2e})")
    key = "grad" if name.startswith("grad.") else "value"
    worst[key] = max(worst[key], relative)
    if not ok:
        failures.append(f"{name}: max abs diff {diff:.3e} > tolerance {bound:.3e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case")
    parser.add_argument("--fault", choices=["exact-gelu", "grad"],
                        help="inject a known mistake (the comparison must then fail)")
    parser.add_argument("--float64", action="store_true",
                        help="compute the reference in float64 (diagnostics)")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    try:
        records = read_records(args.case)
    except (OSError, FormatError, struct.error, ValueError) as error:
        print(f"torch_reference: cannot read {args.case}: {error}")
        return 2
    if args.fault == "grad":  # one gradient element off by 1 %
        grad = records["grad.block0.attn.qkv.weight"]
        index = np.unravel_index(np.abs(grad).argmax(), grad.shape)
        grad[index] *= 1.01
    dtype = torch.float64 if args.float64 else torch.float32
    reference = Reference(records, dtype, exact_gelu=args.fault == "exact-gelu")
    cfg = reference.cfg
    print(f"case {args.case}: router {cfg['router']}, arch {cfg['router_arch']}, "
          f"k {cfg['top_k']}, CF {cfg['capacity_factor']}, balance {cfg['balance']}, "
          f"z-loss {cfg['z_loss_coeff']}, torch {torch.__version__}, {dtype}")
    problems, dropped = check_plan(records, cfg)
    if cfg["capacity_factor"] > 0 and dropped == 0:
        problems.append("no assignment was dropped: the case does not exercise capacity")

    logits, loss, router_loss = reference.forward()
    (loss + router_loss).backward()

    failures, worst = list(problems), {"value": 0.0, "grad": 0.0}
    compare("logits", records["logits"], logits, failures, worst)
    compare("loss", records["loss"], loss, failures, worst)
    compare("aux_loss", records["aux_loss"], router_loss, failures, worst)
    for name, value in reference.moe.items():
        cpp = records[name]
        if name.endswith("plan.gate"):  # gates of entries that are not kept are not used
            kept = records[name[: -len("gate")] + "kept"].astype(bool)
            cpp, value = np.where(kept, cpp, 0.0), torch.where(torch.from_numpy(kept), value, torch.zeros_like(value))
        compare(name, cpp, value, failures, worst)
    missing = 0
    for name, param in reference.params.items():
        if param.grad is None:  # not reached by the loss: the C++ gradient must be 0
            param.grad = torch.zeros_like(param)
            missing += 1
        compare("grad." + name, records["grad." + name], param.grad, failures, worst)
    print(f"  largest max_abs/max|ref|: values {worst['value']:.2e}, gradients {worst['grad']:.2e} "
          f"(rtol {RTOL:.0e}); {len(reference.params)} gradients, {dropped} assignments dropped")
    if failures:
        print(f"torch_reference FAILED ({len(failures)}):")
        for failure in failures:
            print(f"  {failure}")
        return 1
    print("torch_reference OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
