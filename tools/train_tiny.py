#!/usr/bin/env python3
"""Train the small DeepSeek-V2 that ships with dsv2.c, on the CPU.

What it builds (everything a fresh clone needs to run `make run`):

  models/<name>/config.json          DeepSeek-V2's released config layout
  models/<name>/model.safetensors    bf16, the released per-expert tensor names
  models/<name>/tokenizer.json       byte-level BPE in DeepSeek-V2's configuration
  models/<name>/tokenizer_config.json
  models/<name>/README.md            how it was made, losses, expert load
  models/<name>/loss.png             the loss curves

The model is the full DeepSeek-V2 architecture, only small: Multi-head Latent
Attention with query compression (q_lora_rank) and a compressed KV latent
(kv_lora_rank), decoupled RoPE with YaRN scaling (so the softmax m² factor is
exercised), one dense SwiGLU layer followed by MoE layers with fused shared
experts and group-limited greedy routing over softmax router scores, an untied
output head.  It is `transformers`' DeepseekV2ForCausalLM; the only thing this
script adds to it are the paper's balance losses (docs/semantics.md §4.2): expert level
(--alpha, α₁), device level (--alpha2, α₂) and communication (--alpha3, α₃),
taking the --groups expert groups as the D devices and --topk-groups as the
device limit M, computed from router logits captured by forward hooks on
every `mlp.gate`.  The bundled model uses α₁ alone; models/ablation/ switches
each term on and off (see its README).

Corpus: the King James Bible from Debian's `bible-kjv-text` package (public
domain text; the package's own files are GPL-2+), decoded with the `bible`
program of the `bible-kjv` package:

    apt-get install bible-kjv            # pulls in bible-kjv-text
    bible -f gen1:1-rev22:21             # 31,102 verses, one per line

`--corpus FILE` reads that output from a file instead.  One chapter in fifty
is held out for the validation loss.

`--tokenizer DIR` reuses DIR's tokenizer.json instead of training one;
the output directory then gets relative symbolic links to DIR's tokenizer
files, so the C loader and `dsv2` find them in the model directory.

Reproducibility: everything is seeded (`--seed`), single-threaded
(`torch.set_num_threads(1)`) and deterministic on the same machine, torch and
transformers versions; the README records those versions and the corpus hash.
"""

import argparse
import hashlib
import json
import math
import os
import re
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from tokenizer_spec import build_deepseek_v2_tokenizer  # noqa: E402

VERSE_LINE = re.compile(r"^(\d?[A-Za-z]+)(\d+):(\d+) (.*)$")
N_CHAPTERS = 1189
N_VERSES = 31102


# ----------------------------------------------------------------------------
# Corpus


def read_kjv(corpus_file):
    """Return (raw_text, chapters): chapters is a list of verse-text lists.

    The input is `bible -f gen1:1-rev22:21`'s output: one verse per line,
    "Ge1:1 In the beginning ...".  The reference prefix is dropped; only the
    verse text is kept."""
    if corpus_file:
        with open(corpus_file, encoding="utf-8") as f:
            raw = f.read()
    else:
        raw = subprocess.run(["bible", "-f", "gen1:1-rev22:21"], check=True,
                             capture_output=True, text=True).stdout
    chapters, key = [], None
    for line in raw.splitlines():
        if not line.strip():
            continue
        m = VERSE_LINE.match(line)
        if m is None:
            raise ValueError("unexpected corpus line: %r" % line[:80])
        book, chap, _verse, text = m.groups()
        if (book, chap) != key:
            chapters.append([])
            key = (book, chap)
        chapters[-1].append(text.strip())
    n_verses = sum(len(c) for c in chapters)
    if len(chapters) != N_CHAPTERS or n_verses != N_VERSES:
        raise ValueError("expected %d chapters / %d verses, got %d / %d"
                         % (N_CHAPTERS, N_VERSES, len(chapters), n_verses))
    return raw, chapters


def split_chapters(chapters, every):
    """Hold out one chapter in `every` (chapter index % every == every-1)."""
    train = [c for i, c in enumerate(chapters) if i % every != every - 1]
    held = [c for i, c in enumerate(chapters) if i % every == every - 1]
    return train, held


