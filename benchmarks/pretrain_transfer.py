"""Build the pretrained transfer predictors shipped in `hwlat/predictors/pretrained/` and their cards.

For each space: meta-train `TransferPredictor` on the training devices (HELP's meta-train split
for NB201 and FBNet; all nine OFA columns, as no HELP split exists there), choose 10 reference
architectures outside the scored range, save arrays + JSON, load the saved file back and score
it with the transfer protocol (`hwlat bench transfer`'s: 10 references + 10 random shots, and
5 + 5, 10 repeats, seed 0, trimmed 10%) on every unseen device; write `<space>.md`.
OFA's card scores come from leave-one-GPU-out refits of the same predictor (train on two GPUs'
columns, test on the third's), since the shipped one has seen all nine.

    .venv/bin/python benchmarks/pretrain_transfer.py [--data DIR] [--spaces nb201,fbnet,ofa]
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hwlat.device_tables.archtable import public_data_dir  # noqa: E402
from hwlat.commands.bench import default_query, join_key  # noqa: E402
from hwlat.transfer_tables import load_transfer_tables  # noqa: E402
from hwlat.predictors.evaluation import FittedMethod, ProtocolSettings, TargetDevice, run_method  # noqa: E402
from hwlat.predictors.io import load, save  # noqa: E402
from hwlat.predictors.transfer import STACK, TransferPredictor  # noqa: E402

HELP_TRAIN = {
    "nb201": "1080ti_1,1080ti_32,1080ti_256,silver_4114,silver_4210r,samsung_a50,pixel3,essential_ph_1,samsung_s7",
    "fbnet": "1080ti_1,1080ti_32,1080ti_64,silver_4114,silver_4210r,samsung_a50,pixel3,essential_ph_1,samsung_s7",
}
HELP_VALID = {"nb201": "titanx_1,titanx_32,titanx_256,gold_6240", "fbnet": "titanx_1,titanx_32,titanx_64,gold_6240"}
OFA_DEVICES = ["2080ti_1", "2080ti_32", "2080ti_64", "titan_xp_1", "titan_xp_32", "titan_xp_64", "v100_1", "v100_32", "v100_64"]
NB201_SUBSET = ["eagle_cpu_855", "eagle_gpu_855", "eagle_gtx", "eagle_i7", "rice_edgegpu", "rice_edgetpu"]
# rice_pixel3 in nb201_subset.csv is pixel3 (a training device) cell for cell: not an unseen device.


def runs(space: str, data: Path) -> tuple[list[str], list[dict]]:
    """(training devices of the shipped predictor, evaluation runs: files, train, test)."""
    if space == "nb201":
        train = HELP_TRAIN["nb201"].split(",")
        gpus = ["2080ti_1", "2080ti_32", "2080ti_256", "titanxp_1", "titanxp_32", "titanxp_256"]
        return train, [dict(files=[data / "nb201.csv"], train=train, test=gpus),
                       dict(files=[data / "nb201.csv", data / "nb201_subset.csv"], train=train, test=NB201_SUBSET)]
    if space == "fbnet":
        train = HELP_TRAIN["fbnet"].split(",")
        return train, [dict(files=[data / "fbnet.csv"], train=train,
                            test=["2080ti_1", "2080ti_32", "2080ti_64", "titanxp_1", "titanxp_32", "titanxp_64"])]
    out = []
    for gpu in ("2080ti", "titan_xp", "v100"):
        test = [d for d in OFA_DEVICES if d.startswith(gpu)]
        out.append(dict(files=[data / "ofa.csv"], train=[d for d in OFA_DEVICES if d not in test], test=test, refit=True))
    return OFA_DEVICES, out


def evaluate(space: str, run: dict, shipped, settings: ProtocolSettings) -> dict[str, tuple[float, float, float, float]]:
    tables = load_transfer_tables(space, [str(f) for f in run["files"]], join_key(space), run["train"] + run["test"])
    data = tables.transfer_data(run["train"], [])
    lo, hi = default_query(space)
    query = (tables.keys >= lo) & (tables.keys < hi)
    targets = [TargetDevice(n, tables.column(n)) for n in run["test"]]
    if run.get("refit"):
        ok = np.all(np.isfinite(data.train) & (data.train > 0), axis=1)
        model = TransferPredictor(data.layout).fit(data.X[ok], data.train[ok])
    else:
        model = shipped
    res = run_method(FittedMethod("transfer", model), data, targets, query, settings)
    return {d: (r.mean("spearman"), r.std("spearman"), r.mean("within10"), r.mean("mape")) for d, r in res.devices.items()}


def build(space: str, data: Path, out: Path) -> None:
    train, evals = runs(space, data)
    files = [data / "nb201.csv"] if space == "nb201" else [data / f"{space}.csv"]
    tables = load_transfer_tables(space, [str(f) for f in files], join_key(space), train)
    td = tables.transfer_data(train, [])
    ok = np.all(np.isfinite(td.train) & (td.train > 0), axis=1)
    t0 = time.perf_counter()
    pred = TransferPredictor(td.layout).fit(td.X[ok], td.train[ok])
    fit_s = time.perf_counter() - t0
    lo, hi = default_query(space)
    pool = np.flatnonzero(ok & ~((tables.keys >= lo) & (tables.keys < hi)))
    refs = pool[pred.choose_references(td.X[pool], 10)]
    info = {"space": space, "training_devices": train, "n_train_archs": int(ok.sum()),
            "reference_keys": [tables.arch_keys[i] for i in refs],
            "reference_join_keys": [int(tables.keys[i]) for i in refs],
            "features": "hwlat.nas.features.latency_features (version %d)" % td.layout.meta.get("features_version", 1),
            "learners": list(STACK), "built": datetime.date.today().isoformat(),
            "data": [f.name for f in files]}
    save(pred, out / space, info)
    shipped = load(out / space)  # score what is shipped, not the object in memory
    scores = {}
    for shots in (10, 5):
        settings = ProtocolSettings(shots=shots, n_ref=shots, trim=0.1, repeats=10, seed=0)
        for run in evals:
            for d, s in evaluate(space, run, shipped, settings).items():
                scores.setdefault(d, {})[shots] = s
    info["scores"] = {d: {f"{k}+{k}": {"spearman_mean": v[0], "spearman_std": v[1], "within10_mean": v[2], "mape_mean": v[3]}
                          for k, v in s.items()} for d, s in scores.items()}
    save(pred, out / space, info)
    write_card(space, out / f"{space}.md", info, evals, fit_s, pred)
    size = sum((out / f"{space}{ext}").stat().st_size for ext in (".npz", ".json"))
    print(f"{space}: trained on {len(train)} devices, {int(ok.sum())} archs, {fit_s:.2f} s; files {size / 1024:.0f} KiB")
    for d, s in scores.items():
        print(f"  {d:<14} 10+10: Spearman {s[10][0]:.3f}±{s[10][1]:.3f}  ±10% {100 * s[10][2]:5.1f}%  MAPE {100 * s[10][3]:4.1f}%"
              f"   5+5: Spearman {s[5][0]:.3f}  ±10% {100 * s[5][2]:5.1f}%")
    m10 = np.mean([s[10][0] for s in scores.values()])
    m5 = np.mean([s[5][0] for s in scores.values()])
    w10 = np.mean([s[10][2] for s in scores.values()])
    print(f"  {'mean':<14} 10+10: Spearman {m10:.3f}  ±10% {100 * w10:.1f}%   5+5: Spearman {m5:.3f}")


def write_card(space: str, path: Path, info: dict, evals: list[dict], fit_s: float, pred) -> None:
    rows = []
    for d, s in info["scores"].items():
        a, b = s["10+10"], s["5+5"]
        rows.append(f"| {d} | {a['spearman_mean']:.3f} ± {a['spearman_std']:.3f} | {100 * a['within10_mean']:.1f}% | "
                    f"{100 * a['mape_mean']:.1f}% | {b['spearman_mean']:.3f} | {100 * b['within10_mean']:.1f}% |")
    mean = lambda k, m: np.mean([s[k][m] for s in info["scores"].values()])  # noqa: E731
    rows.append(f"| **mean** | **{mean('10+10', 'spearman_mean'):.3f}** | **{100 * mean('10+10', 'within10_mean'):.1f}%** | "
                f"{100 * mean('10+10', 'mape_mean'):.1f}% | **{mean('5+5', 'spearman_mean'):.3f}** | "
                f"{100 * mean('5+5', 'within10_mean'):.1f}% |")
    if space == "ofa":
        how = ("The shipped predictor is meta-trained on all nine OFA columns (no HELP split exists for OFA). "
               "The scores below are from leave-one-GPU-out refits of the same predictor: trained on two GPUs' "
               "three batch sizes, tested on the third GPU's.")
    else:
        how = (f"Meta-trained on HELP's meta-train split; HELP's validation devices ({HELP_VALID[space]}) were "
               "used only to choose the method's settings, never for training. Scored on every other device of the public data (unseen).")
    text = f"""# Pretrained transfer predictor: {space}

