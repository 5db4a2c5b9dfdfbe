#!/usr/bin/env python3
"""The judge's oracle: seeded cases, their samples made exactly as
crates/greenlight-core/src/judge/samples.rs makes them, and what SciPy says of each.

Writes crates/greenlight-core/src/judge/oracle.json. Run by `make oracle` (needs
scipy==1.17.1 and numpy); the tests read the file and never run this script.

- U and the p-value: scipy.stats.mannwhitneyu(x, y), two-sided, method 'auto'.
- The shift: numpy's median of every x - y.
- The interval: a port of Kayenta's wilcoxonDiff (R's wilcox.test, asymptotic) solved by
  scipy.optimize.brentq, as Kayenta solves it with Brent's method.
- The class: Kayenta's rules with the effect-size floor, as the book states them (docs/src/how-to/compare.md).
"""
import json
import math
import os
import sys

import numpy as np
import scipy
from scipy import optimize, stats

MASK = (1 << 64) - 1
CONFIDENCE = 0.98
TOLERANCE = 0.25


class Rng:
    def __init__(self, seed):
        self.state = seed & MASK

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def uniform(self):
        return float(self.next() >> 11) * (1.0 / float(1 << 53))


def value(rng, shape):
    total = 0.0
    for _ in range(12):
        total += rng.uniform()
    v = shape["center"] + shape["spread"] * (total - 6.0)
    if shape["outliers"] > 0.0 and rng.uniform() < shape["outliers"]:
        v = shape["center"] + shape["spread"] * 20.0 * rng.uniform()
    if shape["round_to"] > 0.0:
        v = math.floor(v * shape["round_to"]) / shape["round_to"]
    return v * shape["scale"]


def draw(rng, shape, n):
    return [value(rng, shape) for _ in range(n)]


def wilcoxon_diff(mu, quantile, x, y):
    """Kayenta's MannWhitney.wilcoxonDiff."""
    nx, ny = float(len(x)), float(len(y))
    dr = stats.rankdata(np.concatenate([np.asarray(x) - mu, np.asarray(y)]))
    _, counts = np.unique(dr, return_counts=True)
    dz = dr[: len(x)].sum() - nx * (nx + 1) / 2 - nx * ny / 2
    correction = 0.0 if dz == 0 else math.copysign(0.5, dz)
    sigma = math.sqrt(
        (nx * ny / 12)
        * ((nx + ny + 1) - float((counts.astype(float) ** 3 - counts).sum()) / ((nx + ny) * (nx + ny - 1)))
    )
    if sigma == 0:
        return 0.0 - quantile
    return (dz - correction) / sigma - quantile


def find_root(quantile, x, y):
    lo, hi = min(x) - max(y), max(x) - min(y)
    f_lo, f_hi = wilcoxon_diff(lo, quantile, x, y), wilcoxon_diff(hi, quantile, x, y)
    if f_lo <= 0:
        return lo
    if f_hi >= 0:
        return hi
    return optimize.brentq(wilcoxon_diff, lo, hi, args=(quantile, x, y), xtol=1e-300, rtol=4 * np.finfo(float).eps, maxiter=2000)


def interval(x, y):
    z = stats.norm.isf((1 - CONFIDENCE) / 2)
    return find_root(z, x, y), find_root(-z, x, y)


def classify(x, y, estimate, lower, upper, direction, allowed_increase, allowed_decrease):
    if sorted(x) == sorted(y) or len(set(x) | set(y)) == 1:
        return "Pass"
    my = sum(y) / len(y)
    ratio = None if my == 0 else (sum(x) / len(x)) / my
    bound = TOLERANCE * abs(estimate)
    high = direction in ("Increase", "Either") and lower > bound and (ratio is None or ratio >= allowed_increase)
    low = direction in ("Decrease", "Either") and upper < -bound and (ratio is None or ratio <= allowed_decrease)
    return "High" if high else "Low" if low else "Pass"


