"""Numbers from a GPU session (benchmarks/gpu_session.sh): repeatability of the measurements, fp16 vs
fp32, and how the measured NB201 latencies rank architectures compared with the public GPU columns.

    python benchmarks/gpu_report.py SESSION            # a folder, or the gpu_tables.tar.gz it came back as
    python benchmarks/gpu_report.py SESSION --json report.json --public-data ../shared/data/latency

Repeatability: the same architectures (ops) measured twice in one session, Spearman between the runs
and the relative differences |run2 - run1| / run1. Correlation: Spearman between each measured batch
column and each public GPU column (1080ti_*, 2080ti_*, titanx_*, titanxp_*) on the archs both hold,
over NB201 900..1899 (the HELP test range) and over every arch measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hwlat.device_tables.archtable import ArchTable, public_files  # noqa: E402
from hwlat.device_tables.table import DeviceTable  # noqa: E402
from hwlat.nas.spaces import arch_keys  # noqa: E402

PUBLIC_GPU_PREFIXES = ("1080ti_", "2080ti_", "titanx_", "titanxp_", "titan_xp", "v100")
HELP_TEST = range(900, 1900)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if len(a) < 3:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def rel_diff_stats(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Median and p90 of |b - a| / a, and the median ratio b / a."""
    rel = np.abs(b - a) / a
    return {"median_rel_diff": float(np.median(rel)), "p90_rel_diff": float(np.percentile(rel, 90)),
            "median_ratio": float(np.median(b / a))}


def open_session(path: Path, tmp: Path) -> Path:
    if path.is_dir():
        return path
    with tarfile.open(path) as tar:
        tar.extractall(tmp, filter="data")
    found = [p.parent for p in tmp.rglob("session.json")]
    if not found:
        raise SystemExit(f"{path}: no session.json inside; is it a gpu_session archive?")
    return found[0]


def arch_columns(folder: Path) -> dict[str, Any]:
    """device column -> pandas Series indexed by arch_str (ms), for each arch table in `folder`."""
    out = {}
    for csv in sorted(folder.glob("nb201_*.csv")):
        if csv.name.endswith(".stats.csv"):
            continue
        t = ArchTable.read(csv, space=arch_keys("nb201"))
        for d in t.devices:
            s = t.frame.set_index("arch_str")[d].dropna()
            out[d] = s
    return out


