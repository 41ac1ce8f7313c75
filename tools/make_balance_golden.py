#!/usr/bin/env python3
"""PyTorch autograd fixtures for the balance losses (ref/balance.c).

The PyTorch side transcribes the paper's formulas (DeepSeek-V2 §2.2.3) and the released
`MoEGate` expert-level loss (both `seq_aux` variants) directly on tensors, and lets autograd
produce the gradient with respect to the router logits. Routing is group-limited (the
paper's device-limited routing with D devices, M of them per token), made with torch ops.

Writes tests/golden/balance/balance.safetensors:
  logits      F32 [B, T, E]   router logits
  idx         F32 [B, T, K]   chosen experts (exact small integers)
  per-sequence (b = 0): loss_expert, loss_device, loss_comm  F32 [1]; grad_all F32 [T, E]
  batch: loss_seq_aux, loss_batch F32 [1]; grad_seq_aux, grad_batch F32 [B, T, E]
with meta in balance.json. Run: python3 tools/make_balance_golden.py
"""
import json
import os

import torch
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "golden", "balance")
B, T, E, K, D, M = 3, 24, 16, 3, 4, 2
A1, A2, A3 = 0.003, 0.05, 0.02


def route(scores):
    """Device-limited routing: the M devices with the best top affinity, then top-K there."""
    g = scores.view(*scores.shape[:-1], D, E // D).max(-1).values
    keep = g.topk(M, -1).indices
    mask = torch.zeros_like(g).scatter_(-1, keep, 1.0).repeat_interleave(E // D, -1)
    return (scores * mask).topk(K, -1).indices


def paper_losses(logits, idx):
    """The three losses of one sequence, transcribed from the paper."""
    s = logits.softmax(-1)                                      # s_{i,t}
    count = torch.zeros(E).scatter_add_(0, idx.reshape(-1), torch.ones(idx.numel()))
    f = E / (K * T) * count                                     # f_i
    P = s.mean(0)                                               # P_i
    l_exp = A1 * (f * P).sum()
    f_dev = f.view(D, E // D).mean(-1)                          # f'_d
    P_dev = P.view(D, E // D).sum(-1)                           # P'_d = P''_d
    l_dev = A2 * (f_dev * P_dev).sum()
    sent = torch.zeros(T, D).scatter_(1, idx // (E // D), 1.0)  # token t sent to device d
    f_comm = D / (M * T) * sent.sum(0)                          # f''_d
    l_comm = A3 * (f_comm * P_dev).sum()
    return l_exp, l_dev, l_comm


def released_loss(logits, idx, seq_aux):
    """DeepSeek's MoEGate aux loss (alpha = A1) over a batch, both seq_aux variants."""
    s = logits.softmax(-1)
    if seq_aux:
        ce = torch.zeros(B, E).scatter_add_(1, idx.reshape(B, -1), torch.ones(B, T * K))
        ce = ce / (T * K / E)
        return (ce * s.mean(1)).sum(1).mean() * A1
    mask = torch.nn.functional.one_hot(idx.reshape(-1), E).float()
    fi = mask.mean(0) * E
    Pi = s.reshape(-1, E).mean(0)
    return (Pi * fi).sum() * A1


def main():
    torch.manual_seed(7)
    logits = (2.0 * torch.randn(B, T, E)).requires_grad_(True)
    with torch.no_grad():
        s = logits.softmax(-1)
        idx = route(s)
        # near-tie guard: selection margins must be clear (docs/semantics.md §0)
        g = s.view(B, T, D, E // D).max(-1).values.sort(-1, descending=True).values
        assert (g[..., M - 1] - g[..., M]).min() > 1e-4
    out = {"logits": logits.detach(), "idx": idx.float()}
    l_exp, l_dev, l_comm = paper_losses(logits[0], idx[0])
    (grad,) = torch.autograd.grad(l_exp + l_dev + l_comm, logits)
    out.update(loss_expert=l_exp.detach().reshape(1), loss_device=l_dev.detach().reshape(1),
               loss_comm=l_comm.detach().reshape(1), grad_all=grad[0].contiguous())
    for name, seq_aux in (("seq_aux", True), ("batch", False)):
        loss = released_loss(logits, idx, seq_aux)
        (grad,) = torch.autograd.grad(loss, logits)
        out[f"loss_{name}"] = loss.detach().reshape(1)
        out[f"grad_{name}"] = grad.contiguous()
    os.makedirs(OUT, exist_ok=True)
    save_file({k: v.float().contiguous() for k, v in out.items()}, os.path.join(OUT, "balance.safetensors"))
    with open(os.path.join(OUT, "balance.json"), "w") as f:
        json.dump({"generator": "tools/make_balance_golden.py", "torch": torch.__version__,
                   "B": B, "T": T, "E": E, "K": K, "D": D, "M": M,
                   "alpha1": A1, "alpha2": A2, "alpha3": A3}, f, indent=2)
    print("losses", {k: float(v[0]) for k, v in out.items() if k.startswith("loss")})


if __name__ == "__main__":
    main()
