#!/usr/bin/env python3
"""Does a `dsv2 train` checkpoint mean the same model to transformers as to the C reference?

    python3 tools/check_train_checkpoint.py DIR [--prompt TEXT] [--dsv2 build/dsv2] [--tol 1e-4]

Loads DIR (config.json, model.safetensors in float32, tokenizer.json) with transformers'
native DeepseekV2ForCausalLM (float32, eager attention, eval mode), tokenizes the prompt with
the checkpoint's own tokenizer.json (BOS first), and compares the logits of every prompt
position with those `DSV2 logits -m DIR --ids ...` writes.  Prints the max-abs difference,
the relative difference ||c - hf|| / ||hf||, and whether the greedy token agrees at every
position; exits 1 when the max-abs exceeds --tol (default 1e-4: both sides compute in float32
on the same float32 weights, so only summation order differs, about 1e-6 of logits of size 10).

Needs torch, transformers, safetensors and tokenizers (pip install); not part of make test.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--prompt", default="And the LORD said unto Moses, Speak unto the children of Israel")
    ap.add_argument("--dsv2", default="build/dsv2")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args(argv)

    import torch
    import transformers
    from tokenizers import Tokenizer
    from transformers import DeepseekV2ForCausalLM

    torch.set_num_threads(1)
    with open(os.path.join(a.dir, "config.json")) as f:
        conf = json.load(f)
    ids = Tokenizer.from_file(os.path.join(a.dir, "tokenizer.json")).encode(a.prompt).ids
    if not ids or ids[0] != conf["bos_token_id"]:
        ids = [conf["bos_token_id"]] + ids
    model = DeepseekV2ForCausalLM.from_pretrained(a.dir, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    with torch.no_grad():
        hf = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].numpy()

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "logits.bin")
        subprocess.run([a.dsv2, "logits", "-m", a.dir, "--ids", ",".join(map(str, ids)), "-o", out], check=True)
        c = np.fromfile(out, dtype="<f4").reshape(len(ids), -1)
    if c.shape != hf.shape:
        sys.exit("check_train_checkpoint: logits shapes differ: C %s, transformers %s" % (c.shape, hf.shape))
    diff = np.abs(c.astype(np.float64) - hf)
    rel = np.linalg.norm(c.astype(np.float64) - hf) / np.linalg.norm(hf)
    same_argmax = bool((c.argmax(-1) == hf.argmax(-1)).all())
    print("%s: %d prompt tokens, vocab %d, transformers %s, torch %s"
          % (a.dir, len(ids), hf.shape[1], transformers.__version__, torch.__version__))
    print("max-abs %.3g  relative %.3g  max |logit| %.3g  greedy token agrees at every position: %s"
          % (diff.max(), rel, np.abs(hf).max(), "yes" if same_argmax else "no"))
    if not diff.max() <= a.tol:
        print("check_train_checkpoint: max-abs %.3g exceeds %.3g" % (diff.max(), a.tol))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