def encode_stream(tok, chapters):
    """Encode every verse as "text\\n" (no BOS) and concatenate.

    Returns (ids, verse_starts) as LongTensors.  Encoding verse by verse is
    the same as encoding the whole text: the pre-tokenizer isolates every
    newline before anything else."""
    verses = [v + "\n" for c in chapters for v in c]
    encs = tok.encode_batch(verses, add_special_tokens=False)
    ids, starts, pos = [], [], 0
    for e in encs:
        starts.append(pos)
        ids.extend(e.ids)
        pos += len(e.ids)
    return torch.tensor(ids, dtype=torch.long), torch.tensor(starts, dtype=torch.long)


def make_windows(ids, starts, ctx, bos):
    """Rows of BOS + ctx tokens beginning at the given verse starts."""
    rows = [torch.cat([torch.tensor([bos]), ids[s:s + ctx]]) for s in starts.tolist()]
    return torch.stack(rows)


def fixed_windows(ids, verse_starts, ctx, bos, limit=None):
    """Deterministic evaluation windows: greedily take the first verse start
    at or after the end of the previous window, so windows do not overlap."""
    chosen, nxt = [], 0
    for s in verse_starts.tolist():
        if s < nxt or s + ctx > len(ids):
            continue
        chosen.append(s)
        nxt = s + ctx
        if limit is not None and len(chosen) >= limit:
            break
    return make_windows(ids, torch.tensor(chosen, dtype=torch.long), ctx, bos)


# ----------------------------------------------------------------------------
# Model


def build_config(a, vocab_size, bos_id, eos_id):
    from transformers import DeepseekV2Config
    rope = {
        "rope_type": "yarn",
        "rope_theta": a.rope_theta,
        "factor": float(a.yarn_factor),
        "original_max_position_embeddings": a.ctx,
        "beta_fast": 32.0,
        "beta_slow": 1.0,
        "mscale": 0.707,
        "mscale_all_dim": 0.707,
    }
    cfg = DeepseekV2Config(
        vocab_size=vocab_size,
        hidden_size=a.hidden,
        intermediate_size=a.intermediate,
        moe_intermediate_size=a.moe_intermediate,
        num_hidden_layers=a.layers,
        num_attention_heads=a.heads,
        num_key_value_heads=a.heads,
        q_lora_rank=a.q_lora_rank,
        kv_lora_rank=a.kv_lora_rank,
        qk_nope_head_dim=a.qk_nope,
        qk_rope_head_dim=a.qk_rope,
        v_head_dim=a.v_head,
        n_routed_experts=a.experts,
        n_shared_experts=a.shared_experts,
        num_experts_per_tok=a.topk,
        first_k_dense_replace=1,
        topk_method="group_limited_greedy",
        n_group=a.groups,
        topk_group=a.topk_groups,
        norm_topk_prob=False,
        routed_scaling_factor=a.routed_scaling,
        max_position_embeddings=a.ctx * a.yarn_factor,
        rope_parameters=rope,
        rms_norm_eps=1e-6,
        hidden_act="silu",
        attention_bias=False,
        attention_dropout=0.0,
        initializer_range=0.02,
        tie_word_embeddings=False,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=None,
        use_cache=True,
    )
    return cfg


