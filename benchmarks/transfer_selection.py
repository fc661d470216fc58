"""Choosing the transfer predictor's settings without test devices: every NB201 / FBNet training
device of HELP's split held out in turn (meta-trained on the other eight, "heldout"), HELP's
validation devices (meta-trained on all nine training devices, "valid"), and each family of
training devices held out at once ("family": the GPUs, the CPUs, the phones, each device scored
after meta-training on the other families only), which, like the edge test devices, leaves no
training device that resembles it. No test device (2080ti_*, titanxp_*, the edge devices of
nb201_subset.csv, OFA) is read.

Protocol as `hwlat bench transfer`'s (10 references + 10 random shots, seed 0, Spearman after
trimming the fastest / slowest 10% of HELP's query range), fewer repeats by default. Each variant
is a set of `TransferPredictor` constructor arguments; the table prints mean Spearman (and ±10%
accuracy) over the held-out training devices and over the validation devices, per space.

    .venv/bin/python benchmarks/transfer_selection.py [--variants default,no-size] [--spaces nb201,fbnet]
        [--repeats 3] [--shots 10 --reference 10] [--per-device]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hwlat.device_tables.archtable import public_data_dir  # noqa: E402
from hwlat.commands.bench import default_query, join_key  # noqa: E402
from hwlat.transfer_tables import load_transfer_tables  # noqa: E402
from hwlat.predictors.evaluation import PredictorMethod, ProtocolSettings, TargetDevice, run_method  # noqa: E402
from hwlat.predictors.transfer import STACK, TransferPredictor  # noqa: E402
from benchmarks.pretrain_transfer import HELP_TRAIN as TRAIN, HELP_VALID as VALID  # noqa: E402

# name -> TransferPredictor keyword arguments (the settings compared when the defaults were chosen)
_BEFORE = ("mixture", "proxy", "cost", "size")  # the stack before "anchor" joined it
VARIANTS: dict[str, dict] = {
    "default": {},
    "before-cost-rel": {"learners": ("mixture", "proxy", "cost", "size", "anchor")},  # the stack before issue 21
    "+cost": {"learners": STACK + ("cost",)},
    "before-anchor": {"learners": _BEFORE},
    "no-size": {"learners": ("mixture", "proxy", "cost", "anchor")},
    "anchor-for-proxy": {"learners": ("mixture", "anchor", "cost", "size")},
    "+lowrank": {"learners": _BEFORE + ("lowrank",)},
    "+cost-log": {"learners": _BEFORE + ("cost-log",)},
    "+lowrank3+cost-log": {"learners": _BEFORE + ("lowrank3+cost-log",)},
    "+mixture+cost": {"learners": _BEFORE + ("mixture+cost",)},
    **{f"only-{n}": {"learners": (n,)} for n in ("mixture", "proxy", "cost", "cost-rel", "size", "anchor", "lowrank",
                                                 "cost+extra-log", "mixture+cost", "lowrank3+cost-log")},
}


# Families of HELP's training devices (NB201 and FBNet), held out together in the "family" folds.
FAMILIES = (("1080ti_1", "1080ti_32", "1080ti_64", "1080ti_256"), ("silver_4114", "silver_4210r"),
            ("samsung_a50", "pixel3", "essential_ph_1", "samsung_s7"))
LABELS = ("heldout", "valid", "family")


def folds(space: str) -> list[tuple[str, list[str], list[str]]]:
    """(label, training devices, evaluated devices): each training device held out, then
    validation, then each family of training devices held out at once."""
    train = TRAIN[space].split(",")
    out = [("heldout", [d for d in train if d != held], [held]) for held in train]
    out.append(("valid", train, VALID[space].split(",")))
    for family in FAMILIES:
        out.append(("family", [d for d in train if d not in family], [d for d in train if d in family]))
    return out


def evaluate(space: str, data_dir: Path, variants: list[str], settings: ProtocolSettings) -> dict:
    """{variant: {fold label: {device: (spearman, within10)}}}."""
    tables = load_transfer_tables(space, [str(data_dir / f"{space}.csv")], join_key(space),
                                  TRAIN[space].split(",") + VALID[space].split(","))
    lo, hi = default_query(space)
    query = (tables.keys >= lo) & (tables.keys < hi)
    out: dict = {v: {label: {} for label in LABELS} for v in variants}
    for label, train, test in folds(space):
        data = tables.transfer_data(train, [])
        for v in variants:
            kw = VARIANTS[v]
            method = PredictorMethod(v, lambda d, n, kw=kw: TransferPredictor(d.layout, **kw))
            targets = [TargetDevice(name, tables.column(name)) for name in test]
            r = run_method(method, data, targets, query, settings)
            for name, dr in r.devices.items():
                out[v][label][name] = (dr.mean("spearman"), dr.mean("within10"))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None)
    ap.add_argument("--spaces", default="nb201,fbnet")
    ap.add_argument("--variants", default="default", help=f"comma list of: {', '.join(VARIANTS)}")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--shots", type=int, default=10)
    ap.add_argument("--reference", type=int, default=10)
    ap.add_argument("--per-device", action="store_true")
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    data_dir = public_data_dir(args.data)
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    settings = ProtocolSettings(args.shots, args.reference, 0.1, args.repeats, 0)
    print(f"{args.reference} references + {args.shots} random shots, {args.repeats} repeats; "
          "Spearman / ±10% (mean over devices)")
    print(f"{'variant':<22}" + "".join(f"{s + ' ' + f:>22}" for s in args.spaces.split(",") for f in LABELS))
    with threadpool_limits(limits=1):
        res = {}
        for space in args.spaces.split(","):
            t0 = time.perf_counter()
            res[space] = evaluate(space, data_dir, variants, settings)
            print(f"  ({space}: {time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    for v in variants:
        cells = []
        for space in res:
            for label in LABELS:
                a = np.array(list(res[space][v][label].values()))
                cells.append(f"{a[:, 0].mean():.4f} / {100 * a[:, 1].mean():4.1f}%")
        print(f"{v:<22}" + "".join(f"{c:>22}" for c in cells))
        if args.per_device:
            for space in res:
                for label in LABELS:
                    print("    " + space + " " + label + " " + "  ".join(f"{d} {s:.3f}" for d, (s, _) in res[space][v][label].items()))
    return 0


if __name__ == "__main__":
    from hwlat.cli import run_script

    raise SystemExit(run_script(main))
