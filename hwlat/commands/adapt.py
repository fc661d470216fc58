"""`hwlat adapt suggest|fit`: a new device from a few measurements. `suggest` writes the
architectures to measure, `fit` adapts the shipped meta-trained predictor to their measured
latencies and saves it for `hwlat predict --predictor` and `hwlat search --predictor`."""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

from hwlat.cli import command_parser
from hwlat.commands.args import random_seed


def register(sub) -> None:
    p = sub.add_parser("adapt", help="a new device from ~20 measurements: which architectures to measure, then adapt",
                       description="Latency on a device no table covers: `suggest` the architectures to measure, measure "
                                   "them (`hwlat profile archs --archs FILE` on the device, or your own tooling), `fit` "
                                   "the shipped meta-trained predictor to them, then `hwlat predict --predictor` or "
                                   "`hwlat search --predictor`.")
    a = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    from hwlat.commands.space import add_space_argument
    from hwlat.predictors import pretrained

    adaptable = pretrained.available()  # the spaces a meta-trained predictor is shipped for

    s = command_parser(a, "suggest", "write the N architectures most worth measuring on a new device (an arch table "
                                     "without latencies)",
                       "hwlat adapt suggest --space nb201 -n 20 --out to_measure.csv")
    add_space_argument(s, names=adaptable)
    s.add_argument("-n", type=at_least_3, default=20,
                   help="architectures to suggest (default 20; at least 3, what `adapt fit` needs; 10 and more recommended)")
    s.add_argument("--out", required=True, help="CSV to write: the space's key columns, one architecture per row")
    s.add_argument("--seed", type=random_seed, default=0,
                   help="seed of the candidates in spaces too large to enumerate (fbnet, ofa; default 0)")
    s.set_defaults(func=_suggest)
    f = command_parser(a, "fit", "adapt the shipped meta-trained predictor to latencies measured on a device and save it",
                       "hwlat adapt fit --space nb201 --measurements measured.csv --out my_board")
    add_space_argument(f, names=adaptable)
    f.add_argument("--measurements", required=True,
                   help="an arch table (`hwlat profile archs --out`: NAME, or any of its files) or any CSV with a key column of the space and a "
                        "latency column in ms; 3 rows or more (20 recommended)")
    f.add_argument("--device", help="the latency column to use (needed when the file has several)")
    f.add_argument("--out", required=True, help="the predictor to write: OUT.npz (arrays) + OUT.json")
    f.set_defaults(func=_fit)


def at_least_3(text: str) -> int:
    """-n of `adapt suggest`: a whole number of 3 or more (fewer cannot be fitted), by the check
    `hwlat.suggest` makes too (`hwlat.nas.few_shot.suggest_count`)."""
    from hwlat.device_tables.errors import HwlatError
    from hwlat.nas.few_shot import suggest_count

    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a whole number") from None
    try:
        return suggest_count(n)
    except HwlatError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _suggest(args: argparse.Namespace) -> int:
    from hwlat.device_tables.files import atomic_write_text, make_output
    from hwlat.nas.few_shot import suggest
    from hwlat.nas.spaces import get_space

    space = get_space(args.space)
    archs = suggest(space, args.n, seed=args.seed)
    records = [space.key_record(a) for a in archs]
    columns = [c for c in space.key_columns if c in records[0]]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in records:
        w.writerow([r[c] for c in columns])
    out = Path(args.out)
    make_output(out)
    atomic_write_text(out, buf.getvalue())
    print(f"{out}: {len(archs)} {space.name} architectures to measure, most informative first. Next:\n"
          f"  hwlat profile archs --space {space.name} --archs {out} --out measured   (on the device, or measure them "
          f"your way into a CSV with a latency column in ms)\n"
          f"  hwlat adapt fit --space {space.name} --measurements measured.csv --out my_device")
    return 0


def _fit(args: argparse.Namespace) -> int:
    import numpy as np

    from hwlat.nas.few_shot import fit, read_measurements, save
    from hwlat.nas.spaces import get_space

    space = get_space(args.space)
    m = read_measurements(args.measurements, space, args.device)
    pred = fit(space, m)
    npz, js = save(pred, args.out)
    skipped = f" ({m.empty} row(s) with an empty latency left out)" if m.empty else ""
    print(f"adapted the pretrained {space.name} predictor to {m.device!r} from {len(m.ms)} measurements{skipped}")
    loo = np.asarray(getattr(pred.predictor, "loo_rel_error_", []), dtype=float)
    loo = loo[np.isfinite(loo)]
    if loo.size:
        from hwlat.predictors.linear import CV_FOLDS, LOO_MAX_ROWS

        how = "leave-one-out" if len(m.ms) <= LOO_MAX_ROWS else f"{CV_FOLDS}-fold cross-validated"
        print(f"{how} error on the measurements: median {np.median(loo):.1%}, worst {loo.max():.1%}")
    print(f"saved {npz} + {js.name}. Next:\n"
          f"  hwlat predict --predictor {args.out} --space {space.name} --archs random:1000 --out predicted.csv\n"
          f"  hwlat search --predictor {args.out} --space {space.name} --max-latency-ms <budget>")
    return 0
