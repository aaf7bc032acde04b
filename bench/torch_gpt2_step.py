"""One GPT-2 training step in PyTorch with nanoGPT's model.py: the peer of bench_train_step.

Imports model.py from a nanoGPT checkout given on the command line (nothing of it is copied
here), builds GPT-2 124M (12 layers, 12 heads, d_model 768, block 1024, vocab 50304 padded as
nanoGPT and llm.c do, biases, tied embeddings, dropout 0), and times forward with the loss at
every position, backward, clip_grad_norm_(1.0) and AdamW (nanoGPT's configure_optimizers:
decay on 2-D tensors) on random tokens, as nanoGPT's train.py does a step. Prints ms/step
(median after warm-up) and peak RSS (getrusage).

PyTorch 1.13 (Debian) has no scaled_dot_product_attention, so model.py takes its explicit
masked-softmax path. By default glibc malloc keeps freed memory (see torch_mixers.py's
keep_freed_memory: page faults on this VM otherwise dominate); --plain-malloc for the defaults.

Not used by the build or the tests. Run:
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_NUM_THREADS=2 /usr/bin/python3 \
      bench/torch_gpt2_step.py /work/peers/nanoGPT [--B 4] [--T 64] [--repeats 5]
"""
import argparse
import math
import os
import resource
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_mixers import keep_freed_memory  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("nanogpt", help="path of a nanoGPT checkout (its model.py is imported)")
    ap.add_argument("--B", type=int, default=4)
    ap.add_argument("--T", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--plain-malloc", action="store_true", help="leave glibc malloc at its defaults")
    args = ap.parse_args()
    if not os.path.isfile(os.path.join(args.nanogpt, "model.py")):
        sys.exit(f"torch_gpt2_step.py: no model.py in {args.nanogpt} (pass a nanoGPT checkout)")
    tuned = False if args.plain_malloc else keep_freed_memory()
    threads = int(os.environ.get("OMP_NUM_THREADS", 2))
    torch.set_num_threads(threads)
    sys.path.insert(0, os.path.abspath(args.nanogpt))
    from model import GPT, GPTConfig  # nanoGPT's model.py

    torch.manual_seed(1234)
    cfg = GPTConfig(block_size=1024, vocab_size=50304, n_layer=12, n_head=12, n_embd=768, dropout=0.0, bias=True)
    model = GPT(cfg)
    model.train()
    opt = model.configure_optimizers(weight_decay=0.1, learning_rate=3e-4, betas=(0.9, 0.95), device_type="cpu")
    nparams = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(42)
    seq = torch.randint(0, 50257, (args.B, args.T + 1), generator=g)
    x, y = seq[:, :-1].contiguous(), seq[:, 1:].contiguous()
    print(f"# PyTorch {torch.__version__}, nanoGPT model.py from {args.nanogpt}, threads {torch.get_num_threads()}, "
          f"malloc keeps freed memory: {tuned}; B={args.B} T={args.T}; parameters {nparams}; "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    times = []
    for i in range(args.warmup + args.repeats):
        t0 = time.perf_counter()
        _, loss = model(x, y)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        lv = loss.item()
        if not math.isfinite(lv):
            sys.exit(f"torch_gpt2_step.py: loss is {lv} at step {i + 1}")
        ms = (t3 - t0) * 1e3
        tag = " (warm-up)" if i < args.warmup else ""
        print(f"step {i + 1}{tag}: {ms:.1f} ms (forward+loss {(t1 - t0) * 1e3:.1f}, backward {(t2 - t1) * 1e3:.1f}, "
              f"clip+adamw {(t3 - t2) * 1e3:.1f}), loss {lv:.4f}", flush=True)
        if i >= args.warmup:
            times.append(ms)
    step_ms = statistics.median(times)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"ms/step (median of {args.repeats} after {args.warmup} warm-up): {step_ms:.1f}")
    print(f"peak RSS: {peak_mib:.0f} MiB")
    print(f"RESULT pytorch B={args.B} T={args.T} ms_step={step_ms:.1f} peak_rss_mib={peak_mib:.0f}")


if __name__ == "__main__":
    main()
