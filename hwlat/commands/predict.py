"""`hwlat predict`: a network's latency on a profiled device, from its lookup table."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Iterable

from hwlat.cli import command_parser
from hwlat.commands.args import nonnegative_int, positive_int, random_seed

QUANTITY = ("the median of a network's timed runs with the table's protocol and clock (by default the thread's "
            "CPU time on threads=1 CPUs): what `hwlat profile archs` and `hwlat profile model` report with their "
            "defaults")


def register(sub) -> None:
    p = command_parser(
        sub, "predict",
        "predict a network's latency from a device table (fusion-aware kernel lookup, regressors for missing rows), "
        "or architectures of a space from a predictor adapted to a device (`hwlat adapt fit`)",
        "hwlat predict resnet18.onnx --table cpu_onnxruntime_fp32_threads1   |   "
        "hwlat predict --space nb201 --archs random:1000 --table cpu_onnxruntime_fp32_threads1 --out pred.csv   |   "
        "hwlat predict --predictor my_board --space nb201 --arch 1462",
    )
    p.add_argument("model", nargs="?", help="an .onnx file (or give --space with --arch or --archs, or --classic)")
    p.add_argument("--table", help="device table: a shipped name or a path (NAME, NAME.csv or NAME.json)")
    p.add_argument("--predictor", help="instead of --table: a predictor adapted to a device by `hwlat adapt fit` (PATH, "
                                       "PATH.npz or PATH.json); predicts architectures of --space (--arch or --archs)")
    from hwlat.commands.space import add_space_argument, add_space_options

    add_space_argument(p, required=False)
    p.add_argument("--arch", help="one architecture of --space, in any form `hwlat profile archs --archs` takes "
                                  "(an arch key, an nb201 index, an fbnet/ofa row of the public CSV)")
    p.add_argument("--archs", help="many architectures of --space, as `hwlat profile archs --archs` takes them: 'a:b', "
                                   "'i,j,k', 'random:N', 'all', a file of keys or an arch table; several joined by '+'")
    p.add_argument("--out", help="with --archs: the CSV to write (key columns, predicted_ms, sigma_ms (one-sigma "
                                 "uncertainty), and partial with --table); default standard output")
    p.add_argument("--seed", type=random_seed, default=0, help="seed of --archs random:N (default 0, as profile archs)")
    p.add_argument("--public-data", help="folder of the public CSVs (fbnet/ofa row numbers; default $HWLAT_LATENCY_DATA)")
    p.add_argument("--classic", help="a built-in classic CNN, e.g. mobilenet_v2 or mobilenet_v2@r160w0.75")
    p.add_argument("--input-shape", action="append", metavar="[NAME=]SHAPE",
                   help="shape of a dynamic input: 1x3x224x224 for a one-input model, or NAME=SHAPE repeated for "
                        "each input (--input-shape input_ids=1x128 --input-shape attention_mask=1x128)")
    p.add_argument("--no-fusion", action="store_true", help="ignore the table's fusion rules (naive summation)")
    p.add_argument("--no-regressors", action="store_true", help="only table rows; kernels missing from the table are uncovered")
    p.add_argument("--statistic", default="median", choices=["median", "p10"],
                   help=f"row statistic summed: median (default: predicts {QUANTITY}) or p10, the 10th percentile "
                        "(the latency without interference; a calibration fitted on the other statistic is not used)")
    p.add_argument("--as-profiled", action="store_true",
                   help="the table's own times; by default a CPU table of this machine's kind predicts at this "
                        "machine's speed now, where that is more than 5%% off (6 of the table's stored networks "
                        "timed again once a minute, as `hwlat table drift` does, pooled over 10 minutes)")
    p.add_argument("--top", type=nonnegative_int, default=0, help="show only the N slowest kernels (0: all)")
    p.add_argument("--json", action="store_true", help="print the prediction of one network as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (--archs)")
    p.add_argument("--jobs", type=positive_int, help="with --archs and --table: processes sharing the work (default every "
                                                     "usable core; the predictions do not depend on it)")
    add_space_options(p)
    p.set_defaults(func=_predict)


def _space_items(args: argparse.Namespace):
    """The space and its architectures of --arch (exactly one) or --archs, resolved as profile archs does."""
    from hwlat.device_tables.errors import HwlatError
    from hwlat.commands.space import space_from_args
    from hwlat.nas.spaces.measure import resolve_archs

    if not args.space:
        raise HwlatError("--arch and --archs need --space")
    space = space_from_args(args)
    items = resolve_archs(space, args.arch or args.archs, seed=args.seed, data_dir=args.public_data,
                          flag="--arch" if args.arch else "--archs")
    if args.arch and len(items) != 1:
        raise HwlatError(f"--arch {args.arch!r} selects {len(items)} architectures; use --archs for several")
    return space, items


def _model(args: argparse.Namespace):
    if args.model:
        return args.model, args.model
    if args.classic:
        from hwlat.nas.models import to_onnx

        return to_onnx(args.classic), f"classic:{args.classic}"
    space, items = _space_items(args)
    graph = space.graph(items[0].arch)
    return graph, graph.name


def _predictor(args: argparse.Namespace):
    from hwlat.device_tables import load
    from hwlat.device_tables.errors import HwlatError
    from hwlat.device_tables.kernels import FusionRules
    from hwlat.device_profile import profile_command, scale_to_speed_now, table_warnings
    from hwlat.predictors.lut import LUTPredictor

    table = load(args.table)
    if not table.rows("ok"):
        raise HwlatError(f"{table.name} has no measured rows: it prices no kernel (it would predict 0 ms); "
                         f"`{profile_command(table)}` measures them")
    for line in table_warnings(table):
        print(f"hwlat: warning: {line}", file=sys.stderr)
    lut = LUTPredictor(table, rules=FusionRules.none() if args.no_fusion else None, use_regressors=not args.no_regressors,
                       statistic=f"{args.statistic}_ms")
    said = None if args.as_profiled else scale_to_speed_now(lut)
    if said:
        print(f"hwlat: {said}", file=sys.stderr)
    return lut


def _predict(args: argparse.Namespace) -> int:
    from hwlat.device_tables.errors import HwlatError
    from hwlat.device_tables.graph import parse_input_shapes
    from hwlat.predictors.lut import LUTPredictor

    given = [x for x in (args.model, args.arch, args.archs, args.classic) if x]
    if args.json and args.model and args.model.lower().endswith(".json"):  # as `profile model --json FILE` takes one
        raise HwlatError(f"--json prints the prediction and takes no file ({args.model} was read as the model): "
                         f"write it with `hwlat predict ... --json > {args.model}`")
    if len(given) != 1:
        raise HwlatError("give exactly one network or set: an .onnx path, --space with --arch or --archs, or --classic")
    if args.out and not args.archs:
        raise HwlatError("--out writes the predictions of --archs; for one network use --json")
    if args.input_shape and not args.model:
        raise HwlatError("--input-shape sizes the inputs of an ONNX model; an architecture of --space or a --classic "
                         "network has its own (a --classic key picks the resolution: resnet18@r160)")
    if args.json and args.archs:
        raise HwlatError("--json prints one network's prediction; the predictions of --archs are CSV (--out FILE, or "
                         "standard output without it)")
    if args.json and args.top:
        raise HwlatError("--top shortens the printed breakdown; --json prints every kernel: leave --top out")
    if bool(args.table) == bool(args.predictor):
        raise HwlatError("give one of --table (a device table) or --predictor (a predictor from `hwlat adapt fit`)")
    if args.predictor:
        table_only = [flag for flag, given in (("--no-fusion", args.no_fusion), ("--no-regressors", args.no_regressors),
                                               ("--statistic", args.statistic != "median"), ("--as-profiled", args.as_profiled),
                                               ("--top", args.top), ("--jobs", args.jobs)) if given]
        from hwlat.nas.spaces import spaces

        table_only += dict.fromkeys(opt.flag for cls in spaces().values() for opt in cls.cli_options  # --keep-dead-edges
                                    if getattr(args, opt.dest, None) is not None)
        if table_only:
            raise HwlatError(f"{', '.join(table_only)}: for a device table (--table); an adapted --predictor builds no "
                             "network and has no kernels, rows or statistic to choose")
        return _predict_adapted(args)
    if args.archs:
        return _predict_many(args)
    model, name = _model(args)
    graph = LUTPredictor.graph_of(model, parse_input_shapes(args.input_shape))  # a bad model is named before the table is read
    pred = _predictor(args).predict_graph(graph, name=name)
    if args.json:
        json.dump({"latency_ms": pred.total_ms, **pred.to_dict()}, sys.stdout, indent=2)
        print()
    else:
        print(pred.format(top=args.top))
    return 0


def _predict_many(args: argparse.Namespace) -> int:
    """Predict every architecture of --archs (on --jobs processes); one CSV row each, written as predicted."""
    from tqdm import tqdm

    from hwlat.predictors.lut.many import predict_archs

    space, items = _space_items(args)
    lut = _predictor(args)
    partial = 0

    def rows():
        nonlocal partial
        preds = predict_archs(lut, space, [it.arch for it in items], args.jobs, keep=_csv_values)
        for it, values in tqdm(zip(items, preds), total=len(items), desc=f"predict {space.name}", unit="arch",
                               disable=True if args.no_progress or not args.out else None, dynamic_ncols=True):
            partial += values[-1] == "true"
            yield it.record, values

    _write_rows(args, items, rows(), ["predicted_ms", "sigma_ms", "partial"])
    unscored = "" if lut.network_error else f"sigma_ms is the regressed kernels' part only: {lut.unscored}"
    if args.out:
        print(f"{args.out}: {len(items)} architectures predicted on {lut.table.name}"
              + (f"; {partial} PARTIAL (uncovered ops left out)" if partial else "") + (f"; {unscored}" if unscored else ""))
    elif unscored:
        print(f"hwlat: note: {unscored}", file=sys.stderr)
    return 0


def _csv_values(pred) -> list[str]:
    """A prediction's columns of the --archs CSV: predicted_ms, sigma_ms, partial."""
    return [f"{pred.total_ms:.6g}", f"{pred.sigma_ms:.4g}", "true" if pred.partial else "false"]