def released_config_json(cfg, a, transformers_version):
    """config.json in the layout of DeepSeek-V2's released file: every key the
    released config has (minus the remote-code auto_map), a `rope_scaling`
    object with "type": "yarn", rope_theta at top level, and no
    transformers-5-only keys (rope_parameters, head_dim, qk_head_dim)."""
    rp = cfg.rope_parameters
    return {
        "architectures": ["DeepseekV2ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "aux_loss_alpha": a.alpha,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "ep_size": 1,
        "first_k_dense_replace": cfg.first_k_dense_replace,
        "hidden_act": "silu",
        "hidden_size": cfg.hidden_size,
        "initializer_range": cfg.initializer_range,
        "intermediate_size": cfg.intermediate_size,
        "kv_lora_rank": cfg.kv_lora_rank,
        "max_position_embeddings": cfg.max_position_embeddings,
        "model_type": "deepseek_v2",
        "moe_intermediate_size": cfg.moe_intermediate_size,
        "moe_layer_freq": 1,
        "n_group": cfg.n_group,
        "n_routed_experts": cfg.n_routed_experts,
        "n_shared_experts": cfg.n_shared_experts,
        "norm_topk_prob": False,
        "num_attention_heads": cfg.num_attention_heads,
        "num_experts_per_tok": cfg.num_experts_per_tok,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_key_value_heads": cfg.num_key_value_heads,
        "pretraining_tp": 1,
        "q_lora_rank": cfg.q_lora_rank,
        "qk_nope_head_dim": cfg.qk_nope_head_dim,
        "qk_rope_head_dim": cfg.qk_rope_head_dim,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_scaling": {
            "beta_fast": rp["beta_fast"],
            "beta_slow": rp["beta_slow"],
            "factor": rp["factor"],
            "mscale": rp["mscale"],
            "mscale_all_dim": rp["mscale_all_dim"],
            "original_max_position_embeddings": rp["original_max_position_embeddings"],
            "type": "yarn",
        },
        "rope_theta": rp["rope_theta"],
        "routed_scaling_factor": cfg.routed_scaling_factor,
        "scoring_func": "softmax",
        "seq_aux": True,
        "tie_word_embeddings": False,
        "topk_group": cfg.topk_group,
        "topk_method": cfg.topk_method,
        "torch_dtype": "bfloat16",
        "transformers_version": transformers_version,
        "use_cache": True,
        "v_head_dim": cfg.v_head_dim,
        "vocab_size": cfg.vocab_size,
    }


# Keys a C reader needs (issue 4); checked on the written file.
REQUIRED_KEYS = [
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim",
    "qk_rope_head_dim", "v_head_dim", "intermediate_size",
    "moe_intermediate_size", "n_routed_experts", "n_shared_experts",
    "num_experts_per_tok", "first_k_dense_replace", "moe_layer_freq",
    "topk_method", "n_group", "topk_group", "norm_topk_prob",
    "routed_scaling_factor", "scoring_func", "rms_norm_eps", "rope_theta",
    "rope_scaling", "max_position_embeddings", "bos_token_id", "eos_token_id",
    "tie_word_embeddings",
]
REQUIRED_ROPE_KEYS = ["type", "factor", "original_max_position_embeddings",
                      "beta_fast", "beta_slow", "mscale", "mscale_all_dim"]


def released_state_dict(model):
    """The model's weights under the released checkpoint's names, in bf16.

    transformers 5 keeps routed experts fused in memory as
    `mlp.experts.gate_up_proj [E, 2*I_e, D]` (gate rows first, then up rows)
    and `mlp.experts.down_proj [E, D, I_e]`; the released files have one
    `mlp.experts.{e}.{gate,up,down}_proj.weight` per expert.  Everything
    else already has its released name."""
    out = {}
    for name, t in model.state_dict().items():
        t = t.detach()
        if name.endswith("mlp.experts.gate_up_proj"):
            prefix = name[: -len("gate_up_proj")]
            n_exp, two_i, _ = t.shape
            ie = two_i // 2
            for e in range(n_exp):
                out["%s%d.gate_proj.weight" % (prefix, e)] = t[e, :ie]
                out["%s%d.up_proj.weight" % (prefix, e)] = t[e, ie:]
        elif name.endswith("mlp.experts.down_proj"):
            prefix = name[: -len("down_proj")]
            for e in range(t.shape[0]):
                out["%s%d.down_proj.weight" % (prefix, e)] = t[e]
        else:
            out[name] = t
    return {k: v.to(torch.bfloat16).contiguous().clone() for k, v in out.items()}


# ----------------------------------------------------------------------------
# Balance loss and expert load


class RouterTap:
    """Forward hooks on every MoE layer's `mlp.gate`.

    The gate returns (router_logits [N, E] float32, topk_weights [N, K],
    topk_indices [N, K]); the hook keeps them for the loss and the load."""

    def __init__(self, model):
        self.outputs = []
        self.layers = []
        for i, layer in enumerate(model.model.layers):
            gate = getattr(layer.mlp, "gate", None)
            if gate is not None:
                self.layers.append(i)
                gate.register_forward_hook(self._hook)

    def _hook(self, _module, _inputs, output):
        self.outputs.append(output)

    def clear(self):
        self.outputs = []


