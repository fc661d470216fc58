"""Where does this machine sit among the public devices? Latency range of a local arch table and
the Spearman rank correlation between each local device column and each public device column,
over the architectures both measured; a heatmap PNG of all devices' pairwise correlations.

    .venv/bin/python benchmarks/local_vs_public.py --space nb201 --local hwlat/device_tables/tables/arch/nb201_cpu_onnxruntime_fp32_threads1.csv
    .venv/bin/python benchmarks/local_vs_public.py --space fbnet --local my_fbnet.csv --out results/fbnet_local_vs_public.png

Public data: --public-data or $HWLAT_LATENCY_DATA (default ../shared/data/latency).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hwlat.device_tables.archtable import ArchTable, public_files  # noqa: E402
from hwlat.nas.spaces import arch_keys, known_arch_keys  # noqa: E402
from hwlat.predictors.metrics import spearman  # noqa: E402


def pairwise_spearman(frame, devices) -> np.ndarray:
    """Spearman of every device pair over the rows both have (nan when fewer than 5)."""
    x = frame[devices].to_numpy(dtype=float)
    k = len(devices)
    out = np.full((k, k), np.nan)
    for i in range(k):
        for j in range(i, k):
            ok = ~np.isnan(x[:, i]) & ~np.isnan(x[:, j])
            if ok.sum() >= 5:
                out[i, j] = out[j, i] = spearman(x[ok, i], x[ok, j])
    return out


def heatmap(corr: np.ndarray, labels: list[str], local: set[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(labels)
    fig, ax = plt.subplots(figsize=(0.42 * k + 3, 0.42 * k + 2.2))
    im = ax.imshow(corr, vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(k), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(k), labels, fontsize=7)
    for t in ax.get_xticklabels() + ax.get_yticklabels():
        if t.get_text() in local:
            t.set_color("darkgreen")
            t.set_fontweight("bold")
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if not np.isnan(corr[i, j]):
                    ax.text(j, i, f"{corr[i, j]:.2f}", ha="center", va="center", fontsize=5,
                            color="white" if abs(corr[i, j]) > 0.6 else "black")
    fig.colorbar(im, ax=ax, shrink=0.7, label="Spearman")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", required=True, choices=["nb201", "fbnet", "ofa"])
    ap.add_argument("--local", nargs="+", required=True, help="local arch table CSV(s) of the space")
    ap.add_argument("--public-data", help="folder of the public CSVs")
    ap.add_argument("--out", help="heatmap PNG (default results/local_vs_public_<space>.png)")
    args = ap.parse_args(argv)

    keys = arch_keys(args.space)
    local = ArchTable.read(args.local, space=keys, candidates=known_arch_keys())
    public = ArchTable.read(public_files(keys, args.public_data), space=keys)
    clash = set(local.devices) & set(public.devices)
    if clash:
        raise SystemExit(f"local device columns {sorted(clash)} clash with public ones; rename them")
    joined = public.frame.merge(local.frame[[local.primary] + local.devices], on=public.primary, how="inner")
    print(f"{args.space}: {len(local)} local architectures, {len(joined)} also in the public data "
          f"({len(public.devices)} public devices)")
    if len(joined) < 5:
        raise SystemExit("fewer than 5 architectures in common: nothing to correlate")
    for d in local.devices:
        col = local.frame[d].dropna()
        print(f"\nlocal {d}: {col.notna().sum()} archs, median {col.median():.3f} ms, range {col.min():.3f}..{col.max():.3f} ms "
              f"(x{col.max() / col.min():.1f}), {int(local.frame[d].isna().sum())} missing")
        rows = []
        for p in public.devices:
            ok = joined[[d, p]].dropna()
            if len(ok) >= 5:
                rows.append((spearman(ok[d], ok[p]), p, len(ok), ok[p].min(), ok[p].median(), ok[p].max()))
        rows.sort(key=lambda r: -r[0] if r[0] == r[0] else 2)
        print(f"  {'public device':<16} {'Spearman':>9} {'n':>6}  {'public ms median (range)':>26}")
        for rho, p, n, lo, med, hi in rows:
            print(f"  {p:<16} {rho:>9.3f} {n:>6}  {f'{med:.3f} ({lo:.3f}..{hi:.3f})':>26}")
    devices = public.devices + local.devices
    corr = pairwise_spearman(joined, devices)
    # order devices by their mean correlation with the rest, local ones last for readability
    pub_order = sorted(range(len(public.devices)), key=lambda i: -np.nanmean(corr[i]))
    order = pub_order + list(range(len(public.devices), len(devices)))
    corr = corr[np.ix_(order, order)]
    labels = [devices[i] for i in order]
    out = Path(args.out or ROOT / "results" / f"local_vs_public_{args.space}.png")
    heatmap(corr, labels, set(local.devices), out,
            f"{args.space}: Spearman between devices over {len(joined)} common architectures (local in green)")
    print(f"\nheatmap: {out}")
    return 0


if __name__ == "__main__":
    from hwlat.cli import run_script

    raise SystemExit(run_script(main))
