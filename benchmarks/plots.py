"""PNG plots of one benchmark run (matplotlib, a benchmark-only dependency):

- ``<prefix>-tensor-count.png``: time per call against the number of tensors at a fixed total size,
  one panel per benchmark group and dtype, one line per variant; where host overhead shows.
- ``<prefix>-bandwidth.png``: achieved bandwidth as a share of the measured copy bandwidth, per case,
  fusedopt next to torch's fastest path.
"""

from __future__ import annotations

import collections
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _sweeps(rows: list[dict]) -> dict[tuple[str, str, str, float], list[dict]]:
    """Rows grouped by (group, configuration, dtype, total elements to 2 significant digits: equal
    splits round), kept where there are several tensor counts. The configuration is the case name up
    to its first comma (e.g. "momentum" in "momentum, 16 x 1M")."""
    by_key: dict[tuple[str, str, str, float], list[dict]] = collections.defaultdict(list)
    for r in rows:
        by_key[(r["group"], r["case"].split(",")[0], r["dtype"], float(f"{r['numel']:.2g}"))].append(r)
    return {k: v for k, v in by_key.items() if len({r["tensors"] for r in v}) >= 2}


def plot_tensor_count(rows: list[dict], title: str, path: str) -> str | None:
    sweeps = _sweeps(rows)
    if not sweeps:
        return None
    n = len(sweeps)
    cols = min(3, n)
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(5 * cols, 3.8 * ((n + cols - 1) // cols)),
                             squeeze=False)
    for ax, ((group, config, dtype, numel), rs) in zip(axes.flat, sorted(sweeps.items())):
        by_variant: dict[str, list[tuple[int, float]]] = collections.defaultdict(list)
        for r in rs:
            by_variant[r["variant"]].append((r["tensors"], r["median_ms"]))
        for variant, pts in sorted(by_variant.items()):
            pts.sort()
            style = dict(linewidth=2.5, color="black") if variant == "fusedopt" else dict(linewidth=1.2)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=variant, **style)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("tensors (same total size)")
        ax.set_ylabel("ms per call")
        ax.set_title(f"{group}: {config} [{dtype}], {rs[0]['numel'] / 1e6:.1f}M elements", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_bandwidth(rows: list[dict], title: str, path: str) -> str | None:
    cases: dict[tuple[str, str, str], dict[str, dict]] = collections.OrderedDict()
    for r in rows:
        cases.setdefault((r["group"], r["case"], r["dtype"]), {})[r["variant"]] = r
    labels, ours, best = [], [], []
    for (group, case, dtype), variants in cases.items():
        if "fusedopt" not in variants or variants["fusedopt"]["frac_of_copy"] is None:
            continue
        torch_name = variants["fusedopt"].get("best_torch_variant")
        labels.append(f"{group}: {case} [{dtype}]")
        ours.append(100 * variants["fusedopt"]["frac_of_copy"])
        best.append(100 * (variants[torch_name]["frac_of_copy"] or 0.0) if torch_name in variants else 0.0)
    if not labels:
        return None
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(labels) + 1.5))
    y = range(len(labels))
    ax.barh([i + 0.2 for i in y], ours, height=0.4, label="fusedopt", color="black")
    ax.barh([i - 0.2 for i in y], best, height=0.4, label="torch, fastest path", color="tab:orange")
    ax.set_yticks(list(y))
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(100, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("% of measured copy bandwidth (bytes-moved model)")
    ax.set_title(title, fontsize=11)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_run(run: dict, out_dir: str, prefix: str) -> list[str]:
    """Both plots for one run (a line of results.jsonl); returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    env = run["environment"]
    title = f"{env['device_name']}, torch {env['torch']}, {env['date'][:10]}"
    paths = [plot_tensor_count(run["results"], title, os.path.join(out_dir, f"{prefix}-tensor-count.png")),
             plot_bandwidth(run["results"], title, os.path.join(out_dir, f"{prefix}-bandwidth.png"))]
    return [p for p in paths if p]
