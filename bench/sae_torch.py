#!/usr/bin/env python3
"""The same TopK SAE training step as core/train/sae_trainer.cpp, in PyTorch (the baseline of bench/sae.sh).

Usage: sae_torch.py D_IN LATENTS K BATCH STEPS [threads=N] [lr=X] [--synthetic]
Prints `tokens/s N` (and with --synthetic, the fraction of the ground-truth features recovered)."""
import sys
import time

import torch


def synthetic(n_features, d, active, batch, step, seed=12345):
    g = torch.Generator().manual_seed(seed)
    truth = torch.nn.functional.normalize(torch.randn(n_features, d, generator=g), dim=1)
    g = torch.Generator().manual_seed(seed * 1000003 + step + 1)
    idx = torch.rand(batch, n_features, generator=g).topk(active, dim=1).indices
    coef = torch.zeros(batch, n_features).scatter(1, idx, 0.5 + torch.rand(batch, active, generator=g))
    return truth, coef @ truth


def main():
    d, n, k, batch, steps = (int(a) for a in sys.argv[1:6])
    synth = "--synthetic" in sys.argv
    opts = dict(a.split("=") for a in sys.argv[6:] if "=" in a)
    torch.set_num_threads(int(opts.get("threads", 1)))
    torch.manual_seed(0)
    w_dec = torch.nn.functional.normalize(torch.randn(n, d), dim=1).requires_grad_()
    w_enc = w_dec.detach().t().clone().requires_grad_()
    b_enc = torch.zeros(n, requires_grad=True)
    b_dec = torch.zeros(d, requires_grad=True)
    params = [w_enc, b_enc, w_dec, b_dec]
    opt = torch.optim.Adam(params, lr=float(opts.get("lr", 1e-3)))
    since = torch.zeros(n, dtype=torch.long)
    dead_after = 20 * batch
    data = torch.randn(batch * 8, d)  # activations to cycle through when not synthetic
    t0 = time.time()
    for step in range(steps):
        x = synthetic(n, d, 5, batch, step)[1] if synth else data[(step % 8) * batch:(step % 8 + 1) * batch]
        if step == 0:
            with torch.no_grad():
                b_dec.copy_(x.mean(0))
        var = (x - x.mean(0, keepdim=True)).pow(2).sum(-1).mean().clamp_min(1e-12)
        pre = (x - b_dec) @ w_enc + b_enc
        vals, idx = pre.topk(k, dim=-1)
        z = torch.zeros_like(pre).scatter(-1, idx, vals.relu())
        recon = z @ w_dec + b_dec
        loss = (x - recon).pow(2).sum(-1).mean() / var
        dead = since >= dead_after
        nd = int(dead.sum())
        if nd > 0:
            resid = (x - recon).detach()
            dpre = pre.masked_fill(~dead, float("-inf"))
            v2, i2 = dpre.topk(min(nd, d // 2), dim=-1)
            za = torch.zeros_like(pre).scatter(-1, i2, v2.relu())
            aux = (resid - za @ w_dec).pow(2).sum(-1).mean() / (resid - resid.mean(0, keepdim=True)).pow(2).sum(-1).mean().clamp_min(1e-12)
            loss = loss + aux / 32
        opt.zero_grad()
        loss.backward()
        with torch.no_grad():
            w_dec.grad -= (w_dec.grad * w_dec).sum(1, keepdim=True) * w_dec
        opt.step()
        with torch.no_grad():
            w_dec /= w_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
            since += x.shape[0]
            since[(z > 0).any(0)] = 0
    secs = time.time() - t0
    print(f"tokens/s {batch * steps / secs:.0f}")
    if synth:
        truth = synthetic(n, d, 5, 1, 0)[0]
        cos = (truth @ w_dec.detach().t()).max(1).values
        print(f"recovered {(cos > 0.9).float().mean():.3f} dead {(since >= dead_after).float().mean():.3f} loss {float(loss):.4f}")


if __name__ == "__main__":
    main()