def _predict_adapted(args: argparse.Namespace) -> int:
    """--predictor: architectures of --space from a predictor adapted to a device, with sigma_ms."""
    import numpy as np

    from hwlat.device_tables.errors import HwlatError
    from hwlat.nas.few_shot import load, predict_with_sigma

    if not (args.arch or args.archs):
        raise HwlatError("--predictor predicts architectures of a space: give --space with --arch or --archs (an ONNX "
                         "model or --classic needs a device table, --table)")
    space, items = _space_items(args)
    pred = load(args.predictor, space)
    ms, sigma = predict_with_sigma(pred, [it.arch for it in items])
    if args.arch:
        key = space.key(items[0].arch)
        if args.json:
            json.dump({"space": space.name, "arch": key, "latency_ms": float(ms[0]), "sigma_ms": float(sigma[0]),
                       "predictor": pred.name, "device": pred.info.get("device")}, sys.stdout, indent=2)
            print()
        else:
            def digits(x: float, n: int) -> str:  # n significant digits, never an exponent (a board's 6.762e+04 ms)
                return np.format_float_positional(x, precision=n, fractional=False, trim="-")

            print(f"{space.name} {key}: {digits(ms[0], 4)} ms (± {digits(sigma[0], 2)} ms, one sigma) on "
                  f"{pred.info.get('device', '?')}, {pred.name}")
        return 0
    _write_rows(args, items, ((it.record, [f"{m:.6g}", f"{s:.4g}"]) for it, m, s in zip(items, ms, sigma)),
                ["predicted_ms", "sigma_ms"])
    if args.out:
        print(f"{args.out}: {len(items)} architectures predicted by {pred.name}")
    return 0


def _write_rows(args: argparse.Namespace, items: list, rows: Iterable[tuple[dict, list[str]]], names: list[str]) -> None:
    """The CSV of --archs, to --out or standard output: the key columns of `items`, then `names`;
    each row written as `rows` yields it. --out is replaced whole at the end: an interrupted run
    leaves the file as it was."""
    import csv

    from hwlat.device_tables.files import atomic_write, make_output, writing

    keys = list(dict.fromkeys(k for it in items for k in it.record))

    def write(out) -> None:
        w = csv.writer(out, lineterminator="\n")
        w.writerow(keys + names)
        for record, values in rows:
            w.writerow([record.get(k, "") for k in keys] + values)

    out_path = Path(args.out) if args.out else None
    if out_path is None:
        write(sys.stdout)  # a closed pipe stays a BrokenPipeError
    elif out_path.is_symlink() or out_path.exists() and not out_path.is_file():  # /dev/stdout, a pipe: as it goes
        with writing(out_path), open(out_path, "w", newline="") as out:
            write(out)
    else:
        make_output(out_path)
        atomic_write(out_path, write, binary=False)
