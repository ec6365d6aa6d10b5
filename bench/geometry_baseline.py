#!/usr/bin/python3
"""sklearn baselines for bench/geometry.sh (Debian python3-sklearn), on activations exported by an nscope run.

    geometry_baseline.py tokens ACTS.npy MASK.npy OUT.npy          real tokens of [prompts, pos, d] -> [tokens, d]
    geometry_baseline.py profiles ACTS.npy MASK.npy OUT.npy        neurons' standardized profiles -> [d, tokens]
    geometry_baseline.py pca X.npy --k 50                          time PCA(k) (sklearn's default solver)
    geometry_baseline.py tsne X.npy OUT.npy [--pca 50]             time PCA(50) + TSNE(barnes_hut), as people run it
    geometry_baseline.py trust X.npy Y.npy [--sample 5000]         sklearn.manifold.trustworthiness (k = 15)
    geometry_baseline.py evr X.npy NSCOPE_EVR.npy SKLEARN_EVR.npy  largest |EVR - full SVD| of each
Each timed command prints one JSON line; threads are limited by OMP_NUM_THREADS / OPENBLAS_NUM_THREADS (set
by the caller) and n_jobs = --threads.
"""
import argparse
import json
import time

import numpy as np


def tokens(a):
    acts, mask = np.load(a.acts), np.load(a.mask).astype(bool)
    np.save(a.out, np.ascontiguousarray(acts[mask].reshape(int(mask.sum()), -1), dtype=np.float32))


def profiles(a):
    acts, mask = np.load(a.acts), np.load(a.mask).astype(bool)
    x = acts[mask].reshape(int(mask.sum()), -1).T.astype(np.float64)  # [neurons, tokens]
    x -= x.mean(1, keepdims=True)
    sd = x.std(1, keepdims=True)
    x = np.where(sd > 0, x / np.where(sd > 0, sd, 1), 0.0)
    np.save(a.out, np.ascontiguousarray(x, dtype=np.float32))


def pca(a):
    from sklearn.decomposition import PCA
    x = np.load(a.x)
    start = time.perf_counter()
    p = PCA(n_components=a.k, random_state=0).fit(x)
    seconds = time.perf_counter() - start
    np.save(a.out, p.explained_variance_ratio_.astype(np.float32))
    print(json.dumps({"seconds": seconds, "solver": p._fit_svd_solver}))


def tsne(a):
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    x = np.load(a.x)
    start = time.perf_counter()
    y = PCA(n_components=a.pca, random_state=0).fit_transform(x) if 0 < a.pca < x.shape[1] else x
    y = TSNE(n_components=2, perplexity=a.perplexity, early_exaggeration=12.0, learning_rate="auto", n_iter=1000,
             init="pca", method="barnes_hut", angle=0.5, random_state=0, n_jobs=a.threads).fit(y)
    seconds = time.perf_counter() - start
    np.save(a.out, y.embedding_.astype(np.float32))
    print(json.dumps({"seconds": seconds, "kl": float(y.kl_divergence_)}))


def trust(a):
    from sklearn.manifold import trustworthiness
    x, y = np.load(a.x), np.load(a.y)
    rows = np.arange(len(x))
    if a.sample and a.sample < len(x):
        rows = np.sort(np.random.default_rng(a.seed).choice(len(x), a.sample, replace=False))
    start = time.perf_counter()
    t = trustworthiness(x[rows], y[rows], n_neighbors=15)
    print(json.dumps({"trustworthiness": float(t), "points": int(len(rows)), "seconds": time.perf_counter() - start}))


def evr(a):
    x = np.load(a.x).astype(np.float64)
    s = np.linalg.svd(x - x.mean(0), compute_uv=False) ** 2
    exact = s / s.sum()
    out = {}
    for name, path in (("nscope", a.nscope), ("sklearn", a.sklearn)):
        v = np.load(path).reshape(-1)
        out[name] = float(np.abs(v - exact[: len(v)]).max())
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("tokens", "profiles"):
        s = sub.add_parser(name)
        s.add_argument("acts"), s.add_argument("mask"), s.add_argument("out")
    s = sub.add_parser("pca")
    s.add_argument("x"), s.add_argument("out"), s.add_argument("--k", type=int, default=50)
    s = sub.add_parser("tsne")
    s.add_argument("x"), s.add_argument("out")
    s.add_argument("--pca", type=int, default=50)
    s.add_argument("--perplexity", type=float, default=30.0)
    s.add_argument("--threads", type=int, default=2)
    s = sub.add_parser("trust")
    s.add_argument("x"), s.add_argument("y")
    s.add_argument("--sample", type=int, default=0)
    s.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("evr")
    s.add_argument("x"), s.add_argument("nscope"), s.add_argument("sklearn")
    a = ap.parse_args()
    {"tokens": tokens, "profiles": profiles, "pca": pca, "tsne": tsne, "trust": trust, "evr": evr}[a.cmd](a)


if __name__ == "__main__":
    main()
