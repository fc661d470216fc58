"""`hwlat bench transfer`: few-shot latency transfer to unseen devices on wide architecture tables
(HELP's protocol; see `hwlat.predictors.evaluation`)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from hwlat.cli import command_parser
from hwlat.commands.args import fraction_below_half, nonnegative_int, positive_int, random_seed

log = logging.getLogger(__name__)

# Join key and default query range per space (the protocol: HELP's index ranges).


def join_key(space: str) -> str:
    """The integer key column transfer tables of `space` are joined and split on (`Space.transfer_join_column`)."""
    from hwlat.nas.spaces import space_class

    return space_class(space).transfer_join_column


def default_query(space: str) -> tuple[int, int]:
    """HELP's query architectures of `space`: join keys lo..hi-1 (`Space.transfer_query`)."""
    from hwlat.nas.spaces import space_class

    return space_class(space).transfer_query


def transfer_spaces() -> list[str]:
    """The spaces with a transfer protocol (a join column and HELP's query range)."""
    from hwlat.nas.spaces import spaces

    return [name for name, cls in spaces().items() if cls.transfer_query is not None]
EXAMPLE = ("hwlat bench transfer --space nb201 --table nb201.csv --train 1080ti_1,1080ti_32,1080ti_256,silver_4114,"
           "silver_4210r,samsung_a50,pixel3,essential_ph_1,samsung_s7 --valid titanx_1,titanx_32,titanx_256,gold_6240 "
           "--test 2080ti_1,2080ti_32,2080ti_256")


def register(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks: few-shot transfer to unseen devices",
                       description="Benchmarks that print the numbers the README quotes.")
    b = p.add_subparsers(dest="bench", metavar="BENCH", required=True)
    t = command_parser(b, "transfer", "few-shot latency transfer to unseen devices (HELP's protocol): "
                       "Spearman, within-10-percent accuracy and MAPE per method and test device", EXAMPLE)
    t.add_argument("--space", required=True, choices=transfer_spaces(), help="search space of the tables")
    t.add_argument("--table", action="append", required=True, metavar="CSV",
                   help="wide CSV (key columns + one column per device, ms); repeat to join several on the key")
    t.add_argument("--train", required=True, help="comma-separated training (meta-train) devices")
    t.add_argument("--valid", default="", help="comma-separated validation devices (model selection only)")
    t.add_argument("--test", required=True, help="comma-separated unseen test devices")
    t.add_argument("--methods", default="all", help="all (default), or comma-separated of: macs, params, nearest, ridge, proxy, help, lowrank, "
                   "mixture, transfer (see hwlat.predictors.evaluation.METHODS)")
    t.add_argument("--shots", type=nonnegative_int, default=10, help="random measured architectures per test device and repeat (default 10)")
    t.add_argument("--reference", type=nonnegative_int, default=10, help="reference architectures chosen from training devices (default 10)")
    t.add_argument("--query", default=None, help="half-open key range scored, e.g. 900:1900 "
                   "(default nb201 900:1900, fbnet/ofa 4000:5000)")
    t.add_argument("--trim", type=fraction_below_half, default=0.1, help="fraction of fastest and of slowest query archs dropped (default 0.1)")
    t.add_argument("--shots-from", default="random", choices=["random", "suggested"],
                   help="random (default, HELP's protocol: drawn per repeat) or suggested: the --shots architectures "
                        "that follow the references in the predictor's own choice (`hwlat adapt suggest`), the same "
                        "for every device and repeat, from outside the query range")
    t.add_argument("--repeats", type=positive_int, default=10, help="repeats with different random shots (default 10)")
    t.add_argument("--seed", type=random_seed, default=0, help="seed of the random shots (default 0)")
    t.add_argument("--json", default=None, metavar="OUT", help="also write the results as JSON")
    t.add_argument("--shots-curve", default=None, metavar="N,N,...",
                   help="also print mean accuracy against the number of shots (as --shots-from draws them), e.g. 0,5,10,20,50")
    t.set_defaults(func=_transfer)


def _names(text: str, what: str) -> list[str]:
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        from hwlat.predictors.evaluation import ProtocolError

        raise ProtocolError(f"{what}(s) listed twice: {', '.join(dup)}")
    return names


def _parse_query(text: str | None, space: str) -> tuple[int, int]:
    from hwlat.predictors.evaluation import ProtocolError

    if text is None:
        return default_query(space)
    try:
        lo, hi = (int(v) for v in text.split(":"))
    except ValueError:
        raise ProtocolError(f"--query {text!r}: expected START:STOP key values, e.g. 900:1900") from None
    if hi <= lo:
        raise ProtocolError(f"--query {text!r}: STOP must be above START")
    return lo, hi


