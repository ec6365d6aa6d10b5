#!/usr/bin/env python3
"""PyTorch baseline for bench/analysis.sh: what a TransformerLens-style user does — cache every
mlp.hook_post activation with forward hooks, then compute per-neuron mean / std / min / max and the top-k
activating positions with torch ops on the cached tensors.

    python3 bench/analysis_baseline.py MODEL_DIR IDS.npy --k 10 --batch 8 --threads 2
Prints one JSON line: seconds (forward + analysis) and peak RSS in MiB.
"""
import argparse
import json
import resource
import time

import numpy as np
import torch

from torch_baseline import GPT2, load_safetensors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("ids")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = json.load(open(f"{a.dir}/config.json"))
    model = GPT2(load_safetensors(f"{a.dir}/model.safetensors"), cfg).eval()
    ids = torch.from_numpy(np.load(a.ids))
    cache = {i: [] for i in range(cfg["n_layer"])}
    for i, blk in enumerate(model.blocks):
        blk.act.register_forward_hook(lambda m, inp, out, i=i: cache[i].append(out.detach().float().clone()))
    start = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, ids.shape[0], a.batch):
            x = ids[s:s + a.batch]
            model(x, torch.ones_like(x))
        results = {}
        for i, chunks in cache.items():
            acts = torch.cat([c.reshape(-1, c.shape[-1]) for c in chunks])  # [tokens, d_mlp]
            results[i] = (acts.mean(0), acts.std(0, unbiased=False), acts.min(0).values, acts.max(0).values,
                          acts.topk(a.k, dim=0))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"impl": "pytorch", "tokens": int(ids.numel()), "seconds": seconds, "peak_mib": peak}))


if __name__ == "__main__":
    main()
