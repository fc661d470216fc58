"""`hwlat demo`: the main job end to end on this machine (the README's first command): a new
device, 20 measurements, an accurate network under a latency budget. Profile a few NB201
architectures on onnxruntime CPU, adapt the shipped transfer predictor (never trained on this
machine), predict all 15625, search for the most accurate one (NATS-Bench CIFAR-10 accuracy)
under the budget, measure the best to verify, compare with the best measured architecture of the
shipped arch table within the same budget, plot."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from hwlat.cli import command_parser
from hwlat.commands.args import nonnegative_int, percentile, positive_float, positive_int, random_seed

SPACE = "nb201"


@dataclass(frozen=True)
class DemoSettings:
    """How much the demo does; `--quick` is the reduced mode the tests run."""

    reference_shots: int = 10
    random_shots: int = 10
    evaluations: int = 150  # architectures scored (accuracy looked up) by the constrained evolution
    population: int = 30
    tournament: int = 5
    verify: int = 5  # most accurate searched architectures measured per verification round
    rounds: int = 3  # verification rounds at most (they stop once none left could beat the best within budget)
    front: int = 6  # architectures of the predicted accuracy-latency Pareto front measured (the plot)
    protocol: str = "default"

    @classmethod
    def quick(cls) -> "DemoSettings":
        return cls(reference_shots=5, random_shots=1, evaluations=20, population=5, tournament=3, verify=3, front=2,
                   protocol="quick")


def register(sub) -> None:
    from hwlat.commands.search import verify_margin
    from hwlat.nas.accuracy import datasets

    p = command_parser(
        sub, "demo",
        "end to end on this machine: a new device, 20 measurements, an accurate network under a latency budget -- "
        "profile NB201 archs on onnxruntime CPU, adapt the shipped predictor, predict all 15625, search for the most "
        "accurate (NATS-Bench accuracy) under the budget, verify the best by measuring them, save plots",
        "hwlat demo --out results/demo   |   hwlat demo --max-latency-ms 1.0 --dataset cifar100",
    )
    p.add_argument("--out", default="results/demo", help="results folder (default results/demo)")
    p.add_argument("--quick", action="store_true", help="reduced mode: 6 architectures profiled (5 reference + 1 random) with the quick protocol, "
                        "fewer evaluated and verified (a few seconds)")
    p.add_argument("--threads", type=positive_int, default=1, help="onnxruntime intra-op threads (default 1)")
    p.add_argument("--dataset", default="cifar10", choices=datasets(),
                   help="maximise the NATS-Bench test accuracy on this dataset (default cifar10)")
    p.add_argument("--percentile", type=percentile,
                   help="latency budget = this percentile of the predicted latencies of all archs (default 30)")
    p.add_argument("--max-latency-ms", type=positive_float, help="use this latency budget (ms) instead of a percentile")
    p.add_argument("--margin", type=verify_margin, default=None, metavar="FRACTION|auto",
                   help="search under budget * (1 + margin) and measure the most accurate until one measures within "
                        "the budget: a fraction (0 for none) or auto (default): the predictor's error band, the 80th "
                        "percentile of its leave-one-out relative error on the measured architectures, at most 0.2")
    p.add_argument("--shots", type=nonnegative_int, help="random architectures measured besides the references (default 10; 1 with --quick)")
    p.add_argument("--evaluations", type=positive_int, help="architectures the search scores (default 150; 20 with --quick)")
    p.add_argument("--verify", type=positive_int,
                   help="most accurate candidates measured per verification round (default 5, 3 with --quick; at most 3 rounds, "
                        "until none left could beat the best measured within the budget)")
    p.add_argument("--front", type=nonnegative_int,
                   help="predicted Pareto-front architectures measured across the latency range (default 6; 2 with --quick)")
    p.add_argument("--seed", type=random_seed, default=0, help="seed of the random shots and of the search (default 0)")
    p.add_argument("--no-plots", action="store_true", help="do not draw the PNG plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (stage lines only)")
    p.set_defaults(func=_demo)


def _say(text: str) -> None:
    print(text, flush=True)


def _num(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.3f}"


def _demo(args: argparse.Namespace) -> int:
    run = _DemoRun(args, _settings(args))
    try:
        run.profile()
        run.adapt()
        run.predict_all()
        run.search()
        run.verify()
        run.plot()
        run.summarize()
    finally:
        run.lock.release()
    sys.stdout.flush()
    return 0


def _settings(args: argparse.Namespace) -> DemoSettings:
    """The demo's settings: the quick or full ones with the options given (checked by their parser types)."""
    from hwlat.device_tables.errors import HwlatError

    if args.percentile is not None and args.max_latency_ms is not None:
        raise HwlatError("--percentile and --max-latency-ms both set the latency budget: give one of them")
    if args.percentile is None:
        args.percentile = 30.0
    s = DemoSettings.quick() if args.quick else DemoSettings()
    given = {"random_shots": args.shots, "evaluations": args.evaluations, "verify": args.verify,
             "front": args.front}
    s = replace(s, **{k: v for k, v in given.items() if v is not None})
    return s