def _parse_curve(text: str | None) -> list[int]:
    from hwlat.predictors.evaluation import ProtocolError

    if not text:
        return []
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ProtocolError(f"--shots-curve {text!r}: expected comma-separated integers, e.g. 0,5,10,20,50") from None
    if any(v < 0 for v in vals) or not vals:
        raise ProtocolError(f"--shots-curve {text!r}: expected non-negative integers")
    return vals


def _transfer(args: argparse.Namespace) -> int:
    from hwlat.predictors.evaluation import METHODS, ProtocolError, ProtocolSettings, TargetDevice, make_methods, run_method
    from hwlat.transfer_tables import load_transfer_tables

    if args.json:  # a path that cannot be written is said before the benchmark, not after it
        from hwlat.device_tables.files import make_output

        make_output(Path(args.json))
    space = args.space
    train, valid = _names(args.train, "training device"), _names(args.valid, "validation device")
    test = _names(args.test, "test device")
    if not train or not test:
        raise ProtocolError("give at least one --train and one --test device")
    for a, b, an, bn in ((train, test, "training", "test"), (valid, test, "validation", "test"),
                         (train, valid, "training", "validation")):
        both = sorted(set(a) & set(b))
        if both:
            raise ProtocolError(f"device(s) {', '.join(both)} are both {an} and {bn} devices; "
                                "a test device must be unseen")
    names = _names(args.methods, "method")
    if not names:
        raise ProtocolError(f"--methods {args.methods!r} names no method; give all, or some of: {', '.join(METHODS)}")
    names = list(METHODS) if "all" in names else names
    methods = make_methods(names)
    lo, hi = _parse_query(args.query, space)
    curve = _parse_curve(args.shots_curve)

    tables = load_transfer_tables(space, args.table, join_key(space), {"--train": train, "--valid": valid,
                                                                        "--test": test})
    data = tables.transfer_data(train, valid)
    query = (tables.keys >= lo) & (tables.keys < hi)
    if not query.any():
        raise ProtocolError(f"no architecture has {join_key(space)} in {lo}:{hi}; the tables hold "
                            f"{int(np.nanmin(tables.keys))}..{int(np.nanmax(tables.keys))}")
    targets = [TargetDevice(name, tables.column(name)) for name in test]
    print(f"space {space}: {len(tables.keys)} architectures from {len(args.table)} table(s); query {join_key(space)} "
          f"{lo}:{hi} ({int(query.sum())} archs), trim {args.trim:g}")
    print(f"train ({len(train)}): {', '.join(train)}")
    if valid:
        print(f"valid ({len(valid)}): {', '.join(valid)}")
    print(f"test  ({len(test)}): {', '.join(test)}")
    if tables.dropped_train:
        print(f"skipped: {tables.dropped_train} architectures with a missing training latency (not used for meta-training)")
    for t in targets:
        if t.n_missing:
            print(f"skipped: {t.n_missing} architectures with no latency on {t.name} "
                  f"({int((query & ~t.available).sum())} of them in the query range)")
    if args.shots_from == "suggested":
        args.repeats = 1  # the choice is deterministic: every repeat would measure the same architectures
        print(f"protocol: {args.reference} references + {args.shots} suggested architectures (the same for every "
              "device), 1 repeat\n")
    else:
        print(f"protocol: {args.reference} references + {args.shots} random shots per device, {args.repeats} repeats, "
              f"seed {args.seed}\n")

    settings = ProtocolSettings(args.shots, args.reference, args.trim, args.repeats, args.seed, args.shots_from)
    results = []
    from tqdm import tqdm

    total = len(methods) * len(targets) * args.repeats
    with _one_blas_thread(), tqdm(total=total, desc="transfer", unit="run", file=sys.stderr, disable=None,
                                  leave=False) as bar:
        for m in methods:
            bar.set_postfix_str(m.name)
            results.append(run_method(m, data, targets, query, settings, progress=bar))
        scaled = args.shots + args.reference > 0  # with no measurement of a device, its ms have no scale to judge
        _print_tables(results, test, args.repeats, scaled)
        report = _report(args, space, train, valid, test, tables, targets, query, results)
        if curve:
            report["shots_curve"] = _curve(methods, data, targets, query, settings, curve)
    if args.json:
        from hwlat.device_tables.files import atomic_write_text, strict_json

        atomic_write_text(Path(args.json), strict_json(report))
        print(f"\nwrote {args.json}")
    return 0


