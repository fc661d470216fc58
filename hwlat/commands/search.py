"""`hwlat search`: latency-constrained architecture search with a predictor, optionally verified
by measuring the best architectures on a local runtime."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hwlat.cli import command_parser
from hwlat.commands.args import nonnegative_float, positive_float, positive_int, random_seed


def register(sub) -> None:
    p = command_parser(
        sub, "search",
        "search a space for the best architectures under a latency budget (predicted); --verify measures "
        "the best near the budget here and names the most accurate one that measures within it",
        "hwlat search --space nb201 --predictor pretrained --device-samples results/demo/nb201_shots.csv "
        "--max-latency-ms 1.0 --objective accuracy:cifar10 --verify",
    )
    from hwlat.commands.space import add_space_argument

    add_space_argument(p)
    p.add_argument("--predictor", required=True,
                   help="a saved predictor (NAME, NAME.npz or NAME.json, e.g. results/demo/predictor), 'pretrained' "
                        "(the shipped transfer predictor; needs --device-samples), or 'lut:<device table>'")
    p.add_argument("--as-profiled", action="store_true",
                   help="with lut:<device table>: the table's own times; by default a CPU table of this machine's "
                        "kind predicts at this machine's speed now, as `hwlat predict`")
    p.add_argument("--device-samples",
                   help="arch table of latencies measured on the target device: adapts the predictor")
    p.add_argument("--device", help="device column of --device-samples (needed when it has several)")
    p.add_argument("--max-latency-ms", type=positive_float, required=True,
                   help="latency budget in ms (predicted latency <= this)")
    p.add_argument("--min-latency-ms", type=nonnegative_float, help="optional lower bound in ms")
    p.add_argument("--sigmas", type=nonnegative_float, default=0.0, metavar="K",
                   help="count K sigma of each prediction's uncertainty: feasible only if predicted + K sigma <= "
                        "--max-latency-ms (and predicted - K sigma >= --min-latency-ms); sigma is a lut: table's "
                        "sigma_ms or an adapted predictor's, as `hwlat predict` writes (default 0: the prediction "
                        "alone; not with --verify, which measures)")
    p.add_argument("--objective",
                   help="what to maximise: accuracy:cifar10 | accuracy:cifar100 | accuracy:imagenet16-120 (trained "
                        "NATS-Bench test accuracy, looked up; NB201 only), naswot (alias proxy: a training-free proxy "
                        "on random data, NOT accuracy), or 'module:function' / 'file.py:function' with "
                        "function(arch) -> score, higher is better. Default: accuracy:cifar10 on nb201, naswot on "
                        "spaces without shipped accuracies (fbnet, ofa, vit)")
    p.add_argument("--budget", type=positive_int,
                   help="architectures to score (default 500 for an accuracy objective, a lookup; 100 for naswot or "
                        "your own function); with --method nsga2, Optuna trials")
    p.add_argument("--method", default="evolution", choices=["evolution", "random", "nsga2"],
                   help="search method (default evolution: regularised evolution under the constraint; nsga2: "
                        "Optuna's NSGA-II, maximising the objective and minimising predicted latency with the budget "
                        "as a constraint; needs optuna)")
    p.add_argument("--population", type=positive_int,
                   help="evolution / nsga2: population size (default 30 / 50; nsga2: at least 2)")
    p.add_argument("--tournament", type=positive_int, default=5, help="evolution: tournament (sample) size (default 5)")
    p.add_argument("--top", type=positive_int, default=5,
                   help="architectures to print, and to measure per --verify round (default 5)")
    p.add_argument("--seed", type=random_seed, default=0, help="seed of the search (and of the NASWOT proxy's inputs; default 0)")
    p.add_argument("--proxy-batch", type=positive_int, default=16, help="random inputs per NASWOT score (default 16)")
    p.add_argument("--verify", action="store_true",
                   help="resolve the predictor's error near the budget by measuring here: search under the budget "
                        "+ --verify-margin, measure the most accurate architectures predicted within it (--top per "
                        "round, predictions corrected by what was measured, until none left could beat the best "
                        "measured within the budget), and name the winner: the most accurate architecture MEASURED "
                        "within the budget")
    p.add_argument("--verify-margin", type=verify_margin, default=None, metavar="FRACTION|auto",
                   help="how far above the budget (a fraction, 0.03 = 3%%) predictions are measured too; auto "
                        "(default): the predictor's error band, the 80th percentile of its relative errors on what "
                        "it was not fit to (a table's self-score, an adapted predictor's leave-one-out), at most 20%%")
    p.add_argument("--verify-rounds", type=positive_int, default=3,
                   help="at most this many rounds of --top measurements (default 3)")
    p.add_argument("--verify-pool", default="auto", choices=["auto", "search"],
                   help="where --verify finds candidates: auto (default): every architecture of the space ranked by "
                        "the objective when that is a lookup (accuracy:* on nb201), else the search's, searched "
                        "again under the budget corrected by what was measured; search: always the search's")
    from hwlat.profilers.runtimes import listed, runtimes

    able = [name for name, cls in runtimes().items() if cls.times_archs()]  # plugins' too
    p.add_argument("--runtime", choices=able, help=f"runtime of --verify: {listed(able)} (default: a lut: table's "
                                                    "runtime where it can time architectures here, else onnxruntime)")
    p.add_argument("--threads", type=positive_int, help="runtime threads of --verify (default: a lut: table's "
                                                        "threads with its runtime, else 1)")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16", "int8"],
                   help="precision of --verify (default: a lut: table's precision with its runtime, else the "
                        "runtime's own: int8 for tflm, fp32 for the others); int8 with --runtime litert measures the "
                        "full-integer networks an int8 table predicts")
    p.add_argument("--protocol", default="brief", choices=["quick", "brief", "default", "thorough"],
                   help="measurement effort of --verify (default brief)")
    p.add_argument("--verify-out", help="arch table for --verify's measurements, resumed: architectures already in it "
                                        "are not measured again (default: not kept)")
    p.add_argument("--save-predictor", help="save the (adapted) predictor to this path (NAME -> NAME.npz + NAME.json)")
    p.add_argument("--json", help="write the result (best, Pareto front, verification) as JSON to this file")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_search, verify_defaults={dest: p.get_default(dest) for dest in VERIFY_ONLY},
                   search_defaults={dest: p.get_default(dest) for dest in ("population", "tournament", "proxy_batch")})


# Options that only say how --verify measures.
VERIFY_ONLY = ("verify_margin", "verify_rounds", "verify_pool", "runtime", "threads", "precision", "protocol",
               "verify_out")


def ignored_options(args: argparse.Namespace) -> dict[str, str]:
    """The options given that this search does not use, each with what it needs: --verify's without --verify,
    --as-profiled without a table, --device without --device-samples, --population and --tournament of another
    method, --proxy-batch without the proxy."""
    from hwlat.nas.search.objectives import PROXY_NAMES, default_objective

    out = {} if args.verify else {f"--{dest.replace('_', '-')}": "--verify's options need --verify"
                                  for dest, default in args.verify_defaults.items() if getattr(args, dest) != default}
    if args.as_profiled and not args.predictor.startswith("lut:"):
        out["--as-profiled"] = "--as-profiled needs a lut:<device table> predictor"
    if args.device and not args.device_samples:
        out["--device"] = "--device needs --device-samples"
    given = {dest for dest, default in args.search_defaults.items() if getattr(args, dest) != default}
    if "population" in given and args.method == "random":
        out["--population"] = "--population is evolution's and nsga2's"
    if "tournament" in given and args.method != "evolution":
        out["--tournament"] = "--tournament is evolution's"
    if "proxy_batch" in given and (args.objective or default_objective(args.space)).lower() not in PROXY_NAMES:
        out["--proxy-batch"] = "--proxy-batch needs --objective naswot"
    return out


def verify_margin(text: str) -> float | None:
    """A verification margin option: a fraction in [0, 1), or auto (None: the predictor's error band)."""
    if text == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a fraction such as 0.03, 0 for none, or auto") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{value}: must be at least 0 and below 1")
    return value