def balance_losses(tap, batch, seq, n_exp, k, n_dev, dev_limit, alphas):
    """docs/semantics.md §4.2's three balance losses per sequence, averaged over the batch
    and summed over MoE layers; returns (L_ExpBal, L_DevBal, L_CommBal).
    The E experts sit on D = n_dev devices in contiguous groups E_d; M =
    dev_limit.  With s = softmax of the router logits, P_i = (1/T) Σ_t s_{i,t}:
      L_ExpBal  = α₁ Σ_i f_i P_i,    f_i   = E/(K T) · #tokens choosing i
      L_DevBal  = α₂ Σ_d f'_d P'_d,  f'_d  = mean_{i∈E_d} f_i,  P'_d = Σ_{i∈E_d} P_i
      L_CommBal = α₃ Σ_d f''_d P'_d, f''_d = D/(M T) · #tokens sent to device d
    (ref/balance.c computes the same in C).  A term whose α is 0 is skipped."""
    a1, a2, a3 = alphas
    per_dev = n_exp // n_dev
    l_exp = l_dev = l_comm = torch.zeros(())
    for logits, _w, idx in tap.outputs:
        probs = logits.float().softmax(dim=-1).view(batch, seq, n_exp)
        chosen = F.one_hot(idx.view(batch, seq, k), n_exp).sum(dim=2).float()  # [B, T, E]
        f = chosen.sum(dim=1) * (n_exp / (k * seq))
        p = probs.mean(dim=1)
        p_dev = p.view(batch, n_dev, per_dev).sum(dim=-1)
        if a1:
            l_exp = l_exp + a1 * (f * p).sum(dim=-1).mean()
        if a2:
            f_dev = f.view(batch, n_dev, per_dev).mean(dim=-1)
            l_dev = l_dev + a2 * (f_dev * p_dev).sum(dim=-1).mean()
        if a3:
            sent = (chosen.view(batch, seq, n_dev, per_dev).sum(dim=-1) > 0).float()
            f_comm = sent.sum(dim=1) * (n_dev / (dev_limit * seq))
            l_comm = l_comm + a3 * (f_comm * p_dev).sum(dim=-1).mean()
    return l_exp, l_dev, l_comm


# ----------------------------------------------------------------------------
# Training


def lr_at(step, a):
    if step < a.warmup:
        return a.lr * (step + 1) / a.warmup
    frac = (step - a.warmup) / max(1, a.steps - a.warmup)
    return a.min_lr + 0.5 * (a.lr - a.min_lr) * (1 + math.cos(math.pi * min(1.0, frac)))


@torch.no_grad()
def evaluate(model, tap, windows, batch, n_exp, load=None):
    """Mean next-token cross-entropy over `windows`; optionally accumulates
    routed-expert counts per MoE layer into `load` [layers, E]."""
    model.eval()
    tot, n = 0.0, 0
    for i in range(0, len(windows), batch):
        w = windows[i:i + batch]
        tap.clear()
        logits = model(input_ids=w[:, :-1], use_cache=False).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                               w[:, 1:].reshape(-1), reduction="sum")
        tot += loss.item()
        n += w[:, 1:].numel()
        if load is not None:
            for j, (_l, _w, idx) in enumerate(tap.outputs):
                load[j] += torch.bincount(idx.reshape(-1), minlength=n_exp).double()
    tap.clear()
    model.train()
    return tot / n