def index_of(table_folder: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for csv in table_folder.glob("nb201_*.csv"):
        if csv.name.endswith(".stats.csv"):
            continue
        t = ArchTable.read(csv, space=arch_keys("nb201"))
        out.update(dict(zip(t.frame["arch_str"], t.frame["nb201_index"].astype(int))))
    return out


def batch_of(device: str) -> int:
    for part in device.split("/"):
        if part.startswith("batch="):
            return int(part.split("=", 1)[1])
    return 1


def op_medians(path: Path) -> dict[str, float]:
    return {r.spec.key: r.measurement.median_ms for r in DeviceTable.load(path) if r.ok}


def report(session: Path, public_data: str | None) -> dict[str, Any]:
    meta = json.loads((session / "session.json").read_text())
    res: dict[str, Any] = {"device": meta["device"]["name"], "gpu": meta["device"]["fingerprint"].get("gpu", {}),
                           "phases": meta.get("phases", [])}
    gpu = res["gpu"]
    print(f"device: {res['device']}")
    if gpu:
        keys = ("name", "memory_total_mib", "driver_version", "cuda_runtime", "cudnn", "compute_capability",
                "multiprocessors", "clocks_max_sm_mhz", "clocks_sm_mhz", "power_limit_w")
        print("gpu:    " + ", ".join(f"{k}={gpu[k]}" for k in keys if gpu.get(k) is not None))
    for p in res["phases"]:
        print(f"  phase {p['name']:<11} {p['measured']:>5} measured {p['failed']:>3} failed {p['noisy']:>4} noisy "
              f"in {p['seconds']:>5.0f} s{' (deadline)' if p.get('stopped_by_deadline') else ''}")

    # ---- repeatability: archs ----
    run1 = arch_columns(session / "arch") if (session / "arch").is_dir() else {}
    run2 = arch_columns(session / "arch_run2") if (session / "arch_run2").is_dir() else {}
    res["arch_repeatability"] = {}
    if run1 and run2:
        print("\narch repeatability (run 2 vs run 1, same session)")
        print(f"  {'batch':>5} {'archs':>6} {'spearman':>9} {'median |d|/t':>13} {'p90 |d|/t':>10} {'ratio':>7}")
    for dev, s2 in sorted(run2.items(), key=lambda kv: batch_of(kv[0])):
        s1 = run1.get(dev)
        if s1 is None:
            continue
        common = s1.index.intersection(s2.index)
        a, b = s1[common].to_numpy(float), s2[common].to_numpy(float)
        entry = {"archs": int(len(common)), "spearman": spearman(a, b), **(rel_diff_stats(a, b) if len(a) else {})}
        res["arch_repeatability"][dev] = entry
        if len(a):
            print(f"  {batch_of(dev):>5} {len(a):>6} {entry['spearman']:>9.4f} {entry['median_rel_diff']:>13.2%} "
                  f"{entry['p90_rel_diff']:>10.2%} {entry['median_ratio']:>7.3f}")

    # ---- repeatability: ops, and fp16 vs fp32 ----
    ops_dir, ops2_dir = session / "ops", session / "ops_run2"
    stems = {p.stem: p for p in ops_dir.glob("*.csv")} if ops_dir.is_dir() else {}
    fp32 = next((p for s, p in stems.items() if "_fp32_" in s), None)
    fp16 = next((p for s, p in stems.items() if "_fp16_" in s), None)
    if fp32 is not None and ops2_dir.is_dir() and (ops2_dir / fp32.name).exists():
        m1, m2 = op_medians(fp32), op_medians(ops2_dir / fp32.name)
        common = sorted(set(m1) & set(m2))
        a, b = np.array([m1[k] for k in common]), np.array([m2[k] for k in common])
        res["op_repeatability"] = {"ops": len(common), "spearman": spearman(a, b), **rel_diff_stats(a, b)}
        r = res["op_repeatability"]
        print(f"\nop repeatability (fp32, run 2 vs run 1): {r['ops']} ops, spearman {r['spearman']:.4f}, "
              f"median |d|/t {r['median_rel_diff']:.2%}, p90 {r['p90_rel_diff']:.2%}, median ratio {r['median_ratio']:.3f}")
    if fp32 is not None and fp16 is not None:
        m32, m16 = op_medians(fp32), op_medians(fp16)
        common = sorted(set(m32) & set(m16))
        if common:
            speed = np.array([m32[k] / m16[k] for k in common])
            convs = np.array(["conv" in k.split("|")[0] for k in common])
            res["fp16_speedup"] = {"ops": len(common), "median": float(np.median(speed)),
                                   "median_conv": float(np.median(speed[convs])) if convs.any() else None,
                                   "median_other": float(np.median(speed[~convs])) if (~convs).any() else None}
            f = res["fp16_speedup"]
            print(f"fp16 vs fp32 ops: {f['ops']} ops, median speed-up {f['median']:.2f}x "
                  f"(convolutions {f['median_conv'] or float('nan'):.2f}x, others {f['median_other'] or float('nan'):.2f}x)")

    # ---- correlation with the public GPU columns ----
    if not run1:
        return res
    try:
        files = public_files(arch_keys("nb201"), public_data)
    except Exception as exc:
        print(f"\nno public data ({exc}); pass --public-data")
        return res
    public = ArchTable.read([f for f in files if f.stem == "nb201"], space=arch_keys("nb201"))
    gpu_cols = [d for d in public.devices if d.startswith(PUBLIC_GPU_PREFIXES)]
    pub = public.frame.set_index("arch_str")
    idx = index_of(session / "arch")
    res["public_spearman"] = {}
    print("\nSpearman: measured NB201 latency vs public GPU columns (HELP test range 900..1899 / all measured)")
    print(f"  {'measured':<44}" + "".join(f"{c:>15}" for c in gpu_cols))
    for dev, s in sorted(run1.items(), key=lambda kv: batch_of(kv[0])):
        row = {}
        cells = []
        for col in gpu_cols:
            both = s.index.intersection(pub[col].dropna().index)
            test = [k for k in both if idx.get(k, -1) in HELP_TEST]
            r_test = spearman(s[test].to_numpy(float), pub.loc[test, col].to_numpy(float))
            r_all = spearman(s[both].to_numpy(float), pub.loc[both, col].to_numpy(float))
            row[col] = {"help_test": r_test, "all": r_all, "archs_test": len(test), "archs_all": int(len(both))}
            cells.append(f"{r_test:>7.3f}/{r_all:<7.3f}")
        res["public_spearman"][dev] = row
        print(f"  {dev:<44}" + "".join(f"{c:>15}" for c in cells))
    if len(run1) > 1:
        devs = sorted(run1, key=batch_of)
        print("\nSpearman between measured batches")
        for i, a in enumerate(devs):
            for b in devs[i + 1:]:
                both = run1[a].index.intersection(run1[b].index)
                r = spearman(run1[a][both].to_numpy(float), run1[b][both].to_numpy(float))
                res.setdefault("batch_spearman", {})[f"{batch_of(a)} vs {batch_of(b)}"] = r
                print(f"  batch {batch_of(a)} vs {batch_of(b)}: {r:.4f} ({len(both)} archs)")
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("session", type=Path, help="session folder or gpu_tables.tar.gz")
    ap.add_argument("--public-data", help="folder of the public latency CSVs (default $HWLAT_LATENCY_DATA or ../shared)")
    ap.add_argument("--json", type=Path, help="also write the numbers as JSON here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        res = report(open_session(args.session, Path(tmp)), args.public_data)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    from hwlat.cli import run_script

    raise SystemExit(run_script(main))