def check_verify_out(args: argparse.Namespace, space) -> None:
    """A --verify-out table that these settings cannot resume, or a --precision the --runtime lacks, is refused
    before the search, not once it has run (`_verify_out_error`: in this command's flags)."""
    from hwlat.device_tables.archtable import arch_table_paths
    from hwlat.device_tables.errors import TableError
    from hwlat.nas.device_loop import measure
    from hwlat.profilers.runtimes import get_runtime

    if args.verify and args.precision:  # a precision the runtime lacks: refused before the search, not after it
        get_runtime(args.runtime, threads=args.threads, precision=args.precision)
    if not (args.verify and args.verify_out and any(p.exists() for p in arch_table_paths(args.verify_out))):
        return
    try:
        measure(space, [], args.verify_out, runtime=args.runtime, threads=args.threads, protocol=args.protocol,
                progress=False, precision=args.precision)
    except TableError as exc:
        raise _verify_out_error(exc, args.verify_out) or exc from None


def build_predictor(args: argparse.Namespace, space):
    """The predictor of --predictor, adapted to --device-samples when given."""
    from hwlat.device_profile import scale_to_speed_now
    from hwlat.nas.arch_predictors import load_arch_predictor
    from hwlat.nas.few_shot import fit, read_measurements

    pred = load_arch_predictor(args.predictor, space, as_profiled=True)  # the speed line goes to stderr here
    lut = getattr(pred, "lut", None)  # lut:<table>: at this machine's speed now, as `hwlat predict`
    said = scale_to_speed_now(lut) if lut is not None and not getattr(args, "as_profiled", False) else None
    if said:
        print(f"hwlat: {said}", file=sys.stderr)
    if args.device_samples:
        m = read_measurements(args.device_samples, space, args.device)  # the rules of `hwlat adapt fit`
        pred = fit(space, m, predictor=pred)  # its info records the device, for --save-predictor
        print(f"predictor: {pred.name}, from {len(m.ms)} measured architectures ({args.device_samples})")
    else:
        print(f"predictor: {pred.name} ({args.predictor})")
    return pred