`hwlat.predictors.pretrained.load("{space}")` -> `TransferPredictor` (learners: {', '.join(info['learners'])}),
{pred.n_train_archs_} architectures x {pred.n_train_devices_} devices, meta-training {fit_s:.1f} s on this machine.

- **Training devices**: {', '.join(info['training_devices'])}.
- **Features**: {info['features']} of the architectures (the space's encoding, non-negative op counts and log MACs).
- **Reference architectures** (measure these first; `hwlat.predictors.pretrained.reference_keys("{space}")`):
{chr(10).join(f'  - `{k}`' for k in info['reference_keys'])}
- **Files**: `{space}.npz` (arrays) + `{space}.json` (parameters, this card's numbers); no pickles.

## Protocol

HELP's (NeurIPS 2021): per unseen device, 10 reference architectures chosen from training devices
only (one set for every device) + 10 random architectures from outside the scored range are measured;
the predictor adapts and predicts the architectures with key {default_query(space)[0]}..{default_query(space)[1] - 1};
Spearman, ±10% accuracy and MAPE are taken after dropping each device's fastest and slowest 10%.
10 repeats (seed 0); also 5 + 5. {how}

## Scores

| device | Spearman 10+10 | ±10% 10+10 | MAPE 10+10 | Spearman 5+5 | ±10% 5+5 |
|---|---|---|---|---|---|
{chr(10).join(rows)}

Reproduce: `.venv/bin/python benchmarks/pretrain_transfer.py --spaces {space}`; the same numbers come out of
`hwlat bench transfer --methods transfer` (see the README).

## Use

```python
from hwlat.predictors import pretrained
from hwlat.nas.features import latency_features
pred = pretrained.load("{space}")
keys = pretrained.reference_keys("{space}") + ten_more_keys      # measure these on your device
pred.adapt(latency_features("{space}", keys)[0], measured_ms)
ms = pred.predict(latency_features("{space}", candidate_keys)[0])
```
"""
    path.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="folder of the public latency CSVs (default: $HWLAT_LATENCY_DATA or ../shared/data/latency)")
    ap.add_argument("--spaces", default="nb201,fbnet,ofa")
    ap.add_argument("--out", default=str(ROOT / "hwlat" / "predictors" / "pretrained"))
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    data = public_data_dir(args.data)
    with threadpool_limits(limits=1):
        for space in args.spaces.split(","):
            build(space.strip(), data, Path(args.out))
    return 0


if __name__ == "__main__":
    from hwlat.cli import run_script

    raise SystemExit(run_script(main))
