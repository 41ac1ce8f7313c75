#!/usr/bin/env python3
"""Training tokens per second of the PyTorch reference trainer, for make bench-train.

Usage: python3 tools/bench_train.py CHECKPOINT_DIR STEPS
Loads the checkpoint dsv2 train wrote (config.json, float32 model.safetensors) and times STEPS
steps of the reference trainer of tools/make_grad_golden.py (its model_loss, written from the
paper's formulas; autograd; clip_grad_norm_ at 1; torch.optim.AdamW with warmup + cosine) on the
settings make bench-train gives the C trainer: batch 8 windows of 64 tokens, each window its own
loss scaled by 1/8 (the C trainer's per-sequence balance losses), the paper's balance-loss
weights, no token dropping, one thread, float32. The windows are random ids from a fixed seed:
the work per step does not depend on the text. Prints two numbers: training tokens per second of
wall-clock time and per second of this process's CPU time.
"""
import json
import os
import sys
import time

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_grad_golden as ref  # noqa: E402

BATCH, SEQ, WARMUP = 8, 64, 5
OPTIONS = {"alpha1": 0.003, "alpha2": 0.05, "alpha3": 0.02, "capacity_factor": 0.0}


def main():
    ckpt, steps = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(1)
    cfg = json.load(open(os.path.join(ckpt, "config.json")))
    params = {k: torch.nn.Parameter(v.float()) for k, v in
              load_file(os.path.join(ckpt, "model.safetensors")).items()}
    c = {"lr": 1e-3, "min_lr": 1e-4, "warmup_steps": WARMUP, "total_steps": steps}
    adamw = torch.optim.AdamW(list(params.values()), lr=c["lr"], betas=(0.9, 0.95), eps=1e-8,
                              weight_decay=0.1)
    gen = torch.Generator().manual_seed(1)
    windows = torch.randint(0, cfg["vocab_size"] - 2, (steps, BATCH, SEQ + 1), generator=gen)
    margins = ref.Margins()
    start, cpu_start = time.perf_counter(), time.process_time()
    for t in range(1, steps + 1):
        adamw.zero_grad(set_to_none=False)
        for b in range(BATCH):
            w = windows[t - 1, b]
            loss = ref.model_loss(params, cfg, w[:-1], w[1:], OPTIONS, margins)[0] / BATCH
            loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        for group in adamw.param_groups:
            group["lr"] = ref.schedule(t, c, "cosine")
        adamw.step()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    print(f"{steps * BATCH * SEQ / seconds:.0f} {steps * BATCH * SEQ / cpu:.0f}")


if __name__ == "__main__":
    main()
