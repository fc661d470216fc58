"""`hwlat predict`: a network's latency on a profiled device, from its lookup table."""

from __future__ import annotations

import argparse
import json
import sys

from hwlat.cli import command_parser
from hwlat.commands.args import nonnegative_int, random_seed

QUANTITY = ("the median of a network's timed runs with the table's protocol and clock (by default the thread's "
            "CPU time on threads=1 CPUs): what `hwlat profile archs` and `hwlat profile model` report with their "
            "defaults")


def register(sub) -> None:
    p = command_parser(
        sub, "predict",
        "predict a network's latency from a device table: fusion-aware kernel lookup, regressors for missing rows",
        "hwlat predict resnet18.onnx --table cpu_onnxruntime_fp32_threads1   |   "
        "hwlat predict --space nb201 --archs random:1000 --table cpu_onnxruntime_fp32_threads1 --out pred.csv",
    )
    p.add_argument("model", nargs="?", help="an .onnx file (or give --space with --arch or --archs, or --classic)")
    p.add_argument("--table", required=True, help="device table: a shipped name or a path (NAME, NAME.csv or NAME.json)")
    from hwlat.commands.space import add_space_argument, add_space_options

    add_space_argument(p, required=False)
    p.add_argument("--arch", help="one architecture of --space, in any form `hwlat profile archs --archs` takes "
                                  "(an arch key, an nb201 index, an fbnet/ofa row of the public CSV)")
    p.add_argument("--archs", help="many architectures of --space, as `hwlat profile archs --archs` takes them: 'a:b', "
                                   "'i,j,k', 'random:N', 'all', a file of keys or an arch table; several joined by '+'")
    p.add_argument("--out", help="with --archs: the CSV to write (key columns, predicted_ms, sigma_ms, partial); "
                                 "default standard output")
    p.add_argument("--seed", type=random_seed, default=0, help="seed of --archs random:N (default 0, as profile archs)")
    p.add_argument("--public-data", help="folder of the public CSVs (fbnet/ofa row numbers; default $HWLAT_LATENCY_DATA)")
    p.add_argument("--classic", help="a built-in classic CNN, e.g. mobilenet_v2 or mobilenet_v2@r160w0.75")
    p.add_argument("--input-shape", help="shape for a dynamic input, e.g. 1x3x224x224")
    p.add_argument("--no-fusion", action="store_true", help="ignore the table's fusion rules (naive summation)")
    p.add_argument("--no-regressors", action="store_true", help="only table rows; kernels missing from the table are uncovered")
    p.add_argument("--statistic", default="median", choices=["median", "p10"],
                   help=f"row statistic summed: median (default: predicts {QUANTITY}) or p10, the 10th percentile "
                        "(the latency without interference; a calibration fitted on the other statistic is not used)")
    p.add_argument("--top", type=nonnegative_int, default=0, help="show only the N slowest kernels (0: all)")
    p.add_argument("--json", action="store_true", help="print the prediction as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (--archs)")
    add_space_options(p)
    p.set_defaults(func=_predict)


def _space_items(args: argparse.Namespace):
    """The space and its architectures of --arch (exactly one) or --archs, resolved as profile archs does."""
    from device_tables.errors import HwlatError
    from hwlat.commands.space import space_from_args
    from nas.spaces.measure import resolve_archs

    if not args.space:
        raise HwlatError("--arch and --archs need --space")
    space = space_from_args(args)
    items = resolve_archs(space, args.arch or args.archs, seed=args.seed, data_dir=args.public_data)
    if args.arch and len(items) != 1:
        raise HwlatError(f"--arch {args.arch!r} selects {len(items)} architectures; use --archs for several")
    return space, items


def _model(args: argparse.Namespace):
    if args.model:
        return args.model, args.model
    if args.classic:
        from nas.models import to_onnx

        return to_onnx(args.classic), f"classic:{args.classic}"
    space, items = _space_items(args)
    graph = space.graph(items[0].arch)
    return graph, graph.name


def _predictor(args: argparse.Namespace):
    from device_tables import load
    from device_tables.kernels import FusionRules
    from hwlat.device_profile import table_warnings
    from predictors.lut import LUTPredictor

    table = load(args.table)
    for line in table_warnings(table):
        print(f"hwlat: warning: {line}", file=sys.stderr)
    return LUTPredictor(table, rules=FusionRules.none() if args.no_fusion else None, use_regressors=not args.no_regressors,
                        statistic=f"{args.statistic}_ms")


def _predict(args: argparse.Namespace) -> int:
    from device_tables.errors import HwlatError
    from device_tables.graph import parse_shape

    given = [x for x in (args.model, args.arch, args.archs, args.classic) if x]
    if len(given) != 1:
        raise HwlatError("give exactly one network or set: an .onnx path, --space with --arch or --archs, or --classic")
    if args.out and not args.archs:
        raise HwlatError("--out writes the predictions of --archs; for one network use --json")
    if args.archs:
        return _predict_many(args)
    model, name = _model(args)
    lut = _predictor(args)
    shape = parse_shape(args.input_shape) if args.input_shape else None
    pred = lut.predict_graph(model, input_shape=shape, name=name)
    if args.json:
        json.dump({"latency_ms": pred.total_ms, **pred.to_dict()}, sys.stdout, indent=2)
        print()
    else:
        print(pred.format(top=args.top))
    return 0


def _predict_many(args: argparse.Namespace) -> int:
    """Predict every architecture of --archs in this process; one CSV row each, written as predicted."""
    import csv

    from tqdm import tqdm

    space, items = _space_items(args)
    lut = _predictor(args)
    keys = list(dict.fromkeys(k for it in items for k in it.record))
    out = open(args.out, "w", newline="") if args.out else sys.stdout
    try:
        w = csv.writer(out, lineterminator="\n")
        w.writerow(keys + ["predicted_ms", "sigma_ms", "partial"])
        partial = 0
        for it in tqdm(items, desc=f"predict {space.name}", unit="arch", disable=args.no_progress or not args.out,
                       dynamic_ncols=True):
            pred = lut.predict_graph(space.graph(it.arch), name=f"{space.name}:{space.key(it.arch)}")
            partial += pred.partial
            w.writerow([it.record.get(k, "") for k in keys]
                       + [f"{pred.total_ms:.6g}", f"{pred.sigma_ms:.4g}", "true" if pred.partial else "false"])
    finally:
        if args.out:
            out.close()
    if args.out:
        print(f"{args.out}: {len(items)} architectures predicted on {lut.table.name}"
              + (f"; {partial} PARTIAL (uncovered ops left out)" if partial else ""))
    return 0
