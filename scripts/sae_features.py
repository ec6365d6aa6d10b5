#!/usr/bin/env python3
"""SAE features next to the neurons they split, from a run of configs/sae.yaml (docs/examples.md).

    python3 scripts/sae_features.py RUN_DIR [--features N] [--neurons N] [--split N]

Reads the run's manifest (which SAE was attached to which hook), results/top.json (topk on the hook and on
its `.sae` latents), results/poly.json (polysemantic with `input: top`) and the SAE's decoder from
sae.safetensors. A unit (neuron or feature) is *live* when all its top examples are above 0. Prints
  - the median polysemanticity score (the effective number of distinct tokens among a unit's top examples)
    of the live neurons and of the live features;
  - the most interpretable features: live features with the lowest score, ties broken by their strongest
    activation, one per dominant token (so that twenty end-of-verse features do not fill the list);
  - the most polysemantic neurons among the strongly active ones (top activation above the median neuron's),
    each followed by the live features whose decoder direction points most along that neuron (the largest
    W_dec[f, neuron]; decoder rows are unit vectors, so this is the cosine with the neuron's axis): the
    features the SAE split the neuron into.
Python standard library only. Exit 2 with a message on a run that is not an SAE run of this shape.
"""
import argparse
import array
import json
import os
import struct
import sys


def fail(msg):
    print(f"sae_features.py: {msg}", file=sys.stderr)
    sys.exit(2)


def load_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        fail(f"cannot read {path}: {e}")


def table_rows(result, name):
    t = result.get("data", {}).get("tables", {}).get(name)
    if not t:
        fail(f"the result has no table '{name}'")
    cols = t["columns"]
    return [dict(zip(cols, r)) for r in t["rows"]]


def decoder(sae_dir):
    """W_dec [latents, d_in] float32 of an nscope SAE folder, as (flat array, latents, d_in)."""
    path = os.path.join(sae_dir, "sae.safetensors")
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
            w = header["W_dec"]
            if w["dtype"] != "F32" or len(w["shape"]) != 2:
                fail(f"{path}: W_dec is not a float32 matrix")
            begin, end = w["data_offsets"]
            f.seek(8 + n + begin)
            data = array.array("f")
            data.frombytes(f.read(end - begin))
    except (OSError, ValueError, KeyError, struct.error) as e:
        fail(f"cannot read the decoder of {path}: {e}")
    if sys.byteorder != "little":
        data.byteswap()
    latents, d_in = w["shape"]
    if len(data) != latents * d_in:
        fail(f"{path}: W_dec is truncated")
    return data, latents, d_in


def tokens_text(evidence, n=5):
    toks = json.loads(evidence)["tokens"]
    return ", ".join(f"{t['token']!r}×{t['count']:g}" for t in toks[:n])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--features", type=int, default=8, help="most interpretable features to list")
    ap.add_argument("--neurons", type=int, default=5, help="most polysemantic neurons to list")
    ap.add_argument("--split", type=int, default=3, help="features shown per neuron")
    a = ap.parse_args()

    manifest = load_json(os.path.join(a.run_dir, "manifest.json"))
    saes = manifest.get("saes") or fail(f"{a.run_dir} is not a run with `saes:`")
    hook, point, sae_dir = saes[0]["hook"], saes[0]["point"], saes[0]["path"]
    top = table_rows(load_json(os.path.join(a.run_dir, "results", "top.json")), "top_activations")
    poly = table_rows(load_json(os.path.join(a.run_dir, "results", "poly.json")), "neurons")

    best, positive = {}, {}  # (source, unit) -> its rank-1 example / number of top examples above 0
    for r in top:
        key = (r["source"], r["neuron"])
        if r["rank"] == 1:
            best[key] = r
        positive[key] = positive.get(key, 0) + (r["value"] > 0)
    k = max(r["rank"] for r in top)
    score = {(r["hook"], r["neuron"]): r for r in poly}
    if not any(h == point for h, _ in score) or not any(h == hook for h, _ in score):
        fail(f"results/poly.json does not rank both {hook} and {point}")

    def live(h):
        return [r for (hh, u), r in score.items() if hh == h and positive.get((h, u), 0) == k]

    def context(r):
        return f"{r['before']}[{r['token']}]{r['after']}".replace("\n", " ")

    feats, neurons = live(point), live(hook)
    if not feats:
        fail(f"no live features in {point}: train the SAE longer")
    median = lambda xs: sorted(xs)[len(xs) // 2] if xs else float("nan")
    print(f"{len(neurons)} live neurons of {hook}, median score {median([r['score'] for r in neurons]):.2f}; "
          f"{len(feats)} live features of {point}, median score {median([r['score'] for r in feats]):.2f}")

    print(f"\nMost interpretable features of {point} (lowest score = fewest distinct top tokens; one per token):")
    shown = set()
    for r in sorted(feats, key=lambda r: (r["score"], -best[(point, r["neuron"])]["value"])):
        lead = json.loads(r["evidence"])["tokens"][0]["token"]
        if lead in shown:
            continue
        shown.add(lead)
        b = best[(point, r["neuron"])]
        print(f"  f{r['neuron']:<5} score {r['score']:.2f}  max {b['value']:.2f}  tokens {tokens_text(r['evidence'])}")
        print(f"          e.g. {context(b)}")
        if len(shown) == a.features:
            break

    w, latents, d_in = decoder(sae_dir)
    strong = median([best[(hook, r["neuron"])]["value"] for r in neurons])
    candidates = [r for r in neurons if best[(hook, r["neuron"])]["value"] >= strong]
    print(f"\nMost polysemantic neurons of {hook} (top activation >= {strong:.2f}) and the features that point along them:")
    for r in sorted(candidates, key=lambda r: -r["score"])[: a.neurons]:
        j = r["neuron"]
        if j >= d_in:
            fail(f"neuron {j} is outside the SAE's {d_in} inputs")
        b = best[(hook, j)]
        print(f"  n{j:<5} score {r['score']:.2f}  max {b['value']:.2f}  tokens {tokens_text(r['evidence'], 8)}")
        for weight, f in sorted(((w[f["neuron"] * d_in + j], f["neuron"]) for f in feats), reverse=True)[: a.split]:
            fr = score[(point, f)]
            print(f"      f{f:<5} w {weight:.2f}  score {fr['score']:.2f}  tokens {tokens_text(fr['evidence'])}")
    print("SAE_FEATURES_OK")


if __name__ == "__main__":
    main()