def shape(center, spread, outliers=0.0, round_to=0.0, scale=1.0):
    return {"center": center, "spread": spread, "outliers": outliers, "round_to": round_to, "scale": scale}


def cases():
    """At least 1,200 cases: tiny, tied, constant, identical, outliers, 1e-9..1e9, n up to 500."""
    meta = Rng(20261207)
    sizes = [1, 2, 3, 4, 5, 7, 8, 9, 10, 15, 20, 30, 50, 100, 200, 500]
    scales = [1e-9, 1e-6, 1e-3, 1.0, 1e3, 1e6, 1e9]
    out = []
    for i in range(1280):
        n1 = sizes[int(meta.uniform() * len(sizes))]
        n2 = sizes[int(meta.uniform() * len(sizes))]
        kind = i % 8
        if kind == 5:  # identical samples: the same values on both sides
            n2 = n1
        scale = scales[int(meta.uniform() * len(scales))]
        shift = [0.0, 0.0, 0.25, 0.5, 1.0, 2.0, -0.5, -1.0][int(meta.uniform() * 8)]
        base = shape(10.0, 1.0, scale=scale)
        if kind == 1:  # ties
            base = shape(10.0, 1.0, round_to=2.0, scale=scale)
        elif kind == 2:  # outliers
            base = shape(10.0, 1.0, outliers=0.05, scale=scale)
        elif kind == 3:  # constant sides
            base = shape(10.0, 0.0, scale=scale)
        elif kind == 4:  # heavy ties
            base = shape(10.0, 1.0, round_to=0.5, scale=scale)
        canary = dict(base, center=base["center"] + shift * max(base["spread"], 0.5))
        direction = ["Increase", "Decrease", "Either"][i % 3]
        out.append({
            "seed": i * 7919 + 1,
            "n1": n1,
            "n2": n2,
            "canary": canary,
            "baseline": base,
            "direction": direction,
            "allowed_increase": [1.0, 1.1, 1.5][i % 3 if kind != 7 else 0],
            "allowed_decrease": [1.0, 0.9, 0.5][i % 3 if kind != 7 else 0],
            "identical": kind == 5,
        })
    return out


def expected(case):
    rng = Rng(case["seed"])
    x = draw(rng, case["canary"], case["n1"])
    y = list(x) if case["identical"] else draw(rng, case["baseline"], case["n2"])
    res = stats.mannwhitneyu(x, y, alternative="two-sided", method="auto")
    estimate = float(np.median(np.subtract.outer(np.asarray(x), np.asarray(y))))
    lower, upper = interval(x, y)
    # Which method SciPy's 'auto' chose, read from SciPy itself: the one whose p it gave
    # (unknown, None, where both methods give the same p).
    asymptotic = stats.mannwhitneyu(x, y, alternative="two-sided", method="asymptotic").pvalue
    exact_p = stats.mannwhitneyu(x, y, alternative="two-sided", method="exact").pvalue
    exact = None if asymptotic == exact_p else bool(res.pvalue == exact_p)
    return {
        "u": float(res.statistic),
        "p": float(res.pvalue),
        "exact": exact,
        "estimate": estimate,
        "lower": float(lower),
        "upper": float(upper),
        "class": classify(x, y, estimate, lower, upper, case["direction"], case["allowed_increase"], case["allowed_decrease"]),
    }


def main():
    if scipy.__version__ != "1.17.1":
        sys.exit(f"the oracle is pinned to scipy 1.17.1, not {scipy.__version__}")
    all_cases = cases()
    for case in all_cases:
        case["expected"] = expected(case)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.path.join(root, "crates/greenlight-core/src/judge/oracle.json")
    with open(path, "w") as f:
        json.dump({"scipy": scipy.__version__, "cases": all_cases}, f, separators=(",", ":"))
        f.write("\n")
    print(f"{len(all_cases)} cases written to {os.path.relpath(path, root)}")


if __name__ == "__main__":
    main()