# What a demo writes into its folder: files, and arch tables (each a few files).
OUTPUTS = ("summary.json", "predicted_vs_measured.png", "pareto_front.png", "predictor.npz", "predictor.json")
TABLES = ("nb201_shots", "nb201_verified", "nb201_front")
MARKER = ".hwlat-demo"  # written into the folder by every demo: the files above there are a demo's to replace


class _DemoRun:
    """One demo, stage by stage: each stage keeps what the next ones use, and its time in `stages`."""

    def __init__(self, args: argparse.Namespace, s: DemoSettings):
        from hwlat.device_tables.files import make_parent
        from hwlat.device_tables.lock import TableLock
        from hwlat.nas.spaces import get_space

        self.args, self.s = args, s
        self.out = Path(args.out)
        make_parent(self.out / OUTPUTS[0])  # a folder that cannot be made names the file and why
        # held until the demo ends: a second demo into this folder would remove this one's files as it writes them
        self.lock = TableLock.acquire(self.out / OUTPUTS[0])
        try:
            self.clear_previous()
        except BaseException:
            self.lock.release()
            raise
        self.progress = not args.no_progress
        self.space = get_space(SPACE)
        self.stages: dict[str, float] = {}
        self.t_all = time.perf_counter()
        self.n_shots = s.reference_shots + s.random_shots
        _say(f"hwlat demo: NB201 on this CPU with onnxruntime (threads={args.threads}); results in {self.out}/"
             f"{'  [quick mode]' if args.quick else ''}")

    def clear_previous(self) -> None:
        """Remove what an earlier demo wrote into this folder (and only that): a run with --no-plots or
        --front 0, or one interrupted, would otherwise leave the last run's plots and summary beside its own.
        A folder holding files of those names that no demo wrote (no `MARKER`, no demo's summary.json:
        `--out .` among the user's own files) is refused, its files kept."""
        from hwlat.device_tables.archtable import arch_table_paths
        from hwlat.device_tables.errors import HwlatError
        from hwlat.device_tables.files import json_object

        summary = json_object(self.out / "summary.json") or {}
        ours = (self.out / MARKER).exists() or {"settings", "budget_rule"} <= summary.keys()
        theirs = [name for name in OUTPUTS if (self.out / name).exists()]
        if theirs and not ours:
            raise HwlatError(f"{self.out} holds {', '.join(theirs)}, which a demo would replace, and no demo wrote them "
                             "there: give another --out")
        for path in [self.out / name for name in OUTPUTS] + [p for t in TABLES for p in arch_table_paths(self.out / t)]:
            path.unlink(missing_ok=True)
        (self.out / MARKER).write_text("written by `hwlat demo`, which replaces its files here on each run\n")

    def profile(self) -> None:
        """1. Measure the reference and random architectures (`m`; `ok`: those measured)."""
        import numpy as np

        from hwlat.nas.device_loop import measure, shot_archs

        s, args = self.s, self.args
        _say(f"[1/6] profiling {self.n_shots} NB201 architectures ({s.reference_shots} reference + "
             f"{s.random_shots} random) on onnxruntime CPU, protocol {s.protocol} ...")
        t = time.perf_counter()
        shots = shot_archs(self.space, s.random_shots, args.seed, n_reference=s.reference_shots)
        m = measure(self.space, shots, self.out / "nb201_shots", threads=args.threads, protocol=s.protocol,
                    progress=self.progress, fresh=True)
        self.stages["profile"] = time.perf_counter() - t
        self.m, self.ok = m, np.isfinite(m.ms)
        noisy = f" ({m.noisy} noisy)" if m.noisy else ""
        _say(f"      {int(self.ok.sum())} measured in {self.stages['profile']:.1f} s on {m.device}: "
             f"{np.nanmin(m.ms):.3f} .. {np.nanmax(m.ms):.3f} ms{noisy} -> {m.table}.csv")

    def adapt(self) -> None:
        """2. Adapt the shipped transfer predictor to the measurements (`pred`), and save it."""
        from hwlat.nas.device_loop import adapt
        from hwlat.predictors.io import save

        m, out = self.m, self.out
        _say(f"[2/6] new device: the shipped NB201 transfer predictor (hwlat/predictors/pretrained/nb201, meta-trained on "
             f"other devices, never on this one) adapted from these {int(self.ok.sum())} measurements ...")
        t = time.perf_counter()
        self.pred = adapt("pretrained", self.space, m.archs, m.ms, min_rows=min(5, self.n_shots))
        self.stages["adapt"] = time.perf_counter() - t
        save(self.pred.predictor, out / "predictor", info={"space": SPACE, "device": m.device,
                                                          "shots": int(self.ok.sum()), "shots_table": str(m.table)})
        self.shots_pred = self.pred.predict(m.archs)
        _say(f"      adapted in {self.stages['adapt']:.2f} s; saved as {out / 'predictor'}.npz/.json "
             f"(use it: hwlat search --space nb201 --predictor {out / 'predictor'} ...)")

    def predict_all(self) -> None:
        """3. Predict every architecture (`all_ms`), and set the latency `budget` from them."""
        import numpy as np

        from hwlat.nas.accuracy import accuracy_table
        from hwlat.nas.features import latency_features

        args = self.args
        _say("[3/6] predicting all 15625 NB201 architectures ...")
        t = time.perf_counter()
        self.archs = list(self.space.enumerate())
        X, _ = latency_features(self.space, self.archs)
        self.all_ms = all_ms = self.pred.predictor.predict(X)
        self.acc = accuracy_table(self.space).values(args.dataset)  # by index == enumerate order
        self.stages["predict"] = time.perf_counter() - t
        self.budget = (float(args.max_latency_ms) if args.max_latency_ms
                       else float(np.percentile(all_ms, args.percentile)))
        self.feasible = int((all_ms <= self.budget).sum())
        _say(f"      {len(self.archs)} predictions in {self.stages['predict']:.2f} s: {all_ms.min():.3f} .. "
             f"{all_ms.max():.3f} ms (median {np.median(all_ms):.3f} ms)")

    def search(self) -> None:
        """4. Evolve architectures by accuracy under the budget + the predictor's error band (`result`)."""
        from hwlat.nas.constraints import LatencyConstraint
        from hwlat.nas.search import AccuracyObjective, ErrorBand, error_band, regularized_evolution
        from hwlat.nas.search.verified import widened

        s, args, space = self.s, self.args, self.space
        c = self.c = LatencyConstraint(self.pred, self.budget)
        c.check_budget()
        self.band = error_band(self.pred) if args.margin is None else ErrorBand(args.margin, "--margin")
        self.margin = self.band.fraction
        wide = self.wide = widened(c, self.margin)
        self.why = (f"{args.percentile:g}th percentile of the predictions" if not args.max_latency_ms
                    else "--max-latency-ms")
        objective = self.objective = AccuracyObjective(space, args.dataset)
        _say(f"[4/6] searching for the most accurate network under a latency budget of {self.budget:.3f} ms "
             f"({self.why}; {self.feasible} of {len(self.archs)} archs predicted feasible), plus the predictor's "
             f"{self.margin:.1%} error band that measuring resolves: predicted <= {wide.budget_ms:.3f} ms; "
             f"regularised evolution scoring {s.evaluations} archs")
        _say(f"      objective: {objective.label} (looked up: hwlat/nas/data/nb201_accuracy.npz)")
        t = time.perf_counter()
        result = self.result = regularized_evolution(space, objective, wide, budget=s.evaluations,
                                                     population=s.population, sample=s.tournament, seed=args.seed,
                                                     progress=self.progress)
        self.stages["search"] = time.perf_counter() - t
        _say(f"      {result.evaluations} scored ({result.rejected} proposals rejected by the constraint) in "
             f"{self.stages['search']:.1f} s")
        _say(result.format(s.verify, score_name=objective.short))
        _say(result.format_front(objective.short, limit=8))

    def _front_picks(self) -> list[int]:
        """Indices of `s.front` architectures spread over the predicted accuracy-latency front of all."""
        import numpy as np

        from hwlat.nas.search import pareto_front
        from hwlat.nas.search.result import Candidate

        if not self.s.front:
            return []
        front = pareto_front([Candidate(None, str(i), float(m), float(a), True, i)
                              for i, (m, a) in enumerate(zip(self.all_ms, self.acc))])
        measured = {c.key for c in self.verified.measured}
        pool = [c.step for c in front if self.space.key(self.archs[c.step]) not in measured]
        if len(pool) <= self.s.front:
            return pool
        return [pool[int(round(j))] for j in np.linspace(0, len(pool) - 1, self.s.front)]

    def verify(self) -> None:
        """5. Measure the most accurate candidates (all NB201 ranked by accuracy, a lookup) in rounds,
        predictions corrected by what was measured, until none left could beat the best within the
        budget (`verified`, `v`; its `winner`), then some of the predicted front (`vf`), and find the
        references the winner is compared with."""
        import numpy as np

        from hwlat.device_tables.archtable import arch_table_paths
        from hwlat.nas.device_loop import verify
        from hwlat.nas.search import VerifySettings
        from hwlat.nas.search.reference import best_within, measured_elsewhere, measured_reference, shipped_arch_table
        from hwlat.nas.search.verified import verify_search

        s, space = self.s, self.space
        _say(f"[5/6] measuring the most accurate searched archs on this CPU, {s.verify} per round, predictions "
             f"corrected by what was measured, until none left could beat the best measured within the budget ...")
        t = time.perf_counter()
        out = self.out / "nb201_verified"
        for path in arch_table_paths(out):  # this run's measurements only
            path.unlink(missing_ok=True)
        settings = VerifySettings(None, s.verify, s.rounds, threads=self.args.threads, protocol=s.protocol, out=out,
                                  progress=self.progress)
        self.verified = vs = verify_search(space, self.result, self.c, self.band, settings)
        self.v = vs.verification()
        _say(vs.format(self.objective.short))
        picks = self._front_picks()
        self.vf = None
        if picks:
            _say(f"      + {len(picks)} of the predicted accuracy-latency front (no budget):")
            self.vf = verify(space, [self.archs[i] for i in picks], [float(self.all_ms[i]) for i in picks], None,
                             out=self.out / "nb201_front", threads=self.args.threads, protocol=s.protocol,
                             progress=self.progress, fresh=True)
            _say(self.vf.format())
        self.stages["verify"] = time.perf_counter() - t
        self.v_acc = np.asarray([c.score for c in vs.measured] + [float(self.acc[i]) for i in picks])
        w = vs.winner
        self.winner = None if w is None else {
            "key": w.key, "index": space.index(w.arch), "accuracy": float(w.score), "predicted_ms": float(w.latency_ms),
            "measured_ms": float(vs.winner_ms)}
        self.ref_measured = measured_reference(space, self.acc, self.m.device, self.budget)
        self.ref_elsewhere = measured_elsewhere(shipped_arch_table(space, self.m.device)) if self.ref_measured else ""
        self.ref_predicted = best_within(space, self.acc, range(len(self.archs)), self.all_ms, self.budget,
                                         "all 15625 by the adapted predictor")

    def plot(self) -> None:
        """6. Draw predicted vs measured and accuracy vs latency (`plots`: their files), unless plots are off."""
        self.plots: list[Path] = []
        if self.args.no_plots:
            _say("[6/6] plots skipped (--no-plots)")
            return
        try:  # what was measured and found is summarised all the same
            import matplotlib  # noqa: F401
        except ImportError as exc:
            _say(f"[6/6] plots skipped: they need matplotlib ({exc}): pip install matplotlib")
            return
        from hwlat.nas.search.plots import accuracy_pareto, predicted_vs_measured

        m, ok, v, vf = self.m, self.ok, self.v, self.vf
        _say("[6/6] plotting ...")
        t = time.perf_counter()
        fp, fm = (vf.predicted, vf.measured) if vf is not None else ((), ())
        self.plots.append(predicted_vs_measured(self.out / "predicted_vs_measured.png", v.predicted, v.measured,
                                                self.shots_pred[ok], m.ms[ok], self.budget, m.device,
                                                f"NB201, this CPU: predictor adapted from {int(ok.sum())} measurements",
                                                fp, fm, others_label="predicted Pareto front"))
        n = len(v.keys)
        vp = list(v.predicted) + (list(vf.predicted) if vf is not None else [])
        vm = list(v.measured) + (list(vf.measured) if vf is not None else [])
        w, r = self.winner, self.ref_measured
        self.plots.append(accuracy_pareto(
            self.out / "pareto_front.png", self.all_ms, self.acc, self.result.history, vp, vm, self.v_acc,
            self.budget, winner=(w["measured_ms"], w["accuracy"]) if w else None,
            reference=(r.latency_ms, r.accuracy, f"best of the shipped arch table within budget ({r.accuracy:.2f}%)")
            if r else None, accuracy_label=f"{self.objective.short}",
            title=f"NB201 on this CPU, predictor adapted from {int(ok.sum())} measurements\n{n} searched + "
                  f"{len(vm) - n} front archs measured"))
        self.stages["plots"] = time.perf_counter() - t

    def summarize(self) -> None:
        """Print the summary and write it to summary.json."""
        from hwlat.device_tables.files import atomic_write_text

        total = time.perf_counter() - self.t_all
        _say("\n".join(self._summary_lines(total)))
        m, v, vf, s = self.m, self.v, self.vf, self.s
        regret = self._regret()
        summary = {
            "device": m.device, "quick": bool(self.args.quick), "settings": asdict(s), "budget_ms": self.budget,
            "budget_rule": self.why, "margin": self.margin, "margin_source": self.band.source,
            "search_budget_ms": self.wide.budget_ms,
            "feasible_predicted": self.feasible, "shots": {"keys": [self.space.key(a) for a in m.archs],
                                                           "measured_ms": m.ms.tolist(), "table": f"{m.table}.csv"},
            "objective": self.objective.label, "dataset": self.args.dataset, "objective_is_proxy": False,
            "search": self.result.to_dict(s.verify), "verification": v.to_dict(),
            "verify": self.verified.to_dict(),
            "verified_accuracy": [float(a) for a in self.v_acc[:len(v.keys)]],
            "verification_pareto_front": vf.to_dict() if vf is not None else None,
            "winner": self.winner,
            "reference_measured_table": self.ref_measured.to_dict() if self.ref_measured else None,
            "reference_measured_table_other_cpu": self.ref_elsewhere or None,
            "reference_all_predicted": self.ref_predicted.to_dict() if self.ref_predicted else None,
            "regret_pp": regret,
            "plots": [str(p) for p in self.plots], "stages_s": {k: round(x, 2) for k, x in self.stages.items()},
            "total_s": round(total, 2),
        }
        atomic_write_text(self.out / "summary.json", json.dumps(summary, indent=1) + "\n")
        _say(f"summary     {self.out / 'summary.json'}")

    def _regret(self) -> dict[str, float | None]:
        """Accuracy points between each reference and the winner (negative: the winner is better)."""
        w = self.winner
        out: dict[str, float | None] = {}
        for name, ref in (("vs_measured_table", self.ref_measured), ("vs_all_predicted", self.ref_predicted)):
            out[name] = None if (w is None or ref is None) else round(ref.accuracy - w["accuracy"], 3)
        return out

    def _summary_lines(self, total: float) -> list[str]:
        """The summary's lines: what was profiled, predicted, searched and verified, and the verdict."""
        import numpy as np

        m, ok, v, vf, stages, w = self.m, self.ok, self.v, self.vf, self.stages, self.winner
        n_ok = int(v.ok.sum())
        satisfied = n_ok - v.violations
        over = sum(c.latency_ms > self.budget for c in self.verified.measured)
        if w is not None:
            verdict = f"budget MET on the device by the winner ({w['measured_ms']:.3f} <= {self.budget:.3f} ms measured)"
        else:
            verdict = f"budget NOT MET: none of the {n_ok} verified architectures measured within it"
        n_shots = int(ok.sum())
        lines = [
            "",
            "== hwlat demo summary ==",
            f"device      {m.device} (new to the predictor)",
            f"profiled    {n_shots} NB201 architectures in {stages['profile']:.1f} s",
            f"predictor   shipped NB201 transfer predictor adapted from {n_shots} measurements; "
            f"all {len(self.archs)} predicted in {stages['predict']:.2f} s",
            f"budget      {self.budget:.3f} ms ({self.why}); {self.feasible} archs predicted feasible; searched with the "
            f"predictor's {self.margin:.1%} error band above it (predicted <= {self.wide.budget_ms:.3f} ms)",
            f"search      regularised evolution: {self.result.evaluations} archs scored in {stages['search']:.1f} s; "
            f"objective: {self.objective.label}",
            f"verified    the most accurate {n_ok} ({over} predicted over the budget, within the band) in "
            f"{len(self.verified.rounds)} round(s): Spearman {_num(v.spearman)} (predicted vs measured), MAPE "
            f"{v.mape:.1%}; measured within budget: {satisfied}/{n_ok}",
        ]
        if vf is not None and vf.ok.any():
            span = f"{np.nanmin(vf.measured):.2f}..{np.nanmax(vf.measured):.2f} ms"
            lines.append(f"            predicted Pareto front, {int(vf.ok.sum())} archs {span}: Spearman "
                         f"{_num(vf.spearman)}, MAPE {vf.mape:.1%}")
        lines.append(f"verdict     {verdict}")
        ds = self.args.dataset
        if w is not None:
            lines.append(f"winner      {w['accuracy']:.2f}% {ds} test accuracy, {w['measured_ms']:.3f} ms measured "
                         f"({w['predicted_ms']:.3f} predicted) <= {self.budget:.3f} ms: NB201 #{w['index']} {w['key']}")
        else:
            lines.append("winner      none: no verified architecture measured within the budget")
        r, rp = self.ref_measured, self.ref_predicted
        if r is not None:
            gap = "" if w is None else f" -> regret {r.accuracy - w['accuracy']:+.2f} pp"
            elsewhere = f", on another CPU: {self.ref_elsewhere}" if self.ref_elsewhere else ""  # that CPU's latencies
            lines.append(f"vs table    best of the shipped measured arch table within {self.budget:.3f} ms: "
                         f"{r.accuracy:.2f}% at {r.latency_ms:.3f} ms ({r.n_within} of {r.n} within; measured when the "
                         f"table was made{elsewhere}){gap}")
        else:
            lines.append(f"vs table    no shipped arch table for {m.device}: no measured reference")
        if rp is not None:
            gap = "" if w is None else f" -> regret {rp.accuracy - w['accuracy']:+.2f} pp"
            lines.append(f"vs all      best of all {len(self.archs)} within the budget by the adapted predictor: "
                         f"{rp.accuracy:.2f}% at {rp.latency_ms:.3f} ms predicted{gap}")
        if w is not None:
            lines.append(f"story       new device, {n_shots} measurements, a {w['accuracy']:.2f}% network at "
                         f"{w['measured_ms']:.3f} ms (budget {self.budget:.3f} ms), found in {total:.0f} s")
        if self.plots:
            lines.append("plots       " + ", ".join(str(p) for p in self.plots))
        lines.append("stages (s)  " + " | ".join(f"{k} {v_:.1f}" for k, v_ in stages.items()) + f" | total {total:.1f}")
        return lines
