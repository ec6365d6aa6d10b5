#!/usr/bin/env python3
"""PyTorch eager baseline for bench/run.sh: the same GPT-2 forward as HF transformers' eager code,
written with torch.nn modules so that `register_forward_hook` captures the MLP activation (the input of
the down projection, nscope's `blocks.L.mlp.hook_post`) the way TransformerLens/nnsight users do.

    python3 bench/torch_baseline.py MODEL_DIR --dtype float32 --shape 8x128 --hooks mlp_post --threads 2

Prints one JSON line like the C++ bench. Needs only Debian's python3-torch (no transformers).
"""
import argparse
import json
import math
import struct
import time

import torch
from torch import nn

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64}


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        t = torch.frombuffer(bytearray(data[base + b:base + end]), dtype=DTYPES[e["dtype"]])
        out[name.removeprefix("transformer.")] = t.reshape(e["shape"])
    return out


class Conv1D(nn.Module):
    """GPT-2's linear layer: weight stored [in, out]."""

    def __init__(self, w, b):
        super().__init__()
        self.weight, self.bias = nn.Parameter(w, requires_grad=False), nn.Parameter(b, requires_grad=False)

    def forward(self, x):
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).reshape(*x.shape[:-1], -1)


class GeluNew(nn.Module):
    def forward(self, x):
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class Block(nn.Module):
    def __init__(self, w, i, n_head, eps):
        super().__init__()
        p = f"h.{i}."
        d = w[p + "ln_1.weight"].shape[0]
        self.ln_1 = nn.LayerNorm(d, eps=eps)
        self.ln_1.weight.data, self.ln_1.bias.data = w[p + "ln_1.weight"], w[p + "ln_1.bias"]
        self.ln_2 = nn.LayerNorm(d, eps=eps)
        self.ln_2.weight.data, self.ln_2.bias.data = w[p + "ln_2.weight"], w[p + "ln_2.bias"]
        self.c_attn = Conv1D(w[p + "attn.c_attn.weight"], w[p + "attn.c_attn.bias"])
        self.c_proj = Conv1D(w[p + "attn.c_proj.weight"], w[p + "attn.c_proj.bias"])
        self.c_fc = Conv1D(w[p + "mlp.c_fc.weight"], w[p + "mlp.c_fc.bias"])
        self.act = GeluNew()
        self.mlp_proj = Conv1D(w[p + "mlp.c_proj.weight"], w[p + "mlp.c_proj.bias"])
        self.n_head = n_head

    def forward(self, x, mask):
        b, t, d = x.shape
        h = self.n_head
        q, k, v = self.c_attn(self.ln_1(x)).split(d, dim=2)
        q = q.view(b, t, h, d // h).transpose(1, 2)
        k = k.view(b, t, h, d // h).transpose(1, 2)
        v = v.view(b, t, h, d // h).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d // h) + mask
        z = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2).reshape(b, t, d)
        x = x + self.c_proj(z)
        return x + self.mlp_proj(self.act(self.c_fc(self.ln_2(x))))


class GPT2(nn.Module):
    def __init__(self, w, cfg):
        super().__init__()
        self.wte, self.wpe = w["wte.weight"], w["wpe.weight"]
        self.blocks = nn.ModuleList(Block(w, i, cfg["n_head"], cfg["layer_norm_epsilon"]) for i in range(cfg["n_layer"]))
        self.ln_f = nn.LayerNorm(self.wte.shape[1], eps=cfg["layer_norm_epsilon"])
        self.ln_f.weight.data, self.ln_f.bias.data = w["ln_f.weight"], w["ln_f.bias"]

    def forward(self, ids, attention_mask):
        b, t = ids.shape
        x = self.wte[ids] + self.wpe[:t]
        causal = torch.ones(t, t, dtype=torch.bool).tril()
        allowed = causal[None, None] & attention_mask[:, None, None, :].bool()
        mask = torch.zeros(b, 1, t, t, dtype=x.dtype).masked_fill(~allowed, torch.finfo(x.dtype).min)
        for blk in self.blocks:
            x = blk(x, mask)
        return torch.matmul(self.ln_f(x), self.wte.t())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--shape", default="1x16")
    ap.add_argument("--hooks", default="none")
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--profile", help="write an op-level chrome trace of 5 forwards instead of timing")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = json.load(open(f"{a.dir}/config.json"))
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[a.dtype]
    w = {k: v.to(dtype) for k, v in load_safetensors(f"{a.dir}/model.safetensors").items()}
    model = GPT2(w, cfg).to(dtype).eval()
    captured = []
    if a.hooks == "mlp_post":
        for blk in model.blocks:
            # What an interpretability user does: keep a float32 CPU copy of every activation.
            blk.act.register_forward_hook(lambda m, i, o: captured.append(o.detach().float().clone()))
    b, p = map(int, a.shape.split("x"))
    torch.manual_seed(0)
    ids = torch.randint(0, cfg["vocab_size"], (b, p))
    mask = torch.ones(b, p, dtype=torch.long)
    with torch.inference_mode():
        for _ in range(2):
            captured.clear()
            model(ids, mask).float()
        if a.profile:
            with torch.autograd.profiler.profile() as prof:
                for _ in range(5):
                    captured.clear()
                    model(ids, mask).float()
            prof.export_chrome_trace(a.profile)
            return
        start, iters, best = time.perf_counter(), 0, 1e30
        while time.perf_counter() - start < a.seconds or iters < 3:
            t0 = time.perf_counter()
            captured.clear()
            model(ids, mask).float()
            best = min(best, time.perf_counter() - t0)
            iters += 1
        total = time.perf_counter() - start
    print(json.dumps({"impl": "pytorch", "dtype": a.dtype, "shape": a.shape, "hooks": a.hooks,
                      "threads": torch.get_num_threads(), "iters": iters,
                      "tokens_per_s": b * p * iters / total, "best_tokens_per_s": b * p / best}))


if __name__ == "__main__":
    main()
