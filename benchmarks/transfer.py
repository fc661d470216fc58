"""Few-shot latency transfer on HELP's split: every method on every unseen device of the public
data, through `hwlat bench transfer` (the same command users run on their own tables).

Runs (10 references + 10 random shots, 10 repeats, seed 0, query/trim as the issue defines):
  nb201 A  nb201.csv, test 2080ti_*, titanxp_*                      (train: HELP meta-train split)
  nb201 B  nb201.csv + nb201_subset.csv, test the edge devices     (rice_pixel3 = pixel3, left out)
  fbnet    fbnet.csv, test 2080ti_*, titanxp_*
  ofa x3   ofa.csv, leave one GPU out (no HELP split exists for OFA)
then a shots curve, 5 + 5, and the timings the targets name (meta-training, adaptation, batch
prediction of 100,000 architectures). JSON per run under --out.

    .venv/bin/python benchmarks/transfer.py [--data DIR] [--out results/transfer] [--methods all] [--quick]
        [--shots-from suggested --repeats 1]   (the method's own suggested shots in place of random ones:
                                                one deterministic set per space, no shots curve)
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hwlat.device_tables.archtable import public_data_dir  # noqa: E402
from hwlat.cli import main as hwlat  # noqa: E402

NB_TRAIN = "1080ti_1,1080ti_32,1080ti_256,silver_4114,silver_4210r,samsung_a50,pixel3,essential_ph_1,samsung_s7"
NB_VALID = "titanx_1,titanx_32,titanx_256,gold_6240"
FB_TRAIN = "1080ti_1,1080ti_32,1080ti_64,silver_4114,silver_4210r,samsung_a50,pixel3,essential_ph_1,samsung_s7"
FB_VALID = "titanx_1,titanx_32,titanx_64,gold_6240"
OFA = ["2080ti_1", "2080ti_32", "2080ti_64", "titan_xp_1", "titan_xp_32", "titan_xp_64", "v100_1", "v100_32", "v100_64"]


def runs(data: Path) -> list[tuple[str, list[str]]]:
    d = lambda f: str(data / f)  # noqa: E731
    out = [
        ("nb201_gpus", ["--space", "nb201", "--table", d("nb201.csv"), "--train", NB_TRAIN, "--valid", NB_VALID,
                        "--test", "2080ti_1,2080ti_32,2080ti_256,titanxp_1,titanxp_32,titanxp_256"]),
        ("nb201_edge", ["--space", "nb201", "--table", d("nb201.csv"), "--table", d("nb201_subset.csv"), "--train", NB_TRAIN,
                        "--valid", NB_VALID, "--test", "eagle_cpu_855,eagle_gpu_855,eagle_gtx,eagle_i7,rice_edgegpu,rice_edgetpu"]),
        ("fbnet", ["--space", "fbnet", "--table", d("fbnet.csv"), "--train", FB_TRAIN, "--valid", FB_VALID,
                   "--test", "2080ti_1,2080ti_32,2080ti_64,titanxp_1,titanxp_32,titanxp_64"]),
    ]
    for gpu in ("2080ti", "titan_xp", "v100"):
        test = [x for x in OFA if x.startswith(gpu)]
        out.append((f"ofa_{gpu}", ["--space", "ofa", "--table", d("ofa.csv"), "--train", ",".join(x for x in OFA if x not in test),
                                   "--test", ",".join(test)]))
    return out


def summarize(results: dict[str, dict], title: str) -> None:
    methods = list(next(iter(results.values()))["methods"])
    groups = {"nb201": [k for k in results if k.startswith("nb201")], "fbnet": ["fbnet"],
              "ofa": [k for k in results if k.startswith("ofa")]}
    print(f"\n== {title}: mean over test devices (Spearman / ±10% accuracy), worst device's Spearman ==")
    print(f"{'method':<10}" + "".join(f"{g:>26}" for g in groups) + f"{'all devices':>26}")
    for m in methods:
        cells, every = [], []
        for g, keys in groups.items():
            devs = [(v["spearman_mean"], v["within10_mean"]) for k in keys if k in results
                    for v in results[k]["methods"][m]["devices"].values()]
            every += devs
            if devs:
                a = np.array(devs)
                cells.append(f"{a[:, 0].mean():.3f} / {100 * a[:, 1].mean():4.1f}% (min {a[:, 0].min():.2f})")
            else:
                cells.append("-")
        a = np.array(every)
        cells.append(f"{a[:, 0].mean():.3f} / {100 * a[:, 1].mean():4.1f}% (min {a[:, 0].min():.2f})")
        print(f"{m:<10}" + "".join(f"{c:>26}" for c in cells))


def timings(data: Path) -> None:
    """The targets' timings on this machine, one BLAS thread: meta-training, adaptation, 100k batch."""
    from threadpoolctl import threadpool_limits

    from hwlat.transfer_tables import load_transfer_tables
    from hwlat.predictors.help import HelpTransfer
    from hwlat.predictors.transfer import TransferPredictor

    print("\n== timings (this machine, 1 thread; median of 5) ==")
    with threadpool_limits(limits=1):
        t = load_transfer_tables("nb201", [str(data / "nb201.csv")], "nb201_index", NB_TRAIN.split(","))
        td = t.transfer_data(NB_TRAIN.split(","), [])
        X = td.X
        big = np.tile(X, (7, 1))[:100_000]
        y = t.column("2080ti_1")
        for name, make in (("transfer", lambda: TransferPredictor(td.layout)),
                           ("help", lambda: HelpTransfer(td.layout, n_references=10))):
            reps = 5 if name == "transfer" else 1
            fit_s = []
            for _ in range(reps):
                t0 = time.perf_counter()
                pred = make().fit(X, td.train)
                fit_s.append(time.perf_counter() - t0)
            refs = pred.choose_references(X, 10)
            shots = np.concatenate([refs, np.arange(2000, 2010)])
            ad, pr = [], []
            for _ in range(5):
                t0 = time.perf_counter()
                pred.adapt(X[shots], y[shots])
                t1 = time.perf_counter()
                pred.predict(big)
                pr.append(time.perf_counter() - t1)
                ad.append(t1 - t0)
            print(f"  {name:<9} meta-training {np.median(fit_s):6.2f} s | adaptation (20 measurements) "
                  f"{1e3 * np.median(ad):6.1f} ms | prediction {len(big) / np.median(pr):12,.0f} archs/s (batch of {len(big):,})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="public latency CSV folder (default $HWLAT_LATENCY_DATA or ../shared/data/latency)")
    ap.add_argument("--out", default=str(ROOT / "results" / "transfer"))
    ap.add_argument("--methods", default="all")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="10 + 10 only (no 5 + 5, no shots curve)")
    ap.add_argument("--shots-from", default="random", choices=["random", "suggested"],
                    help="random shots (HELP's protocol) or the method's suggested ones after the references")
    args = ap.parse_args()
    data = public_data_dir(args.data)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = [("10+10", ["--shots", "10", "--reference", "10"])]
    if not args.quick:
        settings.append(("5+5", ["--shots", "5", "--reference", "5"]))
    for label, extra in settings:
        results = {}
        for name, argv in runs(data):
            path = out / f"{name}_{label.replace('+', '_')}.json"
            cmd = ["bench", "transfer", *argv, "--methods", args.methods, "--repeats", str(args.repeats), *extra,
                   "--shots-from", args.shots_from, "--json", str(path)]
            if label == "10+10" and name in ("nb201_gpus", "fbnet") and not args.quick and args.shots_from == "random":
                cmd += ["--shots-curve", "0,5,10,20,50"]
            print(f"\n$ hwlat {shlex.join(cmd)}", flush=True)
            if hwlat(cmd) != 0:
                return 1
            results[name] = json.loads(path.read_text())
        summarize(results, label)
    timings(data)
    return 0


if __name__ == "__main__":
    from hwlat.cli import run_script

    raise SystemExit(run_script(main))
