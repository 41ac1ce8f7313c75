#!/usr/bin/env python3
"""PyTorch fixtures for standard attention (MHA / GQA / MQA) in the C trainer (ref/attention_std.c).

Three small random checkpoints, written here, whose configs set attention_type to "mha", "gqa"
and "mqa" (the baselines of DeepSeek-V2's Appendix D): per-head queries, n_g key/value heads each
shared by n_h / n_g query heads, RoPE (adjacent pairs, YaRN where the config says) on the last
qk_rope_head_dim columns of each query and key head, causal softmax at the config's scale. The
attention is written twice, independently: once from the formulas with einsum (used for the
gradients) and once with torch.nn.functional.scaled_dot_product_attention on keys and values
repeated per group; the two must agree within 1e-6 relative before anything is written. The rest
of the model (RMSNorm, SwiGLU, the MoE with routing, dropping and the balance losses, the loss)
is tools/make_grad_golden.py's, which is checked against transformers there.

Writes:
  tests/golden/attn/<name>/config.json, model.safetensors   the checkpoints (F32)
  tests/golden/grad/attn_<name>.safetensors
      attn.a, attn.dout, attn.out, attn.da, attn.grad.<q|k|v|o>_proj.weight
          layer 0's attention on fresh random inputs: output and autograd's gradients
      tokens, targets, loss, balance, dropped, grad.<every weight>
          the whole-model training loss and autograd's gradient of every weight
  tests/golden/grad/attn.json   seeds, options and margins (as make_grad_golden.py)
Run: python3 tools/make_attn_golden.py
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_grad_golden as g  # noqa: E402  (the model pieces, checked against transformers)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
GOLDEN = os.path.join(ROOT, "tests", "golden", "attn")
OUT = os.path.join(ROOT, "tests", "golden", "grad")

COMMON = {
    "architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2", "vocab_size": 64,
    "hidden_size": 16, "num_hidden_layers": 2, "intermediate_size": 24, "moe_intermediate_size": 8,
    "n_routed_experts": 4, "n_shared_experts": 1, "num_experts_per_tok": 2, "first_k_dense_replace": 1,
    "moe_layer_freq": 1, "scoring_func": "softmax", "norm_topk_prob": False, "routed_scaling_factor": 2.0,
    "max_position_embeddings": 64, "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "bos_token_id": 0,
    "eos_token_id": 1, "tie_word_embeddings": False, "hidden_act": "silu", "attention_bias": False,
}
CONFIGS = {
    # GQA, RoPE on 4 of 8 query/key columns, YaRN, group-limited routing, all losses, dropping
    "gqa": dict(COMMON, attention_type="gqa", num_attention_heads=4, num_key_value_heads=2,
                qk_nope_head_dim=4, qk_rope_head_dim=4, v_head_dim=6, topk_method="group_limited_greedy",
                n_group=2, topk_group=1,
                rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16,
                              "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 0.707, "mscale_all_dim": 0.707}),
    # MHA with RoPE on the whole head (the paper's baseline), greedy routing
    "mha": dict(COMMON, attention_type="mha", num_attention_heads=2, num_key_value_heads=2,
                qk_nope_head_dim=0, qk_rope_head_dim=8, v_head_dim=8, topk_method="greedy", n_group=1,
                topk_group=1),
    # MQA: one key/value head for four query heads
    "mqa": dict(COMMON, attention_type="mqa", num_attention_heads=4, num_key_value_heads=1,
                qk_nope_head_dim=2, qk_rope_head_dim=6, v_head_dim=6, topk_method="greedy", n_group=1,
                topk_group=1),
}
OPTIONS = {
    "gqa": {"alpha1": 0.003, "alpha2": 0.05, "alpha3": 0.02, "capacity_factor": 1.0, "T": 16},
    "mha": {"alpha1": 0.001, "alpha2": 0.0, "alpha3": 0.0, "capacity_factor": 0.0, "T": 12},
    "mqa": {"alpha1": 0.0, "alpha2": 0.0, "alpha3": 0.0, "capacity_factor": 0.0, "T": 10},
}


def shapes(cfg):
    """Every weight's name and shape (vectors: norm weights)."""
    D, nh, ng = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    dh, dv = cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    out = {"model.embed_tokens.weight": (cfg["vocab_size"], D)}

    def swiglu(pre, i):
        out.update({pre + "gate_proj.weight": (i, D), pre + "up_proj.weight": (i, D),
                    pre + "down_proj.weight": (D, i)})
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        out.update({p + "input_layernorm.weight": (D,), p + "self_attn.q_proj.weight": (nh * dh, D),
                    p + "self_attn.k_proj.weight": (ng * dh, D), p + "self_attn.v_proj.weight": (ng * dv, D),
                    p + "self_attn.o_proj.weight": (D, nh * dv), p + "post_attention_layernorm.weight": (D,)})
        if g.is_moe(cfg, l):
            out[p + "mlp.gate.weight"] = (cfg["n_routed_experts"], D)
            for e in range(cfg["n_routed_experts"]):
                swiglu(f"{p}mlp.experts.{e}.", cfg["moe_intermediate_size"])
            swiglu(p + "mlp.shared_experts.", cfg["n_shared_experts"] * cfg["moe_intermediate_size"])
        else:
            swiglu(p + "mlp.", cfg["intermediate_size"])
    out["model.norm.weight"] = (D,)
    out["lm_head.weight"] = (cfg["vocab_size"], D)
    return out


