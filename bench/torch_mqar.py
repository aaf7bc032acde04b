#!/usr/bin/python3
"""PyTorch peer of seqmix's MQAR main job (configs/mqar/attention.yaml).

The same model, data distribution, optimizer and stopping rule, written plainly
in PyTorch, so bench/compare_mqar_torch.sh can time both back to back:

- model: token and position embeddings (std 0.02), 2 pre-norm blocks of causal
  softmax attention (2 heads, fused qkv projection with bias, output projection
  with bias, std 0.02 / sqrt(2 n_layers)), no MLP, final LayerNorm, output head
  tied to the token embeddings and computed only at the labelled positions;
- data: Zoology's MQAR (64 tokens, 4 key-value pairs, vocabulary 8192, keys from
  [1, V/2), values from [V/2, V), query slots weighted by power_a = 0.01, the
  non-query positions of the query region filled with random tokens); 20,000
  training and 1,000 test examples drawn with numpy (same distribution as
  seqmix's generator, not the same draws);
- optimizer: AdamW lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 0.1 on
  parameters of 2+ dimensions, gradient clipping at 1.0, 100 warmup steps then
  a half cosine to 1e-4 over 16 epochs of batch 64;
- stop: test accuracy >= 0.99, evaluated every 100 steps.

Prints the training time (the loop, evaluations included, data generation
excluded, as seqmix's "done: ... in X s") and the final accuracy.
Run: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_NUM_THREADS=2 /usr/bin/python3 bench/torch_mqar.py
"""
import argparse
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

IGNORE = -100


def mqar(n, V, L, K, power_a, rng):
    """n examples of Zoology's multi-query associative recall."""
    space = (L - 2 * K) // 2
    w = power_a * np.arange(1, space + 1, dtype=np.float64) ** (power_a - 1.0)
    w /= w.sum()
    inputs = np.zeros((n, L), dtype=np.int64)
    labels = np.full((n, L), IGNORE, dtype=np.int64)
    for i in range(n):
        keys = rng.choice(np.arange(1, V // 2), K, replace=False)
        values = rng.choice(np.arange(V // 2, V), K, replace=False)
        slots = rng.choice(space, K, replace=False, p=w)
        inputs[i, 0:2 * K:2] = keys
        inputs[i, 1:2 * K:2] = values
        pos = 2 * K + 2 * slots
        inputs[i, pos] = keys
        labels[i, pos] = values
        region = inputs[i, 2 * K:]
        zero = region == 0
        region[zero] = rng.integers(0, V, zero.sum())
    return torch.from_numpy(inputs), torch.from_numpy(labels)


class Block(nn.Module):
    def __init__(self, D, H, n_layers):
        super().__init__()
        self.norm1 = nn.LayerNorm(D)
        self.Wqkv = nn.Linear(D, 3 * D)
        self.out_proj = nn.Linear(D, D)
        self.H = H
        nn.init.normal_(self.Wqkv.weight, std=0.02)
        nn.init.zeros_(self.Wqkv.bias)
        nn.init.normal_(self.out_proj.weight, std=0.02 / math.sqrt(2 * n_layers))
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x, mask):
        B, L, D = x.shape
        q, k, v = self.Wqkv(self.norm1(x)).view(B, L, 3, self.H, D // self.H).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(D // self.H))
        att = att.masked_fill(mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, L, D)
        return x + self.out_proj(y)


class Model(nn.Module):
    def __init__(self, V, D, L, H, n_layers):
        super().__init__()
        self.wte = nn.Embedding(V, D)
        self.wpe = nn.Embedding(L, D)
        nn.init.normal_(self.wte.weight, std=0.02)
        nn.init.normal_(self.wpe.weight, std=0.02)
        self.blocks = nn.ModuleList([Block(D, H, n_layers) for _ in range(n_layers)])
        self.norm_f = nn.LayerNorm(D)
        self.register_buffer("mask", torch.triu(torch.ones(L, L, dtype=torch.bool), 1))

    def forward(self, tokens, labels):
        L = tokens.shape[1]
        x = self.wte(tokens) + self.wpe.weight[:L]
        for b in self.blocks:
            x = b(x, self.mask[:L, :L])
        h = self.norm_f(x).reshape(-1, x.shape[-1])
        lab = labels.reshape(-1)
        keep = lab != IGNORE
        logits = h[keep] @ self.wte.weight.t()  # the head only at labelled positions
        return F.cross_entropy(logits, lab[keep]), logits, lab[keep]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: no limit)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    V, L, K, D, H, n_layers, batch = 8192, 64, 4, 64, 2, 2, 64
    rng = np.random.default_rng(1)
    train_x, train_y = mqar(20000, V, L, K, 0.01, rng)
    test_x, test_y = mqar(1000, V, L, K, 0.01, rng)

    model = Model(V, D, L, H, n_layers)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    bpe = train_x.shape[0] // batch
    total = a.epochs * bpe
    warmup, lr, min_lr = 100, 1e-3, 1e-4

    def lr_at(step):  # step counts from 0
        if step < warmup:
            return lr * (step + 1) / warmup
        p = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * p))

    def evaluate():
        model.eval()
        correct = n = 0
        with torch.no_grad():
            for i in range(0, test_x.shape[0], batch):
                _, logits, lab = model(test_x[i:i + batch], test_y[i:i + batch])
                correct += (logits.argmax(-1) == lab).sum().item()
                n += lab.numel()
        model.train()
        return correct / n

    gen = torch.Generator().manual_seed(a.seed)
    step, acc = 0, 0.0
    t0 = time.time()
    done = False
    while not done and step < total:
        perm = torch.randperm(train_x.shape[0], generator=gen)
        for i in range(bpe):
            idx = perm[i * batch:(i + 1) * batch]
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            loss, _, _ = model(train_x[idx], train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            if step % 100 == 0 or step == total:
                acc = evaluate()
                print(f"step {step} loss {loss.item():.4f} valid accuracy {acc:.4f} ({time.time() - t0:.1f} s)", flush=True)
                if acc >= 0.99:
                    done = True
                    break
            if a.max_steps and step >= a.max_steps:
                done = True
                break
    elapsed = time.time() - t0
    print(f"torch done: {step} steps in {elapsed:.1f}s | valid accuracy {acc:.4f} | "
          f"{step * batch * L / elapsed:.0f} tok/s | threads {a.threads}")


if __name__ == "__main__":
    main()
