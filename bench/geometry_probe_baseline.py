#!/usr/bin/python3
"""scikit-learn baseline for bench/geometry_probe.sh: the same activations, the same points and split as the
nscope run, through what a Python user runs (Debian python3-sklearn):

  probe   StandardScaler (fitted on the training points) + LogisticRegression(penalty="elasticnet",
          solver="saga", l1_ratio, C) with its default tol and max_iter, held-out accuracy;
  kmeans  KMeans(n_clusters=k, n_init) on the neurons' standardised, unit-length activation profiles (the
          points nscope sampled), inertia and silhouette_score.

    python3 bench/geometry_probe_baseline.py probe RUN_DIR HOOK CLASSES.npy --l1-ratio 0.5 --C 1 --threads 2
    python3 bench/geometry_probe_baseline.py kmeans RUN_DIR HOOK --k 16 --n-init 10 --threads 2
RUN_DIR holds an `activations` export and the nscope result (`probe` / `kmeans`). Prints one JSON line with
seconds (fit and scoring only, not loading), the quality figures and the nscope figures read from its result.
"""
import argparse
import json
import time
import warnings

import numpy as np
from threadpoolctl import threadpool_limits


def activations(run, hook):
    acts = np.load(f"{run}/activations/{hook}.npy", mmap_mode="r")
    mask = np.load(f"{run}/activations/attention_mask.npy")
    return acts, mask


def probe(a):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    acts, _ = activations(a.run, a.hook)
    points = np.load(f"{a.run}/results/probe.{a.hook}.points.npy")  # prompt, position, test
    classes = np.load(a.classes)  # class index per prompt
    x = np.asarray(acts[points[:, 0], points[:, 1]], dtype=np.float64 if a.float64 else np.float32)
    y = classes[points[:, 0]]
    test = points[:, 2] == 1
    with threadpool_limits(a.threads), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        start = time.perf_counter()
        scaler = StandardScaler().fit(x[~test])
        model = LogisticRegression(penalty="elasticnet", solver="saga", l1_ratio=a.l1_ratio, C=a.C, random_state=0)
        model.fit(scaler.transform(x[~test]), y[~test])
        accuracy = float(model.score(scaler.transform(x[test]), y[test]))
        seconds = time.perf_counter() - start
    mine = json.load(open(f"{a.run}/results/probe.json"))["data"]["hooks"][a.hook]
    print(json.dumps({"impl": "sklearn", "seconds": seconds, "accuracy": accuracy, "n_iter": int(model.n_iter_[0]),
                      "converged": not any(issubclass(w.category, ConvergenceWarning) for w in caught),
                      "points": int(len(y)), "test": int(test.sum()), "dtype": str(x.dtype),
                      "nscope_accuracy": mine["accuracy"], "nscope_iterations": mine["iterations"],
                      "nscope_converged": mine["converged"]}))


def kmeans(a):
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, silhouette_score

    acts, mask = activations(a.run, a.hook)
    x = np.asarray(acts[mask.astype(bool)], dtype=np.float32)  # every real token, in (prompt, position) order
    if a.points and a.points < len(x):
        raise SystemExit("the nscope run sampled its points; run it with points >= tokens for the same profiles")
    with threadpool_limits(a.threads):
        start = time.perf_counter()
        prof = x.T.astype(np.float64)
        prof -= prof.mean(axis=1, keepdims=True)
        norm = np.linalg.norm(prof, axis=1)
        live = norm > 1e-6 * np.sqrt(prof.shape[1])
        prof = (prof[live] / norm[live, None]).astype(np.float32)
        km = KMeans(n_clusters=a.k, n_init=a.n_init, random_state=0).fit(prof)
        silhouette = float(silhouette_score(prof, km.labels_))
        seconds = time.perf_counter() - start
    res = json.load(open(f"{a.run}/results/kmeans.json"))["data"]
    cols = res["tables"]["layers"]["columns"]
    row = dict(zip(cols, res["tables"]["layers"]["rows"][0]))
    mine = np.load(f"{a.run}/results/kmeans.{a.hook}.labels.npy")[live]
    print(json.dumps({"impl": "sklearn", "seconds": seconds, "inertia": float(km.inertia_), "silhouette": silhouette,
                      "n_iter": int(km.n_iter_), "neurons": int(live.sum()), "profile_points": int(prof.shape[1]),
                      "nscope_inertia": row["inertia"], "nscope_silhouette": row["silhouette"],
                      "adjusted_rand": float(adjusted_rand_score(km.labels_, mine))}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["probe", "kmeans"])
    ap.add_argument("run")
    ap.add_argument("hook")
    ap.add_argument("classes", nargs="?")
    ap.add_argument("--l1-ratio", type=float, default=0.5)
    ap.add_argument("--C", type=float, default=1.0)
    ap.add_argument("--float64", action="store_true", help="probe in float64 (default: float32, as loaded)")
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--n-init", type=int, default=10)
    ap.add_argument("--points", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    probe(a) if a.what == "probe" else kmeans(a)


if __name__ == "__main__":
    main()
