#!/usr/bin/env python3
"""PyTorch eager reference for `moebench train` training speed (single process, CPU).

The same model and step as `moebench train --config configs/quickstart.ini` on one rank:
byte vocabulary 256, token + learned position embeddings, pre-LN blocks with causal multi-head
attention and an MoE FFN in every block (linear router without bias, softk routing: top-k of
the logits, gates = softmax of the k selected logits; capacity C = max(1, ceil(CF*T*k/E)) per
expert per batch, slots filled choice-major in token order, assignments over capacity dropped;
E separate GELU(tanh) MLPs d -> 4d -> d run on their gathered tokens; aux loss
alpha*E*sum_e f_e*P_e with f_e = requested assignments / (T*k)), final LN, tied head, mean
cross-entropy, global grad-norm clip 1.0, AdamW (betas 0.9/0.999, eps 1e-8, weight decay 0.1 on
matrices and embeddings only), linear warm-up then cosine decay to 0.1 x lr.

Data: --data SHARD, a byte-level moebench token shard (docs/data.md; `moebench data --out F`
writes the built-in story corpus): B windows of T + 1 tokens at random offsets in its training
split (the first 95 %, as moebench's split) per step. The routing, and so the tokens each
expert computes and drops, depends on the text, so both programs train on the same one.
Without --data: uniformly random bytes.
Prints the median training tokens/s over the steps after the warm-up steps, and a final
machine-readable line `RESULT tokens_per_s=<median>`.

Run with Debian's PyTorch: /usr/bin/python3 bench/torch_train_speed.py --threads 2
"""
import argparse
import math
import statistics
import struct
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class CausalSelfAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.has_sdpa = hasattr(F, "scaled_dot_product_attention")

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.view(B, T, self.heads, C // self.heads).transpose(1, 2)
        k = k.view(B, T, self.heads, C // self.heads).transpose(1, 2)
        v = v.view(B, T, self.heads, C // self.heads).transpose(1, 2)
        if self.has_sdpa:  # PyTorch >= 2.0
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # explicit causal mask (PyTorch 1.x)
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            mask = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
            att = att.masked_fill(mask, float("-inf")).softmax(dim=-1)
            y = att @ v
        return self.proj(y.transpose(1, 2).contiguous().view(B, T, C))


class Expert(nn.Module):
    def __init__(self, d, hidden):
        super().__init__()
        self.fc1 = nn.Linear(d, hidden)
        self.fc2 = nn.Linear(hidden, d)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class MoE(nn.Module):
    def __init__(self, d, experts, top_k, capacity_factor, aux_coeff):
        super().__init__()
        self.E, self.k, self.cf, self.alpha = experts, top_k, capacity_factor, aux_coeff
        self.router = nn.Linear(d, experts, bias=False)
        self.experts = nn.ModuleList(Expert(d, 4 * d) for _ in range(experts))

    def forward(self, x):
        B, T, C = x.shape
        xt = x.reshape(-1, C)  # the whole batch is one group (one rank)
        N, E, k = xt.size(0), self.E, self.k
        logits = self.router(xt)                                   # [N, E]
        probs = logits.float().softmax(dim=-1)
        top_logits, top_idx = logits.topk(k, dim=-1)               # ties -> lower index
        gates = top_logits.softmax(dim=-1)                         # softk gates [N, k]
        capacity = max(1, math.ceil(self.cf * N * k / E - 1e-9))
        # Choice-major, token-order slot filling: position of each assignment in its expert.
        onehot = F.one_hot(top_idx.t().reshape(-1), E)             # [k*N, E], choice-major
        position = (onehot.cumsum(dim=0) - 1).mul(onehot).sum(dim=1)
        keep = position < capacity                                 # [k*N]
        # Aux loss: f_e from requested assignments (before dropping), P_e = mean p.
        f = onehot.sum(dim=0).float() / (N * k)
        aux = self.alpha * E * (f * probs.mean(dim=0)).sum()
        token_of = torch.arange(N, device=x.device).repeat(k)      # [k*N]
        expert_of = top_idx.t().reshape(-1)
        gate_of = gates.t().reshape(-1)
        out = torch.zeros_like(xt)
        for e in range(E):
            sel = torch.nonzero(keep & (expert_of == e), as_tuple=True)[0]
            if sel.numel() == 0:
                continue
            tok = token_of[sel]
            y = self.experts[e](xt.index_select(0, tok)) * gate_of[sel].unsqueeze(1)
            out = out.index_add(0, tok, y)
        return out.view(B, T, C), aux


class Block(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.ln1 = nn.LayerNorm(a.d_model)
        self.attn = CausalSelfAttention(a.d_model, a.heads)
        self.ln2 = nn.LayerNorm(a.d_model)
        self.moe = MoE(a.d_model, a.experts, a.top_k, a.capacity_factor, a.aux_loss_coeff)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        y, aux = self.moe(self.ln2(x))
        return x + y, aux


class MoETransformer(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.wte = nn.Embedding(256, a.d_model)
        self.wpe = nn.Embedding(a.seq_len, a.d_model)
        self.blocks = nn.ModuleList(Block(a) for _ in range(a.layers))
        self.ln_f = nn.LayerNorm(a.d_model)
        # GPT-2 init: N(0, 0.02), projections into the residual stream / sqrt(2 L), biases 0.
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02
                if name.endswith("attn.proj.weight") or name.endswith("fc2.weight"):
                    std /= math.sqrt(2 * a.layers)
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx, targets):
        B, T = idx.shape
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        aux_total = 0.0
        for block in self.blocks:
            x, aux = block(x)
            aux_total = aux_total + aux
        logits = self.ln_f(x) @ self.wte.weight.t()                # tied head
        ce = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        return ce, aux_total


def read_byte_shard(path, val_fraction=0.05):
    """The training split of a byte-level moebench token shard as a uint8 tensor."""
    with open(path, "rb") as f:
        header = f.read(32)
        magic, version, width, count, vocab, _ = struct.unpack("<8sIIQII", header)
        if magic != b"MOETOK\0\0" or version != 1:
            raise SystemExit(f"{path}: not a moebench token shard (version 1)")
        if width != 1 or vocab > 256:
            raise SystemExit(f"{path}: width {width}, vocabulary {vocab}: need byte-level tokens")
        tokens = torch.frombuffer(bytearray(f.read(count)), dtype=torch.uint8)
    train = count - int(count * val_fraction)
    return tokens[:train].long()


def lr_at(step, steps, warmup, lr, min_ratio=0.1):
    # train.cpp learning_rate_at: linear warm-up, then cosine to min_ratio * lr.
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup - 1))
    return lr * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--capacity-factor", type=float, default=1.25)
    ap.add_argument("--aux-loss-coeff", type=float, default=0.01)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup-steps", type=int, default=5, help="steps left out of the median")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--lr-warmup", type=int, default=40)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--data", help="byte-level moebench token shard (default: random bytes)")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    model = MoETransformer(a)
    decay = [p for p in model.parameters() if p.dim() >= 2]       # matrices and embeddings
    no_decay = [p for p in model.parameters() if p.dim() < 2]     # norms and biases
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.999), eps=1e-8)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"# torch {torch.__version__}, threads {torch.get_num_threads()}, params {n_params}, "
          f"sdpa {hasattr(F, 'scaled_dot_product_attention')}, "
          f"data: {a.data if a.data else 'random bytes'}")

    gen = torch.Generator().manual_seed(a.seed)
    text = read_byte_shard(a.data) if a.data else None
    window = torch.arange(a.seq_len + 1)
    tokens_per_step = a.batch_size * a.seq_len
    rates = []
    for step in range(a.steps):
        if text is None:
            batch = torch.randint(0, 256, (a.batch_size, a.seq_len + 1), generator=gen)
        else:
            starts = torch.randint(0, text.numel() - a.seq_len, (a.batch_size, 1), generator=gen)
            batch = text[starts + window]
        idx, targets = batch[:, :-1], batch[:, 1:]
        t0 = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, a.steps, a.lr_warmup, a.lr)
        ce, aux = model(idx, targets)
        opt.zero_grad(set_to_none=True)
        (ce + aux).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        dt = time.perf_counter() - t0
        rates.append(tokens_per_step / dt)
        if (step + 1) % 10 == 0:
            print(f"step {step + 1:4d}/{a.steps} | loss {ce.item():.4f} | aux {float(aux):.4f} | "
                  f"{dt * 1e3:.1f} ms | {rates[-1]:.0f} tok/s")
    median = statistics.median(rates[a.warmup_steps:])
    print(f"RESULT tokens_per_s={median:.1f}")


if __name__ == "__main__":
    main()
