#!/usr/bin/env python3
"""Golden fixtures for the C reference, made with Hugging Face transformers' DeepSeek-V2.

Each fixture is a small random model in the released checkpoint format
(config.json in the layout DeepSeek ships, bf16 safetensors with per-expert
tensor names, optionally sharded through model.safetensors.index.json) and
`expected.safetensors` holding what transformers computes in float32 on those
bf16-rounded weights:

  prompt_ids  F32 [T]          the prompt (ids are exact in float32)
  logits      F32 [T, vocab]   logits at every prompt position
  greedy_ids  F32 [16]         a 16-token greedy continuation made with the KV cache

The generator follows docs/semantics.md §0: it refuses a transformers whose attention lacks
the YaRN m² softmax factor (checked numerically against the formula), and it
rejects seeds whose routing or greedy choices are near-ties. It also refuses a
transformers whose latent norms (q_a_layernorm, kv_a_layernorm) take an ε other
than 1e-6, the premise of the `eps` fixture (rms_norm_eps = 0.01 elsewhere).

Two kinds of weights. `lite`, `norope` and `eps` are random (init_weights): logits
near uniform, the hardest case for float32 equivalence. `v2` and `longctx` are
then trained for a few hundred steps on a synthetic Markov chain (train_chain),
so that, like a released checkpoint, they predict with margins that bf16
activations preserve: on the random versions of these two configurations,
whose top-1 gaps and routing margins sit below bf16's resolution and whose
expert outputs are scaled up to 16×, transformers' own bfloat16 run agreed with
its float32 run on 23 of 28 positions (v2, each of three seeds) and 85 of 96
(longctx), and on about 92 % with smaller random weights, so a bf16 test there
measured the fixture, not the code. A trained fixture's prompt is drawn from the chain.

fixture.json also records how often transformers itself, run in bfloat16 on the
same weights, picks the float32 run's top-1 token over the teacher-forced
prompt + continuation (`transformers_bf16_top1` of `positions`). That is the
agreement an independent bf16 implementation can expect; a seed where it is
below BF16_TOP1 (95 %) is rejected like a near-tie, since the fast path's bf16
test (tests/test_fast_model.c) holds every fixture to 95 %.

Run from the repository root:  python3 tools/make_golden.py [NAME ...]   (needs torch, transformers,
safetensors; no names: every fixture)
"""
import copy
import json
import math
import os
import shutil
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import DeepseekV2Config, DeepseekV2ForCausalLM

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "golden")
N_GREEDY = 16
TIE_MARGIN = 1e-6        # routing: K-th vs (K+1)-th score, group ranks (docs/semantics.md §0)
ARGMAX_MARGIN = 1e-4     # greedy: top-1 vs top-2 logit
BF16_TOP1 = 0.95         # transformers in bf16 must pick its float32 top-1 on this share of positions

BASE = dict(
    vocab_size=512, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
    num_key_value_heads=4, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8,
    v_head_dim=12, intermediate_size=96, moe_intermediate_size=32, n_routed_experts=8,
    n_shared_experts=2, num_experts_per_tok=2, first_k_dense_replace=1, moe_layer_freq=1,
    norm_topk_prob=False, scoring_func="softmax", rms_norm_eps=1e-6, rope_theta=10000.0,
    max_position_embeddings=4096, bos_token_id=0, eos_token_id=1, tie_word_embeddings=False,
    attention_bias=False, hidden_act="silu",
)

TRAIN_STEPS = 600        # AdamW steps on the chain for the trained fixtures
TRAIN_BATCH = 16
CHAIN_NOISE = 0.1        # the chain's chance of leaving the usual successor for a uniform token

