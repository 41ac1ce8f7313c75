#!/usr/bin/env python3
"""PyTorch autograd fixtures for the C backward pass (ref/*_backward, ref/train_model.c).

The PyTorch side is written here from the paper's formulas (DeepSeek-V2 §2.1–2.2, eqs. 1–31)
and docs/semantics.md, on plain tensors: RMSNorm, bias-free linear maps, decoupled RoPE on
adjacent pairs (as complex multiplication) with YaRN, MLA in the expanded form with a causal
mask, SwiGLU, the softmax router with greedy or group-limited top-K, the three balance losses,
device-level token dropping, and mean cross-entropy. Autograd gives every gradient. It is not
transformers' DeepseekV2 model: that model's MoE has no token dropping and no device-level
losses, so it cannot state the training loss the C computes. Instead, before anything is written,
this model's inference logits on each golden checkpoint's prompt must match the transformers
logits stored beside it (expected.safetensors) within 1e-5 relative: the same function.

Writes, under tests/golden/grad/:
  components.safetensors  per-component inputs, upstream gradients and autograd results
                          (names "<component>.<tensor>", all F32; integer ids stored exactly)
  model_v2.safetensors    whole-model fixture on tests/golden/v2 (q compression, 4 groups,
  model_lite.safetensors  group-limited routing, YaRN, dropping) and tests/golden/lite (no q
                          compression, greedy routing): tokens, targets, loss figures and the
                          gradient of every weight under the checkpoint's own tensor name
  adamw.safetensors       torch.optim.AdamW + clip_grad_norm_ on fixed gradients: initial
                          parameters, gradients [steps, n], parameters after each step under the
                          warmup + cosine and the warmup + step schedules
  train_v2.safetensors    a 20-step reference training run on each golden checkpoint (AdamW,
  train_lite.safetensors  warmup + cosine, clipping): the token sequence of each step, the loss
                          and the gradient norm before each update
  grad.json               seeds, options and the routing / dropping margins checked below

Before writing, every fixture is checked for near-ties: the K-th vs (K+1)-th selection score,
the kept vs dropped groups, and the dropped vs kept assignment on an over-budget device must
differ by more than 1e-5, so float32 rounding cannot flip a discrete choice between C and
PyTorch; otherwise the next seed is tried.
Run: python3 tools/make_grad_golden.py
"""
import json
import math
import os

import torch
from safetensors.torch import load_file, save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "golden", "grad")
MARGIN = 1e-5
OPTIONS = {  # the TrainOptions each whole-model fixture uses
    "v2": {"alpha1": 0.003, "alpha2": 0.05, "alpha3": 0.02, "capacity_factor": 1.0, "T": 16},
    "lite": {"alpha1": 0.001, "alpha2": 0.0, "alpha3": 0.0, "capacity_factor": 0.0, "T": 12},
}


class Margins:
    """The smallest gap seen between a discrete choice and its runner-up."""
    def __init__(self):
        self.smallest = math.inf

    def see(self, gap):
        self.smallest = min(self.smallest, float(gap))


# ---- components, written from the formulas -------------------------------------------------

def rms_norm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def yarn_factor(s, c):
    return 1.0 if s <= 1 else 0.1 * c * math.log(s) + 1.0