def plot_losses(out_dir):
    """loss.png from train_log.txt (per-step LM loss) and the eval lines."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    steps, lm, ev = [], [], []
    with open(os.path.join(out_dir, "train_log.txt")) as f:
        for line in f:
            m = re.match(r"step\s+(\d+)\s+lr \S+\s+lm (\S+)", line)
            if m:
                steps.append(int(m.group(1)))
                lm.append(float(m.group(2)))
            m = re.match(r"eval step\s+(\d+)\s+train\(running\) (\S+)\s+train (\S+)"
                         r"\s+held-out (\S+)", line)
            if m:
                ev.append(tuple(float(g) for g in m.groups()))
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    ax.plot(steps, lm, lw=0.8, color="0.6", label="train batch (every 25 steps)")
    if ev:
        ax.plot([e[0] for e in ev], [e[2] for e in ev], "o-", label="train windows (eval)")
        ax.plot([e[0] for e in ev], [e[3] for e in ev], "s-", label="held-out chapters (eval)")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_ylim(bottom=min(lm + [e[3] for e in ev]) - 0.2 if lm else None,
                top=min(6.0, max(lm)) if lm else None)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("tiny DeepSeek-V2 on the King James Bible")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "loss.png"))
    plt.close(fig)


def count_params(model):
    return sum(p.numel() for p in model.parameters())


def log(fh, msg):
    print(msg, flush=True)
    if fh is not None:
        fh.write(msg + "\n")
        fh.flush()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="models/tiny-kjv")
    p.add_argument("--corpus", default=None,
                   help="file holding `bible -f gen1:1-rev22:21` output "
                        "(default: run `bible`)")
    p.add_argument("--holdout-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=1611)
    p.add_argument("--threads", type=int, default=1)
    # tokenizer
    p.add_argument("--vocab", type=int, default=4096)
    # model
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--q-lora-rank", type=int, default=128)
    p.add_argument("--kv-lora-rank", type=int, default=64)
    p.add_argument("--qk-nope", type=int, default=32)
    p.add_argument("--qk-rope", type=int, default=16)
    p.add_argument("--v-head", type=int, default=32)
    p.add_argument("--intermediate", type=int, default=768)
    p.add_argument("--moe-intermediate", type=int, default=96)
    p.add_argument("--experts", type=int, default=16)
    p.add_argument("--shared-experts", type=int, default=2)
    p.add_argument("--topk", type=int, default=4)
    p.add_argument("--groups", type=int, default=8)
    p.add_argument("--topk-groups", type=int, default=3)
    p.add_argument("--routed-scaling", type=float, default=2.0)
    p.add_argument("--rope-theta", type=float, default=10000.0)
    p.add_argument("--yarn-factor", type=int, default=4)
    # training
    p.add_argument("--ctx", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=1600)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--min-lr", type=float, default=2e-4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--alpha", type=float, default=0.003,
                   help="expert-level balance loss weight α₁ (docs/semantics.md §4.2)")
    p.add_argument("--alpha2", type=float, default=0.0,
                   help="device-level balance loss weight α₂ (devices = --groups)")
    p.add_argument("--alpha3", type=float, default=0.0,
                   help="communication balance loss weight α₃ (device limit M = --topk-groups)")
    p.add_argument("--tokenizer", default=None,
                   help="directory whose tokenizer.json to reuse (linked, not retrained)")
    p.add_argument("--no-plot", action="store_true", help="do not draw OUT/loss.png")
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--eval-train-windows", type=int, default=96)
    p.add_argument("--experts-impl", default=None,
                   help="transformers experts implementation (speed only)")
    p.add_argument("--plot-only", action="store_true",
                   help="only redraw OUT/loss.png from OUT/train_log.txt")
    p.add_argument("--bench", type=int, default=0,
                   help="time this many steps and exit (no output written)")
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    if a.plot_only:
        plot_losses(a.out)
        return
    import transformers
    from transformers import DeepseekV2ForCausalLM
    from safetensors.torch import save_file

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    torch.use_deterministic_algorithms(True)
    t_start = time.time()

    os.makedirs(a.out, exist_ok=True)
    logf = None if a.bench else open(os.path.join(a.out, "train_log.txt"), "w")
    log(logf, "train_tiny.py " + " ".join(sys.argv[1:]))
    log(logf, "torch %s, transformers %s" % (torch.__version__, transformers.__version__))

    # --- corpus
    raw, chapters = read_kjv(a.corpus)
    corpus_sha = hashlib.sha256(raw.encode("utf-8")).hexdigest()
    train_ch, held_ch = split_chapters(chapters, a.holdout_every)
    log(logf, "corpus: %d chapters, %d verses, %d bytes, sha256 %s"
        % (len(chapters), sum(len(c) for c in chapters), len(raw.encode()), corpus_sha))
    log(logf, "held out: %d chapters (one in %d), %d verses"
        % (len(held_ch), a.holdout_every, sum(len(c) for c in held_ch)))

    # --- tokenizer (trained on the training chapters only)
    if a.tokenizer:
        tok = Tokenizer.from_file(os.path.join(a.tokenizer, "tokenizer.json"))
        if not a.bench:
            for name in ("tokenizer.json", "tokenizer_config.json"):
                link = os.path.join(a.out, name)
                if os.path.lexists(link):
                    os.remove(link)
                os.symlink(os.path.relpath(os.path.join(a.tokenizer, name), a.out), link)
        log(logf, "tokenizer: %s (reused)" % a.tokenizer)
    else:
        tok_dir = a.out if not a.bench else None
        tok = build_deepseek_v2_tokenizer(
            (v + "\n" for c in train_ch for v in c), a.vocab, out_dir=tok_dir)
    vocab = tok.get_vocab_size()
    bos_id, eos_id = vocab - 2, vocab - 1
    train_ids, train_starts = encode_stream(tok, train_ch)
    held_ids, held_starts = encode_stream(tok, held_ch)
    log(logf, "tokens: train %d, held-out %d (vocab %d, bos %d, eos %d)"
        % (len(train_ids), len(held_ids), vocab, bos_id, eos_id))

    # --- model
    torch.manual_seed(a.seed)
    cfg = build_config(a, vocab, bos_id, eos_id)
    cfg._attn_implementation = "sdpa"
    if a.experts_impl:
        cfg._experts_implementation = a.experts_impl
    model = DeepseekV2ForCausalLM(cfg)
    model.train()
    n_params = count_params(model)
    log(logf, "parameters: %d" % n_params)
    tap = RouterTap(model)
    log(logf, "MoE layers: %s" % tap.layers)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed_tokens" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed_tokens" not in n)]
    opt = torch.optim.AdamW([
        {"params": decay, "weight_decay": a.weight_decay},
        {"params": no_decay, "weight_decay": 0.0}],
        lr=a.lr, betas=(0.9, 0.95), eps=1e-8)

    usable = train_starts[train_starts + a.ctx <= len(train_ids)]
    val_windows = fixed_windows(held_ids, held_starts, a.ctx, bos_id)
    trn_windows = fixed_windows(train_ids, train_starts, a.ctx, bos_id,
                                limit=a.eval_train_windows)
    log(logf, "eval windows: held-out %d, train %d (each BOS + %d tokens)"
        % (len(val_windows), len(trn_windows), a.ctx))
    gen = torch.Generator().manual_seed(a.seed)

    history = []  # (step, train_running, train_eval, val_eval)
    run_lm, run_n = 0.0, 0
    t0 = time.time()
    steps = a.bench if a.bench else a.steps
    for step in range(steps):
        lr = lr_at(step, a)
        for g in opt.param_groups:
            g["lr"] = lr
        pick = usable[torch.randint(len(usable), (a.batch,), generator=gen)]
        x = make_windows(train_ids, pick, a.ctx, bos_id)
        tap.clear()
        logits = model(input_ids=x[:, :-1], use_cache=False).logits
        lm = F.cross_entropy(logits.reshape(-1, vocab).float(), x[:, 1:].reshape(-1))
        l_exp, l_dev, l_comm = balance_losses(tap, a.batch, a.ctx, a.experts, a.topk, a.groups,
                                              a.topk_groups, (a.alpha, a.alpha2, a.alpha3))
        bal = l_exp + l_dev + l_comm
        loss = lm + bal
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip)
        opt.step()
        tap.clear()
        run_lm += lm.item()
        run_n += 1
        if a.bench:
            el = time.time() - t0
            log(logf, "step %d  lm %.4f  bal %.5f  %.2fs/step  %.0f tok/s"
                % (step, lm.item(), bal.item(), el / (step + 1),
                   (step + 1) * a.batch * a.ctx / el))
            continue
        if step % 25 == 0:
            log(logf, "step %5d  lr %.2e  lm %.4f  bal %.5f  gnorm %.3f  %.0fs"
                % (step, lr, lm.item(), bal.item(), gnorm.item(), time.time() - t0))
        if (step + 1) % a.eval_every == 0 or step + 1 == a.steps:
            tr = evaluate(model, tap, trn_windows, a.batch, a.experts)
            va = evaluate(model, tap, val_windows, a.batch, a.experts)
            history.append((step + 1, run_lm / run_n, tr, va))
            log(logf, "eval step %5d  train(running) %.4f  train %.4f  held-out %.4f  %.0fs"
                % (step + 1, run_lm / run_n, tr, va, time.time() - t0))
            run_lm, run_n = 0.0, 0
    if a.bench:
        return
    train_secs = time.time() - t0

    # --- final expert load on the held-out set, fp32 weights
    n_moe = len(tap.layers)
    load = torch.zeros(n_moe, a.experts, dtype=torch.float64)
    evaluate(model, tap, val_windows, a.batch, a.experts, load=load)
    share = load / load.sum(dim=1, keepdim=True)

    # --- round to bf16 (what ships) and write the files
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    tr_bf = evaluate(model, tap, trn_windows, a.batch, a.experts)
    va_bf = evaluate(model, tap, val_windows, a.batch, a.experts)
    log(logf, "after bf16 rounding: train %.4f  held-out %.4f" % (tr_bf, va_bf))

    tensors = released_state_dict(model)
    save_file(tensors, os.path.join(a.out, "model.safetensors"), metadata={"format": "pt"})
    conf = released_config_json(cfg, a, transformers.__version__)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(conf, f, indent=2)
        f.write("\n")
    missing = [k for k in REQUIRED_KEYS if k not in conf]
    missing += ["rope_scaling." + k for k in REQUIRED_ROPE_KEYS if k not in conf["rope_scaling"]]
    if missing:
        raise RuntimeError("config.json lacks %s" % missing)

    # --- reload with transformers and compare with the in-memory model
    model.eval()
    ref = DeepseekV2ForCausalLM.from_pretrained(a.out, dtype=torch.float32,
                                                attn_implementation="sdpa")
    ref.eval()
    probe = val_windows[:2, :64]
    with torch.no_grad():
        l_mem = model(input_ids=probe, use_cache=False).logits
        l_ref = ref(input_ids=probe, use_cache=False).logits
    diff = (l_mem - l_ref).abs().max().item()
    log(logf, "reload: max |logit difference| in-memory vs from_pretrained = %.3g" % diff)
    if diff > 1e-4:
        raise RuntimeError("reloaded model disagrees with the trained one")
    prompt = torch.tensor([[bos_id] + tok.encode("And God said", add_special_tokens=False).ids])
    g_mem = model.generate(prompt, do_sample=False, max_new_tokens=60, min_new_tokens=60)
    g_ref = ref.generate(prompt, do_sample=False, max_new_tokens=60, min_new_tokens=60)
    same = torch.equal(g_mem, g_ref)
    log(logf, "reload: greedy continuation identical: %s" % same)
    if not same:
        raise RuntimeError("reloaded greedy continuation differs")
    sample_text = tok.decode(g_ref[0].tolist(), skip_special_tokens=True)
    log(logf, "greedy sample: %r" % sample_text)

    summary = {
        "seed": a.seed, "args": vars(a), "parameters": n_params,
        "train_seconds": train_secs, "total_seconds": time.time() - t_start,
        "history": history, "final_bf16": {"train": tr_bf, "held_out": va_bf},
        "expert_share": share.tolist(), "moe_layers": tap.layers,
        "corpus_sha256": corpus_sha, "tokens": {"train": len(train_ids), "held_out": len(held_ids)},
        "torch": torch.__version__, "transformers": transformers.__version__,
        "greedy_sample": sample_text, "reload_max_abs_diff": diff,
    }
    with open(os.path.join(a.out, "train_summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")
    for j, layer in enumerate(tap.layers):
        log(logf, "expert share, layer %d: %s" % (layer, " ".join("%.3f" % s for s in share[j])))
    log(logf, "done: training %.0fs, total %.0fs" % (train_secs, time.time() - t_start))
    logf.close()
    if not a.no_plot:
        plot_losses(a.out)


if __name__ == "__main__":
    main()