# name -> (config overrides, prompt length, shards, config layout, trained)
FIXTURES = {
    # (a) V2-Lite-like: no query compression, greedy routing, first layer dense, YaRN s=40, mscale 0.707
    "lite": (dict(q_lora_rank=None, topk_method="greedy", n_group=1, topk_group=1,
                  routed_scaling_factor=1.0,
                  rope_scaling=dict(type="yarn", factor=40.0, original_max_position_embeddings=4096,
                                    beta_fast=32, beta_slow=1, mscale=0.707, mscale_all_dim=0.707)),
             12, 1, "released", False),
    # (b) V2-like: query compression, group_limited_greedy 4 groups keep 2, scale 16, two shards
    "v2": (dict(q_lora_rank=48, topk_method="group_limited_greedy", n_group=4, topk_group=2,
                num_experts_per_tok=3, routed_scaling_factor=16.0,
                rope_scaling=dict(type="yarn", factor=40.0, original_max_position_embeddings=4096,
                                  beta_fast=32, beta_slow=1, mscale=0.707, mscale_all_dim=0.707)),
           12, 2, "released", True),
    # (c) plain RoPE, no rope_scaling; config.json as transformers >= 5 writes it
    "norope": (dict(q_lora_rank=40, topk_method="greedy", n_group=1, topk_group=1,
                    routed_scaling_factor=1.0, rope_scaling=None),
               10, 1, "transformers", False),
    # (d) a prompt longer than a small original context, so YaRN's frequency blend matters
    "longctx": (dict(q_lora_rank=None, topk_method="group_limited_greedy", n_group=2, topk_group=1,
                     routed_scaling_factor=2.0, max_position_embeddings=128,
                     rope_scaling=dict(type="yarn", factor=4.0, original_max_position_embeddings=32,
                                       beta_fast=32, beta_slow=1, mscale=1.0, mscale_all_dim=0.8)),
                80, 1, "released", True),
    # (e) rms_norm_eps = 0.01: the residual-stream norms use it, the latent norms on c^Q and c^KV keep
    #     the RMSNorm default 1e-6 (transformers and DeepSeek's code build them without the config's ε)
    "eps": (dict(vocab_size=256, num_hidden_layers=2, rms_norm_eps=0.01, q_lora_rank=24,
                 topk_method="greedy", n_group=1, topk_group=1, routed_scaling_factor=1.0,
                 rope_scaling=None),
            8, 1, "released", False),
}


def yarn_mscale(s, c):
    return 1.0 if s <= 1 else 0.1 * c * math.log(s) + 1.0