def verify_device(args: argparse.Namespace, pred) -> str | None:
    """Fill in --runtime, --threads and --precision where not given: those of a lut: predictor's table where that
    runtime can time architectures here and, so set, measures the table's device (not a table of other
    settings, such as LiteRT without XNNPACK); else onnxruntime with 1 thread. Then the line saying --verify
    measures another device than the one the predictor predicts (its table's, or the one it was adapted to):
    its measured errors would compare two devices; None where they are the same. Without --verify nothing is
    measured: no runtime is made (it imported torch, and warned of oversubscribed timings none would take)."""
    from hwlat.device_tables.device import Device
    from hwlat.device_tables.errors import HwlatError
    from hwlat.nas.spaces.measure import runtime_device
    from hwlat.profilers.runtimes import get_runtime, runtimes

    if not args.verify:
        return None
    lut = getattr(pred, "lut", None)
    dev = lut.table.device if lut is not None else None
    theirs = dev.name if dev is not None else (getattr(pred, "info", None) or {}).get("device")
    ours = None
    if args.runtime is None and dev is not None and getattr(runtimes().get(dev.runtime), "times_archs", bool)():
        settings = dict(dev.settings)
        threads = args.threads or int(settings.get("threads", 1))
        precision = args.precision or dev.precision
        if "threads" in settings:  # the table's device at the --threads and --precision given
            settings["threads"] = threads
        try:
            ours = runtime_device(get_runtime(dev.runtime, threads=threads, precision=precision)).name
        except HwlatError:  # the runtime cannot be made here: the defaults, and the mismatch is said
            pass
        if ours == Device.make(dev.hardware, dev.runtime, precision, **settings).name:
            args.runtime, args.threads, args.precision = dev.runtime, threads, precision
        else:
            ours = None
    if ours is None:
        args.runtime = args.runtime or "onnxruntime"
        args.threads = args.threads or 1
        ours = runtime_device(get_runtime(args.runtime, threads=args.threads,
                                          **({"precision": args.precision} if args.precision else {}))).name
    if not theirs or ours == theirs:
        return None
    return (f"--verify measures on {ours}, but {pred.name} predicts {theirs}: the errors it reports would compare "
            "two devices; measure on the predictor's device (--runtime, --threads) or use a predictor of this one")


def _verify_out_error(exc, verify_out: str | None):
    """A --verify-out table refused for a resume, as `hwlat profile archs` words it (another --out,
    --fresh, --clock), in the flags of `hwlat search`; None for another table error."""
    from hwlat.device_tables.errors import HwlatError, ResumeSettingsError
    from hwlat.profilers.protocol import Protocol

    if verify_out is None or not ("--out" in str(exc) or isinstance(exc, ResumeSettingsError)):
        return None
    stored = getattr(exc, "stored", {}).get("protocol")
    preset = Protocol.preset_of(stored) if isinstance(stored, dict) else None
    return HwlatError(f"--verify-out {verify_out}: {str(exc).rsplit('; ', 1)[0]}; give another --verify-out, or resume "
                      f"it with the --space, --runtime, --threads, --precision and --protocol it was measured with"
                      f"{f' (its protocol: --protocol {preset})' if preset else ''}, or remove its files to measure anew")


