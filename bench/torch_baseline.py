#!/usr/bin/env python3
"""PyTorch eager baseline for bench/run.sh: the same forward as HF transformers' eager code (GPT-2,
GPT-NeoX / Pythia with the parallel residual, Gemma 1), written with torch.nn modules so that
`register_forward_hook` captures the MLP activation (the input of the down projection, nscope's
`blocks.L.mlp.hook_post`) the way TransformerLens/nnsight users do.

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
        for prefix in ("transformer.", "gpt_neox.", "model."):
            name = name.removeprefix(prefix)
        out[name] = t.reshape(e["shape"])
    return out


def causal_mask(ids, attention_mask, dtype):
    b, t = ids.shape
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    allowed = causal[None, None] & attention_mask[:, None, None, :].bool()
    return torch.zeros(b, 1, t, t, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)


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
        if torch.is_grad_enabled():  # --grad: gradients flow from the loss down to the embedding
            x = x.detach().requires_grad_()
        mask = causal_mask(ids, attention_mask, x.dtype)
        for blk in self.blocks:
            x = blk(x, mask)
        return torch.matmul(self.ln_f(x), self.wte.t())


def linear(w, b=None):
    m = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    m.weight = nn.Parameter(w, requires_grad=False)
    if b is not None:
        m.bias = nn.Parameter(b, requires_grad=False)
    return m


def rotary(t, dims, base, dtype):
    """cos, sin [t, dims] of HF's rotary embedding (half-split layout)."""
    inv = 1.0 / (base ** (torch.arange(0, dims, 2, dtype=torch.int64).float() / dims))
    freqs = torch.outer(torch.arange(t, dtype=torch.int64).float(), inv)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x, cos, sin):
    """x [b, h, t, dh]; rotary on the first cos.shape[-1] dims (partial rotary passes the rest through)."""
    rot = cos.shape[-1]
    xr, xp = x[..., :rot], x[..., rot:]
    return torch.cat((xr * cos + rotate_half(xr) * sin, xp), dim=-1)