def init_weights(model, gen):
    """Random weights large enough that logits, routing and attention are far from uniform."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("mlp.gate.weight"):
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = p.shape[-1]
                p.copy_(torch.randn(p.shape, generator=gen) * (1.5 / math.sqrt(fan_in)))
        # round to bf16, as released checkpoints are stored
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).to(torch.float32))


class MarkovChain:
    """Token sequences where each token is usually followed by its own fixed successor (ids ≥ 2; 0, 1 are BOS/EOS)."""

    def __init__(self, vocab, gen):
        self.vocab, self.gen = vocab, gen
        self.succ = torch.cat([torch.zeros(2, dtype=torch.long), torch.randperm(vocab - 2, generator=gen) + 2])

    def sample(self, n, length):
        x = torch.empty(n, length, dtype=torch.long)
        x[:, 0] = torch.randint(2, self.vocab, (n,), generator=self.gen)
        for t in range(1, length):
            jump = torch.rand(n, generator=self.gen) < CHAIN_NOISE
            x[:, t] = torch.where(jump, torch.randint(2, self.vocab, (n,), generator=self.gen), self.succ[x[:, t - 1]])
        return x


def train_chain(model, chain, length):
    """TRAIN_STEPS of next-token training on the chain (float32, AdamW), then the bf16 rounding of init_weights."""
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    for _ in range(TRAIN_STEPS):
        x = chain.sample(TRAIN_BATCH, length)
        loss = model(x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).to(torch.float32))
    return loss.item()


def check_softmax_scale(model, cfg):
    """docs/semantics.md §0: refuse a transformers whose attention lacks m² (PR #47435), checked numerically."""
    attn = model.model.layers[0].self_attn
    dq = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim
    want = dq ** -0.5
    rs = cfg.rope_parameters if getattr(cfg, "rope_parameters", None) else None
    if rs and rs.get("rope_type", "default") != "default" and rs.get("mscale_all_dim"):
        want *= yarn_mscale(rs["factor"], rs["mscale_all_dim"]) ** 2
    # functional check: a 2-token input through layer 0's attention vs the σ formula
    torch.manual_seed(0)
    x = torch.randn(1, 2, cfg.hidden_size)
    pos = torch.arange(2)[None]
    pe = model.model.rotary_emb(x, pos)
    causal = torch.triu(torch.full((2, 2), float("-inf")), 1)
    got, _ = attn(x, attention_mask=causal[None, None], position_embeddings=pe)
    # manual: recompute with an explicit σ
    q = attn.q_proj(x) if attn.q_proj is not None else attn.q_b_proj(attn.q_a_layernorm(attn.q_a_proj(x)))
    q = q.view(1, 2, -1, dq).transpose(1, 2)
    q_nope, q_pe = q.split([cfg.qk_nope_head_dim, cfg.qk_rope_head_dim], -1)
    ckv = attn.kv_a_proj_with_mqa(x)
    c, k_pe = ckv.split([cfg.kv_lora_rank, cfg.qk_rope_head_dim], -1)
    c = attn.kv_a_layernorm(c)
    from transformers.models.deepseek_v2.modeling_deepseek_v2 import apply_rotary_emb
    q_pe, k_pe = apply_rotary_emb(q_pe, k_pe.view(1, 1, 2, -1), pe)
    kv = attn.kv_b_proj(c).view(1, 2, -1, cfg.qk_nope_head_dim + cfg.v_head_dim).transpose(1, 2)
    k_nope, v = kv.split([cfg.qk_nope_head_dim, cfg.v_head_dim], -1)
    k = torch.cat([k_nope, k_pe.expand(-1, k_nope.shape[1], -1, -1)], -1)
    qq = torch.cat([q_nope, q_pe], -1)
    s = (qq @ k.transpose(-1, -2)) * want
    s = s + causal
    o = (s.softmax(-1) @ v).transpose(1, 2).reshape(1, 2, -1)
    manual = attn.o_proj(o)
    err = (manual - got).abs().max().item()
    if err > 1e-4:
        sys.exit(f"transformers {transformers.__version__}: attention does not match the softmax "
                 f"scale d_q^-1/2·m² = {want:.8f} (max error {err:.3g}); it predates PR #47435")


def routing_margins(model, cfg, ids):
    """Smallest routing margin over all MoE layers and tokens (docs/semantics.md §0 near-tie rule)."""
    captured = []
    hooks = [layer.mlp.gate.register_forward_hook(lambda m, i, o: captured.append(o[0].detach()))
             for layer in model.model.layers if hasattr(layer.mlp, "gate")]
    with torch.no_grad():
        model(ids)
    for h in hooks:
        h.remove()
    worst = float("inf")
    E, K = cfg.n_routed_experts, cfg.num_experts_per_tok
    for logits in captured:
        s = logits.float().softmax(-1)
        if cfg.topk_method == "group_limited_greedy":
            G = cfg.n_group
            gs = s.view(-1, G, E // G).max(-1).values.sort(-1, descending=True).values
            worst = min(worst, (gs[:, cfg.topk_group - 1] - gs[:, cfg.topk_group]).min().item())
            keep = s.view(-1, G, E // G).max(-1).values.topk(cfg.topk_group, -1).indices
            mask = torch.zeros(s.shape[0], G).scatter_(1, keep, 1.0).repeat_interleave(E // G, 1)
            s = s * mask
        top = s.sort(-1, descending=True).values
        worst = min(worst, (top[:, K - 1] - top[:, K]).min().item())
    return worst


def bf16_top1(model, ids):
    """Teacher-forced top-1 agreement of transformers in bfloat16 with float32, over every position of ids."""
    with torch.no_grad():
        want = model(ids).logits[0].float().argmax(-1)
        got = copy.deepcopy(model).to(torch.bfloat16)(ids).logits[0].float().argmax(-1)
    return int((got == want).sum().item()), int(ids.shape[1])


def save_released_layout(model, cfg, out_dir, shards, layout):
    """bf16 safetensors with DeepSeek's per-expert names, and config.json in the chosen layout."""
    sd = {}
    for name, t in model.state_dict().items():
        if name.endswith("mlp.experts.gate_up_proj"):
            pre = name[: -len("gate_up_proj")]
            for e in range(t.shape[0]):
                gate, up = t[e].chunk(2, 0)
                sd[f"{pre}{e}.gate_proj.weight"] = gate
                sd[f"{pre}{e}.up_proj.weight"] = up
        elif name.endswith("mlp.experts.down_proj"):
            pre = name[: -len("down_proj")]
            for e in range(t.shape[0]):
                sd[f"{pre}{e}.down_proj.weight"] = t[e]
        else:
            sd[name] = t
    sd = {k: v.to(torch.bfloat16).contiguous() for k, v in sd.items()}
    names = sorted(sd)
    if shards == 1:
        save_file(sd, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    else:
        # DeepSeek names shards with a 6-digit total: model-00001-of-000002.safetensors
        per = math.ceil(len(names) / shards)
        weight_map = {}
        for i in range(shards):
            part = names[i * per:(i + 1) * per]
            fname = f"model-{i + 1:05d}-of-{shards:06d}.safetensors"
            save_file({k: sd[k] for k in part}, os.path.join(out_dir, fname), metadata={"format": "pt"})
            weight_map.update({k: fname for k in part})
        total = sum(v.numel() * 2 for v in sd.values())
        with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    c = json.loads(cfg.to_json_string())
    if layout == "released":
        rp = c.pop("rope_parameters", None) or {}
        c["rope_theta"] = rp.get("rope_theta", 10000.0)
        if rp.get("rope_type", "default") == "default":
            c["rope_scaling"] = None
        else:
            c["rope_scaling"] = {k: rp[k] for k in ("type", "factor", "original_max_position_embeddings",
                                                   "beta_fast", "beta_slow", "mscale", "mscale_all_dim")}
            c["rope_scaling"]["type"] = "yarn"
        for k in ("head_dim", "qk_head_dim", "output_router_logits", "mlp_bias", "use_cache"):
            c.pop(k, None)
        c["architectures"] = ["DeepseekV2ForCausalLM"]
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(c, f, indent=2, sort_keys=True)


def check_latent_eps(model):
    """The fixture (e) premise: the latent norms ignore rms_norm_eps (transformers builds them with 1e-6)."""
    attn = model.model.layers[0].self_attn
    eps = [m.variance_epsilon for m in (attn.kv_a_layernorm, attn.q_a_layernorm) if m is not None]
    if any(e != 1e-6 for e in eps):
        sys.exit(f"transformers {transformers.__version__}: latent norm eps {eps}, expected 1e-6")


def make(name, overrides, T, shards, layout, trained):
    for seed in range(100):
        cfg = DeepseekV2Config(**{**BASE, **overrides})
        cfg._attn_implementation = "eager"
        gen = torch.Generator().manual_seed(1000 + seed)
        torch.manual_seed(1000 + seed)
        model = DeepseekV2ForCausalLM(cfg).float().eval()
        init_weights(model, gen)
        check_softmax_scale(model, cfg)
        check_latent_eps(model)
        if trained:
            chain = MarkovChain(cfg.vocab_size, gen)
            loss = train_chain(model, chain, T + N_GREEDY + 1)
            print(f"{name}: seed {seed} trained {TRAIN_STEPS} steps, final loss {loss:.3f}")
            ids = chain.sample(1, T)
        else:
            ids = torch.randint(2, cfg.vocab_size, (1, T), generator=gen)
        with torch.no_grad():
            logits = model(ids).logits[0].float()
            out = model.generate(ids, max_new_tokens=N_GREEDY, do_sample=False, use_cache=True,
                                 eos_token_id=None, pad_token_id=0)
            greedy = out[0, T:]
            # argmax margins along the continuation (teacher-forced on the greedy tokens)
            full = model(out).logits[0, T - 1:-1].float()
        margin = routing_margins(model, cfg, out)   # prompt and continuation
        top2 = full.topk(2, -1).values
        amargin = (top2[:, 0] - top2[:, 1]).min().item()
        bf16_agree, positions = bf16_top1(model, out)
        if margin >= TIE_MARGIN and amargin >= ARGMAX_MARGIN and bf16_agree >= BF16_TOP1 * positions:
            break
        print(f"{name}: seed {seed} rejected (routing margin {margin:.3g}, argmax margin {amargin:.3g}, "
              f"bf16 top-1 {bf16_agree}/{positions})")
    else:
        sys.exit(f"{name}: no seed without near-ties")
    out_dir = os.path.join(OUT, name)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    save_released_layout(model, cfg, out_dir, shards, layout)
    save_file({"prompt_ids": ids[0].float().contiguous(), "logits": logits.contiguous(),
               "greedy_ids": greedy.float().contiguous()},
              os.path.join(out_dir, "expected.safetensors"))
    with open(os.path.join(out_dir, "fixture.json"), "w") as f:
        json.dump({"generator": "tools/make_golden.py", "seed": 1000 + seed,
                   "torch": torch.__version__, "transformers": transformers.__version__,
                   "trained_steps": TRAIN_STEPS if trained else 0,
                   "routing_margin": margin, "argmax_margin": amargin,
                   "transformers_bf16_top1": bf16_agree, "positions": positions,
                   "prompt_tokens": T, "shards": shards, "config_layout": layout}, f, indent=2)
    print(f"{name}: seed {1000 + seed}, routing margin {margin:.3g}, argmax margin {amargin:.3g}, "
          f"|logits| max {logits.abs().max():.3g}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    wanted = sys.argv[1:] or list(FIXTURES)     # e.g. `make_golden.py eps` remakes one fixture
    unknown = [n for n in wanted if n not in FIXTURES]
    if unknown:
        sys.exit(f"unknown fixture(s) {unknown}; known: {list(FIXTURES)}")
    for name in wanted:
        make(name, *FIXTURES[name])