def _search(args: argparse.Namespace) -> int:
    from hwlat.device_tables.errors import HwlatError, TableError
    from hwlat.nas.constraints import LatencyConstraint
    from hwlat.nas.search.algorithms import search_by_method
    from hwlat.nas.search.objectives import load_objective
    from hwlat.nas.search.verified import VerifySettings, search_verified
    from hwlat.nas.spaces import get_space

    if args.json:  # a path that cannot be written is said before the search, not after it
        from hwlat.device_tables.files import make_output

        make_output(Path(args.json))
    ignored = ignored_options(args)
    if ignored:
        print(f"hwlat: note: {', '.join(ignored)} ignored: {'; '.join(dict.fromkeys(ignored.values()))}",
              file=sys.stderr)
    if args.verify and args.sigmas:
        raise HwlatError("--sigmas with --verify: --verify measures the candidates near the budget and names one that "
                         "measures within it; give one of them")
    space = get_space(args.space)
    # an objective the space lacks (accuracy of fbnet) is refused before the predictor is built and checked
    objective = load_objective(args.objective, space, batch=args.proxy_batch, seed=args.seed)
    pred = build_predictor(args, space)
    mismatch = verify_device(args, pred)
    check_verify_out(args, space)
    if mismatch:
        print(f"hwlat: warning: {mismatch}", file=sys.stderr)
    if args.save_predictor:
        from hwlat.nas.few_shot import save

        inner = getattr(pred, "predictor", None)
        if inner is None or not hasattr(inner, "get_params"):
            raise HwlatError(f"--save-predictor: the {pred.name} predictor is not a saveable feature predictor")
        save(pred, args.save_predictor)  # a failing write is one error naming the path
        print(f"saved the predictor to {args.save_predictor}.npz/.json")
    c = LatencyConstraint(pred, args.max_latency_ms, min_ms=args.min_latency_ms, sigmas=args.sigmas)
    fast, fast_ms, n_seen, exhaustive = c.check_budget()
    seen = f"of all {n_seen}" if exhaustive else f"of {n_seen} sampled"
    k = f", counting {c.sigmas:g} sigma of each prediction's uncertainty" if c.sigmas else ""
    reach = f", {fast_ms + c.sigmas * c(fast).sigma_ms:.4g} ms with {c.sigmas:g} sigma" if c.sigmas else ""
    print(f"constraint: {c.min_ms or 0:g} <= predicted latency <= {c.budget_ms:g} ms{k} (fastest {space.name} "
          f"architecture {seen}: {fast_ms:.4g} ms predicted{reach})")
    args.budget = args.budget or objective.default_budget
    print(f"objective: {objective.label}")
    progress = not args.no_progress

    def search(constraint: LatencyConstraint):
        return search_by_method(args.method, space, objective, constraint, args.budget, seed=args.seed,
                                progress=progress, population=args.population, sample=args.tournament)

    if args.verify:
        settings = VerifySettings(args.verify_margin, args.top, args.verify_rounds, args.runtime, args.threads,
                                  args.protocol, args.verify_out, progress, args.verify_pool, args.precision)
        band = settings.band(pred)
        print(f"verify: searching predicted <= {c.budget_ms * (1 + band.fraction):.4g} ms, the budget + "
              f"{band.fraction:.1%} ({band.source}); the most accurate are then measured on {args.runtime} "
              f"(threads={args.threads}{f', {args.precision}' if args.precision else ''}, protocol {args.protocol}), predictions corrected by what was measured, until "
              f"none left could beat the best measured within {c.budget_ms:g} ms")
        try:
            result = search_verified(space, c, search, settings, band)
        except TableError as exc:
            raise _verify_out_error(exc, args.verify_out) or exc from None
    else:
        result = search(c)
    print()
    print(result.format(args.top, score_name=objective.short))
    print(result.format_front(objective.short))
    if result.verified is not None:
        print()
        print(result.verified.format(objective.short))
    report = {"search": result.to_dict(args.top), "predictor": pred.name, "objective_is_proxy": objective.is_proxy}
    if args.json:
        from hwlat.device_tables.files import atomic_write_text, strict_json

        atomic_write_text(Path(args.json), strict_json(report, indent=1))  # an interrupt leaves the last report whole
        print(f"\nwrote {args.json}")
    return 0