def rope_tables(cfg):
    """θ_i after YaRN's blend, the cos/sin factor and σ, from config.json."""
    d, theta = cfg["qk_rope_head_dim"], cfg["rope_theta"]
    base = theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d)
    inv = 1.0 / base
    sigma = (cfg["qk_nope_head_dim"] + d) ** -0.5
    scale = 1.0
    ys = cfg.get("rope_scaling")
    if ys:
        s, l0 = ys["factor"], ys["original_max_position_embeddings"]

        def dim_of(rot):  # the pair index completing `rot` turns within l0
            return d * math.log(l0 / (rot * 2 * math.pi)) / (2 * math.log(theta))
        lo = max(math.floor(dim_of(ys["beta_fast"])), 0)
        hi = min(math.ceil(dim_of(ys["beta_slow"])), d - 1)
        if lo == hi:
            hi += 0.001
        ramp = ((torch.arange(d // 2, dtype=torch.float32) - lo) / (hi - lo)).clamp(0, 1)
        inv = (1.0 / (s * base)) * ramp + inv * (1 - ramp)
        scale = yarn_factor(s, ys["mscale"]) / yarn_factor(s, ys["mscale_all_dim"])
        if ys["mscale_all_dim"]:
            sigma *= yarn_factor(s, ys["mscale_all_dim"]) ** 2
    return inv, scale, sigma


def rope(x, pos, inv, scale):
    """Rotate pairs (x_2i, x_2i+1) by pos·θ_i: multiply the complex number x_2i + i x_2i+1."""
    ang = pos.float()[:, None] * inv[None, :]                        # [T, d/2]
    rot = torch.polar(torch.full_like(ang, scale), ang)
    shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (ang.shape[1],)
    z = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2).contiguous())
    return torch.view_as_real(z * rot.view(shape)).reshape(x.shape)


def mla(a, W, cfg, tables, pre):
    T = a.shape[0]
    nh, dn, dr, dv, dc = (cfg[k] for k in ("num_attention_heads", "qk_nope_head_dim",
                                             "qk_rope_head_dim", "v_head_dim", "kv_lora_rank"))
    inv, scale, sigma = tables
    eps = cfg["rms_norm_eps"]
    pos = torch.arange(T)
    if cfg["q_lora_rank"]:
        c_q = rms_norm(a @ W[pre + "q_a_proj.weight"].T, W[pre + "q_a_layernorm.weight"], eps)
        q = c_q @ W[pre + "q_b_proj.weight"].T
    else:
        q = a @ W[pre + "q_proj.weight"].T
    q = q.view(T, nh, dn + dr)
    q_n, q_r = q[..., :dn], rope(q[..., dn:], pos, inv, scale)
    kv = a @ W[pre + "kv_a_proj_with_mqa.weight"].T
    c_kv = rms_norm(kv[:, :dc], W[pre + "kv_a_layernorm.weight"], eps)   # ĉ_t
    k_r = rope(kv[:, dc:], pos, inv, scale)                              # k^R_t, shared by heads
    kvb = (c_kv @ W[pre + "kv_b_proj.weight"].T).view(T, nh, dn + dv)
    k_n, v = kvb[..., :dn], kvb[..., dn:]
    s = sigma * (torch.einsum("thd,jhd->htj", q_n, k_n) + torch.einsum("thd,jd->htj", q_r, k_r))
    s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    o = torch.einsum("htj,jhd->thd", s.softmax(-1), v).reshape(T, nh * dv)
    return o @ W[pre + "o_proj.weight"].T


def swiglu(x, gate, up, down):
    z = x @ gate.T
    return (z * torch.sigmoid(z) * (x @ up.T)) @ down.T


def route(s, cfg, margins):
    """The chosen experts of each token (no gradient): greedy or group-limited top-K."""
    E, K, G, M = (cfg[k] for k in ("n_routed_experts", "num_experts_per_tok", "n_group", "topk_group"))
    sel = s.detach().clone()
    if cfg["topk_method"] == "group_limited_greedy":
        best = sel.view(-1, G, E // G).max(-1).values
        ranked = best.sort(-1, descending=True).values
        margins.see((ranked[:, M - 1] - ranked[:, M]).min())
        kept = best.topk(M, -1).indices
        mask = torch.zeros_like(best).scatter_(1, kept, 1.0).repeat_interleave(E // G, 1)
        sel = sel * mask                                    # other groups' scores become 0
    ranked = sel.sort(-1, descending=True).values
    margins.see((ranked[:, K - 1] - ranked[:, K]).min())
    return sel.topk(K, -1).indices


def routing_weights(s, idx, cfg):
    g = s.gather(1, idx)
    if cfg["norm_topk_prob"] and idx.shape[1] > 1:
        return g / (g.sum(-1, keepdim=True) + 1e-20)
    return g * cfg["routed_scaling_factor"]


def dropping(idx, g, cfg, cf, margins):
    """Device-level token dropping: on a device over its budget ceil(cf·T·K/D), the
    lowest-weight assignments go. Returns keep [T, K] (bool)."""
    T, K = idx.shape
    G, E = cfg["n_group"], cfg["n_routed_experts"]
    keep = torch.ones(T, K, dtype=torch.bool)
    if cf <= 0:
        return keep
    budget = math.ceil(cf * T * K / G)
    dev = idx // (E // G)
    w = g.detach()
    for d in range(G):
        on = (dev == d).nonzero()
        if len(on) <= budget:
            continue
        vals = w[on[:, 0], on[:, 1]]
        order = vals.argsort()
        n_drop = len(on) - budget
        margins.see(vals[order[n_drop]] - vals[order[n_drop - 1]])
        for r in order[:n_drop]:
            keep[on[r, 0], on[r, 1]] = False
    return keep


def balance(s, idx, cfg, opt):
    """L_ExpBal + L_DevBal + L_CommBal of one sequence (eqs. 23–31), devices = n_group."""
    T, K = idx.shape
    E, D, M = cfg["n_routed_experts"], cfg["n_group"], cfg["topk_group"]
    count = torch.zeros(E).index_add_(0, idx.reshape(-1), torch.ones(idx.numel()))
    f = count * E / (K * T)
    P = s.mean(0)
    f_dev = f.view(D, -1).mean(-1)
    P_dev = P.view(D, -1).sum(-1)
    sent = torch.zeros(T, D).scatter_(1, idx // (E // D), 1.0)
    f_comm = sent.sum(0) * D / (M * T)
    return (opt["alpha1"] * (f * P).sum() + opt["alpha2"] * (f_dev * P_dev).sum()
            + opt["alpha3"] * (f_comm * P_dev).sum())


def moe(x, W, cfg, pre, keep_opt, margins, given_keep=None):
    """Returns (y, s, idx, keep): routed experts on kept pairs, plus the shared experts."""
    E = cfg["n_routed_experts"]
    s = (x @ W[pre + "gate.weight"].T).softmax(-1)          # s_{i,t}
    idx = route(s, cfg, margins)
    g = routing_weights(s, idx, cfg)
    keep = given_keep if given_keep is not None else dropping(idx, g, cfg, keep_opt, margins)
    y = torch.zeros_like(x)
    for e in range(E):
        t, k = ((idx == e) & keep).nonzero(as_tuple=True)
        if len(t) == 0:
            continue
        ep = f"{pre}experts.{e}."
        out = swiglu(x[t], W[ep + "gate_proj.weight"], W[ep + "up_proj.weight"], W[ep + "down_proj.weight"])
        y = y.index_add(0, t, g[t, k][:, None] * out)
    if cfg["n_shared_experts"]:
        sp = pre + "shared_experts."
        y = y + swiglu(x, W[sp + "gate_proj.weight"], W[sp + "up_proj.weight"], W[sp + "down_proj.weight"])
    return y, s, idx, keep


def is_moe(cfg, l):
    return (cfg["n_routed_experts"] and l >= cfg["first_k_dense_replace"]
            and l % cfg["moe_layer_freq"] == 0)


def model_loss(W, cfg, tokens, targets, opt, margins):
    tables = rope_tables(cfg)
    eps = cfg["rms_norm_eps"]
    h = W["model.embed_tokens.weight"][tokens]
    bal, dropped = torch.zeros(()), 0
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = h + mla(rms_norm(h, W[p + "input_layernorm.weight"], eps), W, cfg, tables, p + "self_attn.")
        b = rms_norm(h, W[p + "post_attention_layernorm.weight"], eps)
        if is_moe(cfg, l):
            y, s, idx, keep = moe(b, W, cfg, p + "mlp.", opt["capacity_factor"], margins)
            bal = bal + balance(s, idx, cfg, opt)
            dropped += int((~keep).sum())
        else:
            y = swiglu(b, W[p + "mlp.gate_proj.weight"], W[p + "mlp.up_proj.weight"],
                       W[p + "mlp.down_proj.weight"])
        h = h + y
    logits = rms_norm(h, W["model.norm.weight"], eps) @ W["lm_head.weight"].T
    ce = torch.nn.functional.cross_entropy(logits, targets)
    return ce + bal, ce, bal, dropped


def load_checkpoint(name):
    d = os.path.join(ROOT, "tests", "golden", name)
    cfg = json.load(open(os.path.join(d, "config.json")))
    W = {}
    for f in sorted(os.listdir(d)):
        if f.startswith("model") and f.endswith(".safetensors"):
            W.update({k: v.float() for k, v in load_file(os.path.join(d, f)).items()})
    return cfg, W


def logits_of(W, cfg, ids):
    """The model's logits (inference: no dropping), for the check against transformers."""
    tables, eps, margins = rope_tables(cfg), cfg["rms_norm_eps"], Margins()
    h = W["model.embed_tokens.weight"][ids]
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = h + mla(rms_norm(h, W[p + "input_layernorm.weight"], eps), W, cfg, tables, p + "self_attn.")
        b = rms_norm(h, W[p + "post_attention_layernorm.weight"], eps)
        if is_moe(cfg, l):
            h = h + moe(b, W, cfg, p + "mlp.", 0, margins)[0]
        else:
            h = h + swiglu(b, W[p + "mlp.gate_proj.weight"], W[p + "mlp.up_proj.weight"],
                           W[p + "mlp.down_proj.weight"])
    return rms_norm(h, W["model.norm.weight"], eps) @ W["lm_head.weight"].T


def agrees_with_transformers(name, cfg, W):
    """This file's model against transformers' logits stored with the golden checkpoint
    (tests/golden/<name>/expected.safetensors): the same function, written independently."""
    exp = load_file(os.path.join(ROOT, "tests", "golden", name, "expected.safetensors"))
    with torch.no_grad():
        got = logits_of(W, cfg, exp["prompt_ids"].long())
    rel = float((got - exp["logits"]).norm() / exp["logits"].norm())
    if rel > 1e-5:
        raise SystemExit(f"{name}: this model's logits differ from transformers' by {rel:.3g}")
    return rel


def whole_model(name, meta):
    cfg, W = load_checkpoint(name)
    opt = OPTIONS[name]
    vs_transformers = agrees_with_transformers(name, cfg, W)
    for seed in range(100, 200):
        gen = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, cfg["vocab_size"], (opt["T"] + 1,), generator=gen)
        margins = Margins()
        params = {k: v.clone().requires_grad_(True) for k, v in W.items()}
        loss, ce, bal, dropped = model_loss(params, cfg, ids[:-1], ids[1:], opt, margins)
        if margins.smallest > MARGIN and (opt["capacity_factor"] == 0 or dropped > 0):
            break
    else:
        raise SystemExit(f"{name}: no seed without near-ties")
    loss.backward()
    # an expert no token reached gets no .grad: its gradient is zero
    out = {"grad." + k: (v.grad if v.grad is not None else torch.zeros_like(v)).contiguous()
           for k, v in params.items()}
    out.update({"tokens": ids[:-1].float(), "targets": ids[1:].float(),
                "loss": loss.detach().reshape(1), "ce": ce.detach().reshape(1),
                "balance": bal.detach().reshape(1), "dropped": torch.tensor([float(dropped)])})
    save_file(out, os.path.join(OUT, f"model_{name}.safetensors"))
    meta[name] = dict(opt, seed=seed, margin=margins.smallest, loss=loss.item(), dropped=dropped,
                      logits_rel_error_vs_transformers=vs_transformers)


# ---- the optimizer ---------------------------------------------------------------------------

ADAMW = {"lr": 3e-3, "min_lr": 3e-4, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1,
         "clip_norm": 1.0, "warmup_steps": 3, "total_steps": 12}


def schedule(t, c, kind):
    """η_t for step t = 1, 2, …: linear warmup, then cosine to min_lr, or ×0.316 at 60% and 90%."""
    if t <= c["warmup_steps"]:
        return c["lr"] * t / c["warmup_steps"]
    if kind == "step":
        f = t / c["total_steps"]
        return c["lr"] * (0.316 ** 2 if f >= 0.9 else 0.316 if f >= 0.6 else 1.0)
    p = min(1.0, (t - c["warmup_steps"]) / (c["total_steps"] - c["warmup_steps"]))
    return c["min_lr"] + (c["lr"] - c["min_lr"]) * 0.5 * (1 + math.cos(math.pi * p))


def optimizer(meta):
    """torch.optim.AdamW and clip_grad_norm_ on fixed gradients: the parameters after each step."""
    gen = torch.Generator().manual_seed(11)
    shapes = [(40, 16), (16,), (8, 40)]
    params = [torch.nn.Parameter(torch.rand(s, generator=gen) * 2 - 1) for s in shapes]
    n = sum(p.numel() for p in params)
    steps = ADAMW["total_steps"]
    grads = torch.randn(steps, n, generator=gen) * 0.05
    grads[2] *= 100                                       # steps 3 and 8 get clipped
    grads[7] *= 100
    out = {"init": torch.cat([p.detach().reshape(-1) for p in params]), "grads": grads}
    for kind in ("cosine", "step"):
        ps = [torch.nn.Parameter(t.detach().clone()) for t in params]
        opt = torch.optim.AdamW(ps, lr=ADAMW["lr"], betas=(ADAMW["beta1"], ADAMW["beta2"]),
                                eps=ADAMW["eps"], weight_decay=ADAMW["weight_decay"])
        after, lrs, norms = [], [], []
        for t in range(1, steps + 1):
            flat = grads[t - 1].clone()
            off = 0
            for p in ps:
                p.grad = flat[off:off + p.numel()].view_as(p).clone()
                off += p.numel()
            norms.append(float(torch.nn.utils.clip_grad_norm_(ps, ADAMW["clip_norm"])))
            lr = schedule(t, ADAMW, kind)
            for group in opt.param_groups:
                group["lr"] = lr
            opt.step()
            lrs.append(lr)
            after.append(torch.cat([p.detach().reshape(-1) for p in ps]))
        out[f"{kind}.params"] = torch.stack(after)
        out[f"{kind}.lr"] = torch.tensor(lrs)
        out[f"{kind}.norm"] = torch.tensor(norms)
    save_file({k: v.float().contiguous() for k, v in out.items()}, os.path.join(OUT, "adamw.safetensors"))
    meta["adamw"] = dict(ADAMW, n=n)


# ---- a short training run --------------------------------------------------------------------

TRAIN = {"steps": 20, "T": 16, "lr": 2e-3, "min_lr": 2e-4, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8,
         "weight_decay": 0.1, "clip_norm": 1.0, "warmup_steps": 4}


# Twenty steps over 2 MoE layers make hundreds of routing and dropping comparisons, and no seed
# keeps them all 1e-5 apart on v2. After 20 steps the C and PyTorch weights differ by ~1e-7
# relative, so affinities differ by ~1e-8: a 1e-6 margin is still a hundredfold.
TRAIN_MARGIN = 1e-6


def training_run(name, meta):
    """A reference trainer: model_loss, autograd, clip_grad_norm_, torch.optim.AdamW with warmup +
    cosine; one fixed random sequence per step. Every parameter steps every time (a weight no
    token reached gets a zero gradient rather than none, so weight decay applies to it, as in C)."""
    cfg, W = load_checkpoint(name)
    opt = OPTIONS[name]
    c = dict(TRAIN, total_steps=TRAIN["steps"])
    for seed in range(300, 400):
        gen = torch.Generator().manual_seed(seed)
        batches = torch.randint(0, cfg["vocab_size"], (c["steps"], c["T"] + 1), generator=gen)
        params = {k: torch.nn.Parameter(v.clone()) for k, v in W.items()}
        adamw = torch.optim.AdamW(list(params.values()), lr=c["lr"], betas=(c["beta1"], c["beta2"]),
                                  eps=c["eps"], weight_decay=c["weight_decay"])
        margins, losses, norms = Margins(), [], []
        for t in range(1, c["steps"] + 1):
            adamw.zero_grad(set_to_none=False)
            loss = model_loss(params, cfg, batches[t - 1, :-1], batches[t - 1, 1:], opt, margins)[0]
            loss.backward()
            for p in params.values():
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            norms.append(float(torch.nn.utils.clip_grad_norm_(list(params.values()), c["clip_norm"])))
            for group in adamw.param_groups:
                group["lr"] = schedule(t, c, "cosine")
            adamw.step()
            losses.append(loss.item())
        if margins.smallest > TRAIN_MARGIN:
            break
    else:
        raise SystemExit(f"{name}: no training run without near-ties")
    save_file({"batches": batches.float(), "loss": torch.tensor(losses), "norm": torch.tensor(norms)},
              os.path.join(OUT, f"train_{name}.safetensors"))
    meta[f"train_{name}"] = dict(c, seed=seed, margin=margins.smallest, losses=losses)


# ---- per-component fixtures ------------------------------------------------------------------

def leaf(gen, *shape, lo=-1.0, hi=1.0):
    return (torch.rand(*shape, generator=gen) * (hi - lo) + lo).requires_grad_(True)


def components(meta):
    gen = torch.Generator().manual_seed(7)
    out = {}

    def put(prefix, **tensors):
        out.update({f"{prefix}.{k}": v.detach().float().contiguous() for k, v in tensors.items()})

    x, w, dy = leaf(gen, 5, 24), leaf(gen, 24, lo=0.5, hi=1.5), leaf(gen, 5, 24)
    (rms_norm(x, w, 1e-6) * dy).sum().backward()
    put("rmsnorm", x=x, w=w, dy=dy, dx=x.grad, dw=w.grad)

    x, Wl, dy = leaf(gen, 5, 24), leaf(gen, 16, 24), leaf(gen, 5, 16)
    ((x @ Wl.T) * dy).sum().backward()
    put("linear", x=x, W=Wl, dy=dy, dx=x.grad, dW=Wl.grad)

    cfg_v2, W_v2 = load_checkpoint("v2")
    inv, scale, _ = rope_tables(cfg_v2)
    pos = torch.tensor([0, 1, 5, 37, 600, 4000])
    x, dy = leaf(gen, 6, cfg_v2["qk_rope_head_dim"]), leaf(gen, 6, cfg_v2["qk_rope_head_dim"])
    (rope(x, pos, inv, scale) * dy).sum().backward()
    put("rope", x=x, pos=pos, dy=dy, dx=x.grad)

    x, g, u, d, dy = leaf(gen, 5, 24), leaf(gen, 16, 24), leaf(gen, 16, 24), leaf(gen, 24, 16), leaf(gen, 5, 24)
    (swiglu(x, g, u, d) * dy).sum().backward()
    put("swiglu", x=x, gate=g, up=u, down=d, dy=dy, dx=x.grad, dgate=g.grad, dup=u.grad, ddown=d.grad)

    for name, over in (("router_v2", {}), ("router_norm", {"topk_method": "greedy", "norm_topk_prob": True})):
        cfg = dict(cfg_v2, **over)
        for seed in range(50):
            gen_r = torch.Generator().manual_seed(1000 + seed)
            logits = leaf(gen_r, 6, cfg["n_routed_experts"], lo=-2, hi=2)
            dw = leaf(gen_r, 6, cfg["num_experts_per_tok"])
            margins = Margins()
            s = logits.softmax(-1)
            idx = route(s, cfg, margins)
            if margins.smallest > MARGIN:
                break
        (routing_weights(s, idx, cfg) * dw).sum().backward()
        put(name, logits=logits, idx=idx, dweight=dw, dlogits=logits.grad)
        meta[name] = {"margin": margins.smallest}

    for name in ("v2", "lite"):
        cfg, W = load_checkpoint(name)
        pre = "model.layers.0.self_attn."
        Wa = {k: v.clone().requires_grad_(True) for k, v in W.items() if k.startswith(pre)}
        a, dout = leaf(gen, 7, cfg["hidden_size"]), leaf(gen, 7, cfg["hidden_size"])
        (mla(a, Wa, cfg, rope_tables(cfg), pre) * dout).sum().backward()
        put(f"mla_{name}", a=a, dout=dout, da=a.grad)
        put(f"mla_{name}.grad", **{k[len(pre):]: v.grad for k, v in Wa.items()})

    pre = "model.layers.1.mlp."
    for seed in range(50):
        gen_m = torch.Generator().manual_seed(2000 + seed)
        Wm = {k: v.clone().requires_grad_(True) for k, v in W_v2.items() if k.startswith(pre)}
        x, dy = leaf(gen_m, 10, cfg_v2["hidden_size"]), leaf(gen_m, 10, cfg_v2["hidden_size"])
        margins = Margins()
        y, s, idx, keep = moe(x, Wm, cfg_v2, pre, 0.75, margins)
        if margins.smallest > MARGIN and not keep.all():
            break
    (y * dy).sum().backward()
    put("moe", x=x, dy=dy, dx=x.grad, keep=keep, idx=idx)
    put("moe.grad", **{k[len(pre):]: v.grad for k, v in Wm.items()})
    meta["moe"] = {"margin": margins.smallest, "capacity_factor": 0.75, "dropped": int((~keep).sum())}

    logits, targets = leaf(gen, 5, 32, lo=-3, hi=3), torch.tensor([3, 0, 31, 7, 3])
    loss = torch.nn.functional.cross_entropy(logits, targets)
    loss.backward()
    put("ce", logits=logits, targets=targets, loss=loss.reshape(1), dlogits=logits.grad)

    emb, tokens, dh = leaf(gen, 10, 4), torch.tensor([2, 7, 2, 0, 9, 2]), leaf(gen, 6, 4)
    (emb[tokens] * dh).sum().backward()
    put("embedding", tokens=tokens, dh=dh, dE=emb.grad)
    save_file(out, os.path.join(OUT, "components.safetensors"))


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(1)
    meta = {"generator": "tools/make_grad_golden.py", "torch": torch.__version__}
    components(meta)
    optimizer(meta)
    for name in OPTIONS:
        whole_model(name, meta)
        training_run(name, meta)
    with open(os.path.join(OUT, "grad.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