def random_weights(cfg, seed):
    gen = torch.Generator().manual_seed(seed)
    W = {}
    for name, shape in shapes(cfg).items():
        if len(shape) == 1:
            W[name] = 0.8 + 0.4 * torch.rand(shape, generator=gen)
        else:
            W[name] = torch.randn(shape, generator=gen) * shape[1] ** -0.5
    return W


# ---- standard attention, twice ---------------------------------------------------------------

def heads(cfg):
    return (cfg[k] for k in ("num_attention_heads", "num_key_value_heads", "qk_nope_head_dim",
                             "qk_rope_head_dim", "v_head_dim"))


def rotate_last(x, dn, pos, inv, scale):
    """RoPE on the last columns of every head of x [T, heads, dn + dr]."""
    return torch.cat([x[..., :dn], g.rope(x[..., dn:], pos, inv, scale)], -1)


def qkv(a, W, cfg, tables, pre):
    T = a.shape[0]
    nh, ng, dn, dr, dv = heads(cfg)
    inv, scale, _ = tables
    pos = torch.arange(T)
    q = rotate_last((a @ W[pre + "q_proj.weight"].T).view(T, nh, dn + dr), dn, pos, inv, scale)
    k = rotate_last((a @ W[pre + "k_proj.weight"].T).view(T, ng, dn + dr), dn, pos, inv, scale)
    v = (a @ W[pre + "v_proj.weight"].T).view(T, ng, dv)
    return q, k, v


def attention(a, W, cfg, tables, pre):
    """From the formulas: s_{h,t,j} = σ q_{t,h}·k_{j,g(h)}, causal softmax, o = Σ p v."""
    T = a.shape[0]
    nh, ng, _, _, dv = heads(cfg)
    q, k, v = qkv(a, W, cfg, tables, pre)
    group = torch.arange(nh) // (nh // ng)                 # g(h)
    s = tables[2] * torch.einsum("thd,jhd->htj", q, k[:, group])
    s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    o = torch.einsum("htj,jhd->thd", s.softmax(-1), v[:, group]).reshape(T, nh * dv)
    return o @ W[pre + "o_proj.weight"].T


def attention_sdpa(a, W, cfg, tables, pre):
    """The same through PyTorch's fused attention, keys and values repeated per group."""
    T = a.shape[0]
    nh, ng, _, _, dv = heads(cfg)
    q, k, v = qkv(a, W, cfg, tables, pre)
    k, v = k.repeat_interleave(nh // ng, 1), v.repeat_interleave(nh // ng, 1)
    o = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), is_causal=True, scale=tables[2])
    return o.transpose(0, 1).reshape(T, nh * dv) @ W[pre + "o_proj.weight"].T


