"""`hwlat predict`: a network's latency on a profiled device, from its lookup table."""

from __future__ import annotations

import argparse
import json
import sys

from hwlat.cli import command_parser


def register(sub) -> None:
    p = command_parser(
        sub, "predict",
        "predict a network's latency from a device table: fusion-aware kernel lookup, regressors for missing rows",
        "hwlat predict resnet18.onnx --table results/tables/ort_cpu   |   hwlat predict --space nb201 --arch 123 --table t",
    )
    p.add_argument("model", nargs="?", help="an .onnx file (or give --space and --arch, or --classic)")
    p.add_argument("--table", required=True, help="device table: a shipped name or a path (NAME, NAME.csv or NAME.json)")
    p.add_argument("--space", help="search space of --arch: nb201, fbnet or ofa")
    p.add_argument("--arch", help="architecture key (or index) in --space")
    p.add_argument("--classic", help="a built-in classic CNN, e.g. mobilenet_v2 or mobilenet_v2@r160w0.75")
    p.add_argument("--input-shape", help="shape for a dynamic input, e.g. 1x3x224x224")
    p.add_argument("--no-fusion", action="store_true", help="ignore the table's fusion rules (naive summation)")
    p.add_argument("--no-regressors", action="store_true", help="only table rows; kernels missing from the table are uncovered")
    p.add_argument("--statistic", default="median", choices=["median", "p10"],
                   help="row statistic summed: median (default) or p10, the 10th percentile (the latency without "
                        "interference; a calibration fitted on the other statistic is not used)")
    p.add_argument("--top", type=int, default=0, help="show only the N slowest kernels")
    p.add_argument("--json", action="store_true", help="print the prediction as JSON")
    p.set_defaults(func=_predict)


def _model(args: argparse.Namespace):
    from device_tables.errors import HwlatError

    given = [x for x in (args.model, args.space or args.arch, args.classic) if x]
    if len(given) != 1:
        raise HwlatError("give exactly one network: an .onnx path, --space with --arch, or --classic")
    if args.model:
        return args.model, args.model
    if args.classic:
        from nas.models import to_onnx

        return to_onnx(args.classic), f"classic:{args.classic}"
    if not (args.space and args.arch):
        raise HwlatError("--space and --arch go together, e.g. --space nb201 --arch 123")
    from nas.spaces import get_space

    space = get_space(args.space)
    arch = space.parse(args.arch)
    return space.to_onnx(arch), f"{space.name}:{space.key(arch)}"


def _predict(args: argparse.Namespace) -> int:
    from device_tables import load
    from device_tables.graph import parse_shape
    from device_tables.kernels import FusionRules
    from predictors.lut import LUTPredictor

    model, name = _model(args)
    table = load(args.table)
    shape = parse_shape(args.input_shape) if args.input_shape else None
    lut = LUTPredictor(table, rules=FusionRules.none() if args.no_fusion else None, use_regressors=not args.no_regressors,
                       statistic=f"{args.statistic}_ms")
    pred = lut.predict_graph(model, input_shape=shape, name=name)
    if args.json:
        json.dump(pred.to_dict(), sys.stdout, indent=2)
        print()
    else:
        print(pred.format(top=args.top))
    return 0