def _one_blas_thread():
    """Small matrices: one BLAS thread is faster and timings are steadier on a shared machine."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


def _fmt_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    out = [line(header), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows[:-1]] + ["  ".join("-" * w for w in widths), line(rows[-1])]
    return "\n".join(out)


def _print_tables(results, test: list[str], repeats: int, scaled: bool = True) -> None:
    header = ["device"] + [r.name for r in results]
    sp_rows = [[d] + [f"{r.devices[d].mean('spearman'):.3f}±{r.devices[d].std('spearman'):.3f}" for r in results] for d in test]
    sp_rows.append(["mean"] + [f"{r.mean('spearman'):.3f}" for r in results])
    print(f"Spearman rank correlation (mean ± std over {repeats} repeats)")
    print(_fmt_table(header, sp_rows))
    if not scaled:
        print("\n±10% accuracy and MAPE: left out; with no measurement of a test device (--shots 0 --reference 0) the "
              "predictions are in the training devices' ms, and only their ranking says anything")
    w_rows = [[d] + [f"{100 * r.devices[d].mean('within10'):.1f}%" for r in results] for d in test]
    w_rows.append(["mean"] + [f"{100 * r.mean('within10'):.1f}%" for r in results])
    m_rows = [[d] + [f"{100 * r.devices[d].mean('mape'):.1f}%" for r in results] for d in test]
    m_rows.append(["mean"] + [f"{100 * r.mean('mape'):.1f}%" for r in results])
    if scaled:
        print("\n±10% accuracy (share of predictions within 10% of the measured latency)")
        print(_fmt_table(header, w_rows))
        print("\nMAPE (mean absolute percentage error)")
        print(_fmt_table(header, m_rows))
    print("\ntimings (this machine): meta-training s | adaptation ms (median) | prediction archs/s (median)")
    for r in results:
        rate = 1.0 / max(float(np.median(r.predict_s_per_arch)), 1e-12)
        print(f"  {r.name:<9} {r.meta_fit_s:8.2f} s | {1e3 * float(np.median(r.adapt_s)):8.2f} ms | {rate:12,.0f}/s   {r.description}")


def _report(args, space, train, valid, test, tables, targets, query, results) -> dict:
    rep = {
        "space": space, "tables": [str(t) for t in args.table], "train": train, "valid": valid, "test": test,
        "shots": args.shots, "reference": args.reference, "query": [int(v) for v in _parse_query(args.query, space)],
        "query_archs": int(query.sum()), "trim": args.trim, "repeats": args.repeats, "seed": args.seed,
        "skipped": {"train_archs_missing_latency": int(tables.dropped_train),
                    **{t.name: t.n_missing for t in targets if t.n_missing}},
        "methods": {},
    }
    for r in results:
        rep["methods"][r.name] = {
            "description": r.description,
            "mean_spearman": r.mean("spearman"), "mean_kendall": r.mean("kendall"),
            "mean_within10": r.mean("within10"), "mean_mape": r.mean("mape"),
            "meta_fit_s": r.meta_fit_s, "adapt_s_median": float(np.median(r.adapt_s)),
            "predict_archs_per_s": 1.0 / max(float(np.median(r.predict_s_per_arch)), 1e-12),
            "reference_keys": [int(k) if np.isfinite(k) else None for k in tables.keys[r.references]],
            "reference_archs": [tables.arch_keys[i] for i in r.references],
            "devices": {
                d: {"spearman_mean": res.mean("spearman"), "spearman_std": res.std("spearman"),
                    "kendall_mean": res.mean("kendall"), "within10_mean": res.mean("within10"),
                    "mape_mean": res.mean("mape"), "rmse_mean": res.mean("rmse"), "n_scored": res.scores[0].n,
                    "spearman": [s.spearman for s in res.scores]}
                for d, res in r.devices.items()},
        }
    return rep


def _curve(methods, data, targets, query, settings, curve: list[int]) -> dict:
    from dataclasses import replace

    from hwlat.predictors.evaluation import run_method

    out: dict = {}
    print(f"\naccuracy against the number of measurements ({settings.n_ref} references + N {settings.shots_from} shots; "
          f"mean over test devices and {settings.repeats} repeats): Spearman / ±10% accuracy")
    header = ["method"] + [f"N={n} ({settings.n_ref + n})" for n in curve]
    rows = []
    for m in methods:
        cells = [m.name]
        for n in curve:
            r = run_method(m, data, targets, query, replace(settings, shots=n), fitted=True)
            out.setdefault(str(n), {})[m.name] = {"mean_spearman": r.mean("spearman"), "mean_within10": r.mean("within10"),
                                                   "mean_mape": r.mean("mape")}
            cells.append(f"{r.mean('spearman'):.3f} / {100 * r.mean('within10'):.0f}%")
        rows.append(cells)
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    print("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths))))
    for r in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return out