def model_loss(W, cfg, tokens, targets, opt, margins):
    tables, eps = g.rope_tables(cfg), cfg["rms_norm_eps"]
    h = W["model.embed_tokens.weight"][tokens]
    bal, dropped = torch.zeros(()), 0
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = h + attention(g.rms_norm(h, W[p + "input_layernorm.weight"], eps), W, cfg, tables, p + "self_attn.")
        b = g.rms_norm(h, W[p + "post_attention_layernorm.weight"], eps)
        if g.is_moe(cfg, l):
            y, s, idx, keep = g.moe(b, W, cfg, p + "mlp.", opt["capacity_factor"], margins)
            bal = bal + g.balance(s, idx, cfg, opt)
            dropped += int((~keep).sum())
        else:
            y = g.swiglu(b, W[p + "mlp.gate_proj.weight"], W[p + "mlp.up_proj.weight"],
                         W[p + "mlp.down_proj.weight"])
        h = h + y
    logits = g.rms_norm(h, W["model.norm.weight"], eps) @ W["lm_head.weight"].T
    ce = torch.nn.functional.cross_entropy(logits, targets)
    return ce + bal, ce, bal, dropped


def write_checkpoint(name, cfg, W):
    d = os.path.join(GOLDEN, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    save_file({k: v.contiguous() for k, v in W.items()}, os.path.join(d, "model.safetensors"))


def fixture(name, seed, meta):
    cfg, opt = CONFIGS[name], OPTIONS[name]
    W = random_weights(cfg, seed)
    tables = g.rope_tables(cfg)
    out = {}
    # layer 0's attention on fresh random inputs
    gen = torch.Generator().manual_seed(seed + 1)
    pre = "model.layers.0.self_attn."
    Wa = {k: v.clone().requires_grad_(True) for k, v in W.items() if k.startswith(pre)}
    a = (torch.rand(9, cfg["hidden_size"], generator=gen) * 2 - 1).requires_grad_(True)
    dout = torch.rand(9, cfg["hidden_size"], generator=gen) * 2 - 1
    y = attention(a, Wa, cfg, tables, pre)
    with torch.no_grad():
        y2 = attention_sdpa(a, Wa, cfg, tables, pre)
    two_ways = float((y.detach() - y2).norm() / y2.norm())
    if two_ways > 1e-6:
        raise SystemExit(f"{name}: the two attention implementations differ by {two_ways:.3g}")
    (y * dout).sum().backward()
    out.update({"attn.a": a.detach(), "attn.dout": dout, "attn.out": y.detach(), "attn.da": a.grad})
    out.update({"attn.grad." + k[len(pre):]: v.grad for k, v in Wa.items()})
    # the whole model
    for s in range(100, 200):
        gen = torch.Generator().manual_seed(s)
        ids = torch.randint(0, cfg["vocab_size"], (opt["T"] + 1,), generator=gen)
        margins = g.Margins()
        params = {k: v.clone().requires_grad_(True) for k, v in W.items()}
        loss, ce, bal, dropped = model_loss(params, cfg, ids[:-1], ids[1:], opt, margins)
        if margins.smallest > g.MARGIN and (opt["capacity_factor"] == 0 or dropped > 0):
            break
    else:
        raise SystemExit(f"{name}: no seed without near-ties")
    loss.backward()
    out.update({"grad." + k: (v.grad if v.grad is not None else torch.zeros_like(v)) for k, v in params.items()})
    out.update({"tokens": ids[:-1].float(), "targets": ids[1:].float(), "loss": loss.detach().reshape(1),
                "balance": bal.detach().reshape(1), "dropped": torch.tensor([float(dropped)])})
    write_checkpoint(name, cfg, W)
    save_file({k: v.float().contiguous() for k, v in out.items()}, os.path.join(OUT, f"attn_{name}.safetensors"))
    meta[name] = dict(opt, weight_seed=seed, token_seed=s, margin=margins.smallest, loss=loss.item(),
                      dropped=dropped, einsum_vs_sdpa=two_ways)


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    meta = {"generator": "tools/make_attn_golden.py", "torch": torch.__version__}
    for i, name in enumerate(CONFIGS):
        fixture(name, 40 + 10 * i, meta)
    with open(os.path.join(OUT, "attn.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