class Act(nn.Module):
    """The MLP nonlinearity as its own module, so that a forward hook sees its output."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class NeoXBlock(nn.Module):
    """HF GPTNeoXLayer (eager): fused per-head qkv, partial rotary, parallel or sequential residual."""

    def __init__(self, w, i, cfg):
        super().__init__()
        p = f"layers.{i}."
        d = cfg["hidden_size"]
        self.h = cfg["num_attention_heads"]
        self.parallel = cfg.get("use_parallel_residual", True)
        self.ln1, self.ln2 = nn.LayerNorm(d, eps=cfg["layer_norm_eps"]), nn.LayerNorm(d, eps=cfg["layer_norm_eps"])
        self.ln1.weight.data, self.ln1.bias.data = w[p + "input_layernorm.weight"], w[p + "input_layernorm.bias"]
        self.ln2.weight.data = w[p + "post_attention_layernorm.weight"]
        self.ln2.bias.data = w[p + "post_attention_layernorm.bias"]
        self.qkv = linear(w[p + "attention.query_key_value.weight"], w[p + "attention.query_key_value.bias"])
        self.dense = linear(w[p + "attention.dense.weight"], w[p + "attention.dense.bias"])
        self.up = linear(w[p + "mlp.dense_h_to_4h.weight"], w[p + "mlp.dense_h_to_4h.bias"])
        self.act = Act(torch.nn.functional.gelu)
        self.down = linear(w[p + "mlp.dense_4h_to_h.weight"], w[p + "mlp.dense_4h_to_h.bias"])

    def forward(self, x, mask, cos, sin):
        b, t, d = x.shape
        h, dh = self.h, d // self.h
        qkv = self.qkv(self.ln1(x)).view(b, t, h, 3 * dh).permute(0, 2, 1, 3)
        q, k, v = qkv[..., :dh], qkv[..., dh:2 * dh], qkv[..., 2 * dh:]
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(dh) + mask
        z = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2).reshape(b, t, d)
        attn = self.dense(z)
        if self.parallel:
            return x + attn + self.down(self.act(self.up(self.ln2(x))))
        x = x + attn
        return x + self.down(self.act(self.up(self.ln2(x))))


class GPTNeoX(nn.Module):
    def __init__(self, w, cfg):
        super().__init__()
        d = cfg["hidden_size"]
        self.embed, self.head = w["embed_in.weight"], w["embed_out.weight"]
        self.blocks = nn.ModuleList(NeoXBlock(w, i, cfg) for i in range(cfg["num_hidden_layers"]))
        self.ln_f = nn.LayerNorm(d, eps=cfg["layer_norm_eps"])
        self.ln_f.weight.data, self.ln_f.bias.data = w["final_layer_norm.weight"], w["final_layer_norm.bias"]
        dh = d // cfg["num_attention_heads"]
        self.rot, self.base = int(dh * cfg.get("rotary_pct", 0.25)), cfg.get("rotary_emb_base", 10000)

    def forward(self, ids, attention_mask):
        x = self.embed[ids]
        mask = causal_mask(ids, attention_mask, x.dtype)
        cos, sin = rotary(ids.shape[1], self.rot, self.base, x.dtype)
        for blk in self.blocks:
            x = blk(x, mask, cos, sin)
        return torch.matmul(self.ln_f(x), self.head.t())


def gemma_norm(x, w, eps):
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return (h * (1.0 + w.float())).to(x.dtype)


class GemmaBlock(nn.Module):
    """HF GemmaDecoderLayer (eager): (1 + w) RMSNorm, multi-query attention with head_dim, tanh GeGLU."""

    def __init__(self, w, i, cfg):
        super().__init__()
        p = f"layers.{i}."
        self.h, self.hkv, self.dh = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
        self.eps = cfg["rms_norm_eps"]
        self.ln1, self.ln2 = w[p + "input_layernorm.weight"], w[p + "post_attention_layernorm.weight"]
        self.q, self.k = linear(w[p + "self_attn.q_proj.weight"]), linear(w[p + "self_attn.k_proj.weight"])
        self.v, self.o = linear(w[p + "self_attn.v_proj.weight"]), linear(w[p + "self_attn.o_proj.weight"])
        self.gate, self.up = linear(w[p + "mlp.gate_proj.weight"]), linear(w[p + "mlp.up_proj.weight"])
        self.down = linear(w[p + "mlp.down_proj.weight"])
        self.act_fn = lambda x: torch.nn.functional.gelu(x, approximate="tanh")
        self.act = Act(lambda g: g)  # hooked: act(gate) * up, the input of down_proj

    def forward(self, x, mask, cos, sin):
        b, t, _ = x.shape
        y = gemma_norm(x, self.ln1, self.eps)
        q = self.q(y).view(b, t, self.h, self.dh).transpose(1, 2)
        k = self.k(y).view(b, t, self.hkv, self.dh).transpose(1, 2)
        v = self.v(y).view(b, t, self.hkv, self.dh).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        rep = self.h // self.hkv
        k = k[:, :, None].expand(b, self.hkv, rep, t, self.dh).reshape(b, self.h, t, self.dh)
        v = v[:, :, None].expand(b, self.hkv, rep, t, self.dh).reshape(b, self.h, t, self.dh)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.dh) + mask
        pattern = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        z = torch.matmul(pattern, v).transpose(1, 2).reshape(b, t, self.h * self.dh)
        x = x + self.o(z)
        y = gemma_norm(x, self.ln2, self.eps)
        return x + self.down(self.act(self.act_fn(self.gate(y)) * self.up(y)))


class Gemma(nn.Module):
    def __init__(self, w, cfg):
        super().__init__()
        self.embed = w["embed_tokens.weight"]
        self.blocks = nn.ModuleList(GemmaBlock(w, i, cfg) for i in range(cfg["num_hidden_layers"]))
        self.norm, self.eps = w["norm.weight"], cfg["rms_norm_eps"]
        self.dh, self.base, self.d = cfg["head_dim"], cfg.get("rope_theta", 10000.0), cfg["hidden_size"]

    def forward(self, ids, attention_mask):
        x = self.embed[ids]
        x = x * torch.tensor(self.d ** 0.5, dtype=x.dtype)
        mask = causal_mask(ids, attention_mask, x.dtype)
        cos, sin = rotary(ids.shape[1], self.dh, self.base, x.dtype)
        for blk in self.blocks:
            x = blk(x, mask, cos, sin)
        return torch.matmul(gemma_norm(x, self.norm, self.eps), self.embed.t())


MODELS = {"gpt2": GPT2, "gpt_neox": GPTNeoX, "gemma": Gemma}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--shape", default="1x16")
    ap.add_argument("--hooks", default="none")
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--profile", help="write an op-level chrome trace of 5 forwards instead of timing")
    ap.add_argument("--grad", action="store_true",
                    help="also d(mean next-token loss)/d(MLP activation) of every layer: retain_grad + backward")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = json.load(open(f"{a.dir}/config.json"))
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[a.dtype]
    w = {k: v.to(dtype) for k, v in load_safetensors(f"{a.dir}/model.safetensors").items()}
    model = MODELS[cfg["model_type"]](w, cfg).to(dtype).eval()
    model.requires_grad_(False)  # activation gradients only, as nscope computes
    captured = []
    if a.grad:
        if a.hooks != "mlp_post" or cfg["model_type"] != "gpt2":
            raise SystemExit("--grad needs --hooks mlp_post and a gpt2 model")
        for blk in model.blocks:
            # What an interpretability user does for gradients: keep each activation and retain its grad.
            def keep(m, i, o):
                o.retain_grad()
                captured.append(o)
            blk.act.register_forward_hook(keep)
    elif a.hooks == "mlp_post":
        for blk in model.blocks:
            # What an interpretability user does: keep a float32 CPU copy of every activation.
            blk.act.register_forward_hook(lambda m, i, o: captured.append(o.detach().float().clone()))
    b, p = map(int, a.shape.split("x"))
    torch.manual_seed(0)
    ids = torch.randint(0, cfg["vocab_size"], (b, p))
    mask = torch.ones(b, p, dtype=torch.long)
    if a.grad:
        def step():
            captured.clear()
            logits = model(ids, mask).float()
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                                     reduction="none").view(b, p - 1).mean(1)
            loss.sum().backward()  # each row's gradient is its own, as nscope's metric summed over rows
            return [(o.detach().float().clone(), o.grad.float().clone()) for o in captured]
        for _ in range(2):
            step()
        start, iters, best = time.perf_counter(), 0, 1e30
        while time.perf_counter() - start < a.seconds or iters < 3:
            t0 = time.perf_counter()
            step()
            best = min(best, time.perf_counter() - t0)
            iters += 1
        total = time.perf_counter() - start
        print(json.dumps({"impl": "pytorch", "dtype": a.dtype, "shape": a.shape, "hooks": a.hooks, "grad": True,
                          "threads": torch.get_num_threads(), "iters": iters,
                          "tokens_per_s": b * p * iters / total, "best_tokens_per_s": b * p / best}))
        return
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
