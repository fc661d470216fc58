"""`hwlat profile device`: one command that turns a runtime on this machine into a complete device table.

Stages, each resumable because each stores what it measures as it goes:

1. ``fusion``: which op patterns the runtime fuses, whether it computes repeated ops once, the
   single-op call overhead and the weights its cache holds across runs (`hwlat.profilers.fusion`); every
   probe measurement is appended to ``NAME.probes.jsonl`` until the rules are stored.
2. ``rows``: op rows of the kernels the shipped spaces and the classic CNNs run, chosen adaptively
   (`hwlat.predictors.adaptive`), until the rows' share of the time budget is spent; a run whose share ran
   out before every kernel says so, and the next run measures on from where it stopped.
3. ``networks``: whole networks measured with the protocol `hwlat profile archs` uses by default,
   appended to ``NAME.networks.csv``: calibration networks, and networks kept apart for the score.
   Their first pass runs before the rows and their second after, so that a network's two passes are
   minutes apart, as a row's are.
4. ``regressors``: the kernel regressors fitted once and stored beside the table (arrays + JSON).
5. ``calibration``: the whole-network correction fitted on the calibration networks.
6. ``score``: the table predicts the networks it was not calibrated on: ``±10%: x of k``.

The calibration networks and the scored ones are other samples (other seeds) than the networks whose
kernels the rows were chosen for, so the score is what a user's fresh networks get.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from hwlat.device_tables.errors import HwlatError, TableError, UnsupportedOpError, WriteError
from hwlat.device_tables.measurement import Measurement
from hwlat.device_tables.files import append_to, repair_last_line, whole_csv_row
from hwlat.device_tables.lock import LOCK_SUFFIXES, TableLock
from hwlat.device_tables.table import DeviceTable, now
from hwlat.profilers.base import Runtime
from hwlat.profilers.protocol import Protocol

log = logging.getLogger(__name__)

STAGES = ("fusion", "rows", "networks", "regressors", "calibration", "score")
DEFAULT_MINUTES = 12.0
MAX_MINUTES = 15.0
# Networks whose kernels the rows are chosen for, per space (seed 0); the calibration networks use
# seed 1000 and the scored ones seed 2000, and the classic CNNs other resolutions for each.
POOL_PER_SPACE = 20
POOL_RESOLUTIONS = (160, 224)
CALIBRATION_RESOLUTION, SCORE_RESOLUTION = 176, 208
NETWORK_COLUMNS = ("network", "role", "pass", "status", "median_ms", "p10_ms", "mean_ms", "iqr_ms", "n", "noisy", "error",
                   "measured_at")
ROLES = ("calibration", "score")
# A network measured this much slower, relative to its kernels' sum, than the median of its kind is
# measured a third time (`_slow_spell_suspects`).
SUSPECT_SLOWDOWN = 1.10
# Seconds kept for the stages that measure nothing (fitting, calibrating, scoring).
FIT_RESERVE_S = 25.0
# Over this share of networks with their two passes >10% apart, the score line calls the run a noisy
# spell: the shipped tables' runs had 0-25% on one thread (the 2-thread ones on 2 cores 45-68%); a
# torch run on a Zen 4 VM whose speed swung up to 1.8x within minutes had 96%.
NOISY_SPELL = 0.5
# The most of the time left that the networks' first pass, before the rows, may take.
NETWORKS_FIRST_PASS_SHARE = 0.25
# The share of the rows' time that chooses and measures rows; the rest measures them a second time.
ROWS_FIRST_PASS_SHARE = 0.6


class OutOfTime(HwlatError):
    """The time budget ran out inside a stage; what it measured is stored. `why`, where given, says
    so in full (for a stage that stops with some budget left, kept for the stages after it)."""

    def __init__(self, what: str, why: str | None = None):
        super().__init__(what)
        self.why = why


@dataclass
class DeviceProfileResult:
    """What a `profile_device` run did: the table, the stages finished, and the self-score."""

    table: DeviceTable
    finished: list[str] = field(default_factory=list)
    unfinished: dict[str, str] = field(default_factory=dict)  # stage -> why
    inapplicable: dict[str, str] = field(default_factory=dict)  # stage -> why the runtime cannot have it
    score: dict[str, Any] | None = None
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        return not self.unfinished


def inapplicable_stages(table: DeviceTable) -> dict[str, str]:
    """The stages a table's runtime cannot give it, with why: one that times no whole network at the
    table's precision (a board, whose serial protocol runs one kernel at a time) has no weights-cache
    probe, calibration or score; its table predicts from its rows."""
    from hwlat.profilers.runtimes import runtimes

    cls = runtimes().get(table.device.runtime)
    if cls is None:
        return {}
    dtype = "int8" if table.device.precision == "int8" else "float32"
    if not cls.times_whole_models():
        why = f"the {table.device.runtime} runtime runs one kernel at a time, not whole networks"
    elif dtype not in cls.network_dtypes:
        why = f"the {table.device.runtime} runtime times whole {' and '.join(cls.network_dtypes)} networks, not {dtype}"
    else:
        return {}
    return {stage: why for stage in ("weights cache", "calibration", "score")}


def table_stages(table: DeviceTable) -> dict[str, str | None]:
    """Each stage a complete table carries, with a one-line description ("n/a: why" where the table's
    runtime cannot have it), or None where it is missing."""
    meta = table.meta
    fusion = meta.get("fusion") or {}
    cal = meta.get("lut_calibration") or {}
    reg = meta.get("regressors") or {}
    score = meta.get("self_score") or {}
    ok = len(table.rows("ok"))
    stages: dict[str, str | None] = {
        "fusion": f"{len(fusion.get('fused') or [])} patterns fused" if fusion else None,
        "weights cache": (f"{cache:g} MB" if (cache := (fusion.get("weights_cache") or {}).get("cached_mb")) is not None
                          else None),
        "rows": (f"{ok} measured" + (f"; the budget ended them short ({_rows_count(short)}), the regressors price "
                                     "the rest, and `profile device` with more --minutes measures on"
                                     if (short := _rows_short(table)) else "")) if ok else None,
        "regressors": (f"stored, {len(reg.get('families') or [])} kernel families" if reg else None),
        "calibration": (f"{cal.get('n_models', 0)} networks, statistic {cal.get('statistic', 'median')}"
                        + (f", networks timed again since {since} (--recalibrate"
                           + (", unfinished: the calibration is of the times before)" if _recalibrating(table) else ")")
                           if (since := _since(table)) else "")
                        if cal.get("n_models") else None),
        "score": score_line({**score, **passes_apart(table)}) if score.get("networks") else None,
    }
    for stage, why in inapplicable_stages(table).items():
        if stages[stage] is None:
            stages[stage] = f"n/a: {why}"
    return stages


def score_line(score: dict[str, Any]) -> str:
    """``±10%: x of k networks it was not calibrated on (MAPE ..., predicted/measured ...)``."""
    if score.get("ratio_range"):
        lo, hi = score["ratio_range"]
        detail = f"MAPE {score['mape']:.1%}, predicted/measured {lo:.2f}..{hi:.2f}"
        if score.get("partial"):
            detail += f"; {score['partial']} partial, counted as misses"
    else:
        detail = "every prediction partial: the table lacks rows of some kernels; give it more --minutes"
    line = f"±10%: {score['within_10']} of {score['networks']} networks it was not calibrated on ({detail})"
    if score.get("passes_apart_10") is not None:
        line += (f"; the machine's noise: {score['passes_apart_10']:.0%} of its {score['passes_compared']} networks' "
                 f"two passes over 10% apart")
        if score["passes_apart_10"] > NOISY_SPELL:
            line += (" (a noisy spell, which the table may fit rather than the machine: when the machine is "
                     "quieter, run the same command again with --recalibrate)")
    return line


def passes_apart(table: DeviceTable) -> dict[str, Any]:
    """The machine's own noise while it timed the table's networks: how many networks have both passes
    and the share of them whose two passes are over 5% / 10% apart (what `benchmarks/user_path.py`
    prints beside its scores)."""
    passes: dict[str, dict[int, float]] = {}
    for r in _current_networks(table):
        if r["status"] == "ok" and int(r["pass"]) in (1, 2):
            passes.setdefault(r["network"], {})[int(r["pass"])] = float(r["median_ms"])
    gaps = np.asarray([max(p.values()) / min(p.values()) - 1 for p in passes.values() if len(p) == 2])
    if not gaps.size:
        return {}
    return {"passes_compared": int(gaps.size), "passes_apart_5": round(float(np.mean(gaps > 0.05)), 4),
            "passes_apart_10": round(float(np.mean(gaps > 0.10)), 4)}


def missing_stages(table: DeviceTable) -> list[str]:
    return [k for k, v in table_stages(table).items() if v is None]


# ---- the networks stage's file --------------------------------------------------------------
def networks_path(table: DeviceTable) -> Path:
    return table.path.with_name(table.path.name + ".networks.csv")


def read_networks(path: Path) -> list[dict[str, Any]]:
    """The whole-network measurements stored so far (a partial last line from a kill is dropped)."""
    if not path.exists():
        return []
    repair_last_line(path, lambda line: whole_csv_row(line, len(NETWORK_COLUMNS)))
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != NETWORK_COLUMNS:
            raise TableError(f"{path}: header is not {','.join(NETWORK_COLUMNS)}; move the file away to re-measure")
        out = []
        for lineno, rec in enumerate(reader, start=2):
            if rec["role"] not in ROLES or rec["status"] not in ("ok", "error") or rec["pass"] not in ("1", "2", "3"):
                raise TableError(f"{path}, line {lineno}: role or status not recognised; delete the line to re-measure")
            if rec["status"] == "ok":
                try:
                    rec["median_ms"] = float(rec["median_ms"])
                except ValueError:
                    raise TableError(f"{path}, line {lineno}: median_ms is not a number; delete the line") from None
                if not (math.isfinite(rec["median_ms"]) and rec["median_ms"] > 0):
                    raise TableError(f"{path}, line {lineno}: median_ms must be a positive number; delete the line")
            out.append(rec)
    return out


def table_problems(table: DeviceTable) -> list[str]:
    """What is wrong with a table's files beside its rows (`hwlat table validate`), one line each: stored
    regressors that cannot be read, a networks file that cannot, a calibration that is not numbers, a
    row's reorder share that is not one."""
    from hwlat.predictors.kernel_regressors import KernelRegressors, OtherVersionRegressorsError
    from hwlat.predictors.lut.calibration import Calibration
    from hwlat.predictors.lut.regressors_store import regressors_stem

    problems = []
    stem = regressors_stem(table)
    # both files gone (deleted, as the line below says to): a prediction refits them, as for a table without them
    if table.meta.get("regressors") and stem is not None and any(
            stem.with_name(stem.name + suffix).exists() for suffix in (".json", ".npz")):
        try:
            regs = KernelRegressors.load(stem)
            for name in regs.families_:
                regs.families_[name]
        except OtherVersionRegressorsError:
            pass  # not damage: `other_version_regressors` words the warning
        except HwlatError as exc:
            problems.append(f"{exc} (delete {stem.name}.json/.npz: a prediction or `hwlat profile device` fits them again)")
    if table.path is not None:
        try:
            read_networks(networks_path(table))
        except HwlatError as exc:
            problems.append(str(exc))
    stored = table.meta.get("lut_calibration")
    if stored:
        cal = Calibration.from_dict(stored)
        numbers = [cal.scale, cal.per_kernel_ms, cal.constant_ms, cal.per_weight_mb_ms,
                   *(x for pair in cal.by_type.values() for x in pair)]
        scales = [cal.scale, *(scale for scale, _ in cal.by_type.values())]
        if not all(math.isfinite(float(x)) for x in numbers) or min(scales) <= 0:
            problems.append(f"{table.path}: its calibration ({cal.describe()}) is not a usable one; run `hwlat profile "
                            f"device` on it again (--recalibrate) to fit it anew")
    from hwlat.predictors.lut.reorders import reorder_shares

    for row in table.rows("ok"):  # the rows' reorder shares, which a prediction reads
        try:
            reorder_shares(row)
        except TableError as exc:
            problems.append(f"{table.path}.csv: {exc}")
            break
    return problems


def _append_network(path: Path, name: str, role: str, pass_: int, m: Measurement | None, error: str | None = None
                    ) -> None:
    new = not path.exists()
    values = [name, role, str(pass_), "ok" if m is not None else "error"]
    if m is not None:
        values += [f"{m.median_ms:.6g}", f"{m.p10_ms:.6g}", f"{m.mean_ms:.6g}", f"{m.iqr_ms:.6g}", str(m.n),
                   "true" if m.noisy else "false", ""]
    else:
        values += ["", "", "", "", "", "", (error or "").replace("\n", " ")]
    values.append(now())
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if new:
        w.writerow(NETWORK_COLUMNS)
    w.writerow(values)
    append_to(path, buf.getvalue().encode())


# ---- the networks ---------------------------------------------------------------------------
def candidate_networks(targets: Sequence[str], role: str, n: int) -> list[str]:
    """Twice `n` networks of the targets for a role (some may not run on a runtime), kinds in turn."""
    from hwlat.nas.pool import CLASSIC, classic_networks, in_turn, space_networks

    seed, resolution = (1000, CALIBRATION_RESOLUTION) if role == "calibration" else (2000, SCORE_RESOLUTION)
    spaces = [t for t in targets if t != CLASSIC]
    per = _share(2 * n, len(spaces) + (CLASSIC in targets))
    names: list[str] = []
    for s in spaces:
        names += space_networks(s, per, seed=seed)
    if CLASSIC in targets:
        names += classic_networks((resolution,))
    return in_turn(names, 2 * n)


def pool_networks(targets: Sequence[str], per_space: int = POOL_PER_SPACE) -> list[str]:
    """The networks whose kernels the rows are chosen for: sampled ones, and each space's rare ones."""
    from hwlat.nas.pool import CLASSIC, TRANSFORMERS, target_networks
    from hwlat.nas.spaces import get_space

    spaces = [t for t in targets if t != CLASSIC]
    names = target_networks(per_space, spaces, classic=CLASSIC in targets, seed=0, resolutions=POOL_RESOLUTIONS)
    for s in spaces:
        if s != TRANSFORMERS:  # a kind of networks, not a space
            space = get_space(s)
            names += [f"{s}:{space.key(a)}" for a in space.rare_archs()]
    return names


# ---- the run ---------------------------------------------------------------------------------
class _Clock:
    """The run's time budget."""

    def __init__(self, minutes: float):
        self.start = time.monotonic()
        self.end = self.start + 60.0 * minutes

    def left(self) -> float:
        return self.end - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start


def _stage(table: DeviceTable, name: str, clock: _Clock, **info: Any) -> None:
    """Record a finished stage in the table's metadata."""
    run = dict(table.meta.get("profile_device") or {})
    stages = dict(run.get("stages") or {})
    stages[name] = {"finished": now(), **info}
    run["stages"] = stages
    table.update_meta(profile_device=run)


def _done(table: DeviceTable, name: str) -> bool:
    return name in ((table.meta.get("profile_device") or {}).get("stages") or {})


def _stage_record(table: DeviceTable, name: str) -> dict[str, Any]:
    """What `_stage` recorded of a finished stage; {} where none (or damaged, not a mapping: read as none
    here, and named by a resume, which checks the record's shape)."""
    rec: Any = table.meta.get("profile_device")
    for key in ("stages", name):
        rec = rec.get(key) if isinstance(rec, dict) else None
    return rec if isinstance(rec, dict) else {}


def _say(clock: _Clock, stage: str, text: str) -> None:
    """A stage's line: printed with or without progress bars (a log of what the run did)."""
    i = STAGES.index(stage) + 1
    left = max(clock.left(), 0.0)
    print(f"[{i}/{len(STAGES)} {stage}] {text}  (elapsed {clock.elapsed() / 60:.1f} min, budget left {left / 60:.1f} min)",
          flush=True)


def _memo_measure(path: Path, measure: Callable[[Any], tuple[Measurement, dict]], clock: _Clock
                  ) -> Callable[[Any], tuple[Measurement, dict]]:
    """`measure` with each result appended to `path` (JSON lines): a rerun of the fusion probe replays
    the stored results in order (the n-th call for a spec gets its n-th stored result) and measures
    only the rest. Past the time budget it raises `OutOfTime`."""
    stored: dict[tuple[str, int], dict] = {}
    if path.exists():
        repair_last_line(path, _whole_json)
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
                stored[(rec["key"], int(rec["call"]))] = rec
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                log.warning("%s: skipping an unreadable line", path)
    calls: dict[str, int] = {}

    def measured(spec: Any) -> tuple[Measurement, dict]:
        n = calls.get(spec.key, 0)
        calls[spec.key] = n + 1
        rec = stored.get((spec.key, n))
        if rec is None:
            if clock.left() <= 0:
                raise OutOfTime("the fusion probe")
            try:
                m, extra = measure(spec)
                rec = {"key": spec.key, "call": n, "measurement": m.to_dict(), "extra": extra}
            except UnsupportedOpError as exc:
                rec = {"key": spec.key, "call": n, "error": str(exc)}
            append_to(path, (json.dumps(rec, default=str) + "\n").encode())
        if "error" in rec:
            raise UnsupportedOpError(rec["error"])
        return Measurement(**rec["measurement"]), dict(rec.get("extra") or {})

    return measured


def _whole_json(line: str) -> bool:
    """Whether a probes line without its newline is a whole record (a cut JSON object does not parse)."""
    try:
        return isinstance(json.loads(line), dict)
    except json.JSONDecodeError:
        return False


def profile_device(runtime: Runtime, out: str | os.PathLike, minutes: float = DEFAULT_MINUTES,
                   protocol: Protocol | None = None, targets: Sequence[str] | None = None,
                   calibration_networks: int = 32, score_networks: int = 20, per_space: int = POOL_PER_SPACE,
                   fusion_patterns: Sequence[str] | None = None, progress: bool = True,
                   fresh: bool = False, remeasure: Sequence[str] = (), recalibrate: bool = False,
                   start_from: str | os.PathLike | None = None) -> DeviceProfileResult:
    """Profile `runtime` on this machine into a complete device table at `out` (resumed if it exists).

    `minutes` bounds this run; `targets` are the spaces and/or ``classic`` whose kernels the rows
    are chosen for (default all of them); `protocol` measures rows and networks (the default,
    `Runtime.default_protocol`, is what `hwlat profile archs` measures with, so its numbers and this
    table's predictions are the same quantity). Returns what was finished and the table's score on
    networks it was not calibrated on. `fresh` starts an existing table again (its files moved aside
    to NAME.old-<time>.*) instead of resuming it, which needs the same protocol and runtime settings.
    `remeasure` (shell patterns of op keys) first measures the stored rows they match again, twice,
    each keeping its quieter pass, for rows whose single-op model has been fixed; the old values stay
    in the rows' extra, and the regressors, calibration and score follow the new rows.
    `recalibrate` times the table's calibration and score networks again, twice (and tries again
    those that could not run then), and refits the calibration and the score on those times alone
    (`since` in the run record): for a table whose machine has since run faster or slower. The older times stay in the networks file.
    `start_from` (a shipped name or a path) makes `out` a copy of that table first and recalibrates
    it: a table of a machine like this one (the same CPU design), fitted to this one's speed.
    A finished table run with targets it lacks grows: it probes the fusion patterns it lacks, measures
    rows for the new targets' kernels and their share of networks, then refits, recalibrates and
    scores on all of them; its rows and networks stay as they were. Every run also measures the target
    networks' kernels of any op family the table has no row of (one the runtime has since learned to
    run, or that the adaptive rows left out), so that no network of the targets is priced partial.
    """
    from hwlat.nas.pool import target_kinds

    protocol = protocol or runtime.default_protocol()
    targets = list(type(runtime).default_targets_at(runtime.precision) if targets is None else targets)
    if not (0 < minutes <= MAX_MINUTES * 4) or not math.isfinite(minutes):
        raise HwlatError(f"--minutes {minutes}: give a positive number of minutes (at most {MAX_MINUTES * 4:g})")
    bad = [t for t in targets if t not in target_kinds()]
    if bad or not targets:
        raise HwlatError(f"targets {','.join(bad) or '(none)'}: choose from {', '.join(target_kinds())}")
    if calibration_networks < 1 or score_networks < 1:
        raise HwlatError("--calibration-networks and --score-networks need at least 1 network each")
    if fusion_patterns is not None:  # before a table is made: a bad pattern leaves no file behind
        from hwlat.profilers.fusion import check_patterns

        fusion_patterns = check_patterns(fusion_patterns)
    runtime.check_protocol(protocol)
    if (recalibrate or remeasure) and start_from is None:  # refused before a table is made: no file left behind
        from hwlat.device_tables.table import table_paths

        csv_path, json_path = table_paths(out)
        if not json_path.exists():
            raise HwlatError(f"{'--recalibrate' if recalibrate else '--remeasure'}: no table {csv_path.with_suffix('')} "
                             f"({json_path} not found); give the --out of a table `hwlat profile device` made")
    copied = None
    clock = _Clock(minutes)
    meta = {**runtime.table_meta(protocol),
            "sampling": {"method": "adaptive", "targets": list(targets), "per_space": per_space}}
    if start_from is not None:
        copied = _copy_table(start_from, out, runtime, meta, fresh)
        recalibrate, fresh = True, False  # with --fresh, the old --out was set aside before the copy
    try:
        table = DeviceTable.open(out, runtime.device(), meta, fresh=fresh)  # refuses another protocol
    except HwlatError:
        if copied is not None:  # a --from copy this run cannot use, nothing measured into it: not left behind
            _remove_copy(copied)
        raise
    with table:
        result = DeviceProfileResult(table)
        run = dict(table.meta.get("profile_device") or {})
        added = _added_targets(run, targets)
        if added:
            targets = [*run["targets"], *added]
            run = _reopened(run, added)
            _say(clock, "fusion", f"the table grows to {', '.join(added)}: rows, networks, regressors, calibration "
                                f"and score are done again for them; what it has is kept")
        elif "rows" in (run.get("stages") or {}) and run.get("targets") and set(targets) < set(run["targets"]):
            # fewer: recorded, they would make the next run with the others "grow" to what the table has
            targets = list(run["targets"])
            _say(clock, "fusion", f"the table keeps its targets {','.join(targets)}: --targets adds to a table's "
                                  "targets, never removes any")
        # Rows a budget cut short are measured on by a run given more minutes than the last (a plain rerun,
        # resuming a later stage, keeps them: the regressors price the kernels without a row).
        # A --recalibrate times networks only: the rows stay, and so does the budget recorded for them.
        grow = bool(_rows_short(table)) and not recalibrate and minutes > float(run.get("minutes") or math.inf)
        run.update(minutes=run.get("minutes", minutes) if recalibrate else minutes, targets=list(targets),
                   calibration_networks=calibration_networks, score_networks=score_networks, protocol=protocol.to_dict())
        table.update_meta(profile_device=run, sampling={**(table.meta.get("sampling") or {}), "targets": list(targets)})
        try:
            if remeasure:
                _remeasure_rows(runtime, table, protocol, clock, remeasure, progress)
            if recalibrate:
                _start_recalibration(table, clock)
        except HwlatError:
            if copied is not None:  # refused before measuring anything into the copy
                table.close()
                _remove_copy(copied)
            raise
        steps = (("fusion", lambda: _fusion_stage(runtime, table, protocol, clock, fusion_patterns, progress)),
                 ("rows", lambda: _first_networks_then_rows(runtime, table, protocol, clock, targets, per_space,
                                                            (calibration_networks, score_networks), progress, grow)),
                 ("networks", lambda: _networks_stage(runtime, table, protocol, clock, targets, calibration_networks,
                                                      score_networks, progress)),
                 ("regressors", lambda: _regressors_stage(table, clock)),
                 ("calibration", lambda: _calibration_stage(table, clock)),
                 ("score", lambda: _score_stage(table, clock, result)))
        na = inapplicable_stages(table)
        for name, step in steps:
            why = na.get("calibration" if name == "networks" else name)
            if why:  # a board: no whole network to time, calibrate on or score with
                result.inapplicable[name] = why
                _say(clock, name, f"n/a: {why}")
                continue
            try:
                note = step()
            except OutOfTime as exc:
                result.unfinished[name] = exc.why or f"the time budget ran out during {exc}"
                _say(clock, name, f"not finished: {result.unfinished[name]}; what it measured is stored")
                break
            if note:  # the stage could not be done (or done whole), and says why
                result.unfinished[name] = note
                _say(clock, name, f"not finished: {note}")
            else:
                result.finished.append(name)
        for name, _ in steps:
            if name not in result.finished and name not in result.unfinished and name not in result.inapplicable:
                result.unfinished[name] = "not reached"
        result.seconds = clock.elapsed()
        run = dict(table.meta.get("profile_device") or {})
        run.setdefault("runs", []).append({"finished": now(), "seconds": round(result.seconds, 1),
                                           "unfinished": result.unfinished})
        table.update_meta(profile_device=run)
    return result


def _added_targets(run: dict[str, Any], targets: Sequence[str]) -> list[str]:
    """The targets a table that finished its rows for other targets lacks (none for a new table)."""
    if "rows" not in (run.get("stages") or {}) or not run.get("targets"):
        return []
    return [t for t in targets if t not in run["targets"]]


def _reopened(run: dict[str, Any], added: Sequence[str]) -> dict[str, Any]:
    """The run record with the stages that depend on the targets open again, and `added` noted as
    the targets the new rows and networks are for (stored, so an interrupted growth resumes)."""
    stages = {k: v for k, v in (run.get("stages") or {}).items() if k == "fusion"}
    return {**run, "stages": stages, "growing": sorted({*(run.get("growing") or []), *added})}


def _share(n: int, kinds: int) -> int:
    """One target's share of `n` networks spread over `kinds` targets."""
    return max(1, -(-n // max(kinds, 1)))


def _growing(table: DeviceTable) -> list[str]:
    """The targets an unfinished growth of the table adds (see `_reopened`), or none."""
    return list((table.meta.get("profile_device") or {}).get("growing") or [])


def _fusion_stage(runtime: Runtime, table: DeviceTable, protocol: Protocol, clock: _Clock,
                  patterns: Sequence[str] | None, progress: bool) -> str | None:
    from hwlat.device_tables.kernels import FusionRules
    from hwlat.profilers.fusion import candidate_patterns, detect_fusion, format_results, store_rules

    stored = FusionRules.from_meta(table.meta) if _done(table, "fusion") and table.meta.get("fusion") else None
    if stored is None:
        _say(clock, "fusion", "timing op patterns fused and apart, repeated ops, the weights cache")
    else:  # a growing table times only the patterns its rules lack
        patterns = [p for p in (patterns or candidate_patterns()) if p not in stored.measured]
        if not patterns:
            _say(clock, "fusion", "stored rules kept")
            return None
        _say(clock, "fusion", f"stored rules kept; timing {len(patterns)} patterns they lack ({', '.join(patterns[:4])}...)")
    probes = table.path.with_name(table.path.name + ".probes.jsonl")
    t0 = time.monotonic()
    measure = _memo_measure(probes, lambda s: runtime.measure(s, protocol), clock)
    rules, results = detect_fusion(runtime, patterns, protocol, progress=progress, measure=measure,
                                   extras=stored is None)
    store_rules(table, rules if stored is None else stored.merged(rules), runtime)
    print(format_results(results, rules))  # what was measured, on standard output: with or without progress bars
    cache = f"; {rules.weights_cache_mb:g} MB of weights held in the cache" if rules.weights_cache_mb is not None else ""
    _say(clock, "fusion", f"{sum(r.fused for r in results)} of {len(results)} patterns fused{cache}")
    if stored is None:
        _stage(table, "fusion", clock, seconds=round(time.monotonic() - t0, 1), patterns=len(results),
               fused=len(rules.fused))
    probes.unlink(missing_ok=True)
    return None


def _network_seconds(protocol: Protocol) -> float:
    """About how long one whole-network measurement takes (building, warm-up, the time cap; noisy
    ones are measured again), to keep time for the networks out of the rows' share."""
    return 1.2 * (0.4 + protocol.warmup_s + protocol.max_time_s)


def _first_networks_then_rows(runtime: Runtime, table: DeviceTable, protocol: Protocol, clock: _Clock,
                              targets: Sequence[str], per_space: int, networks: tuple[int, int], progress: bool,
                              grow: bool = True) -> str | None:
    """The networks' first pass, then the rows (whose two passes then lie between a network's two).
    A network's truth is the quieter of its passes; on a shared 2-core VM the machine's speed swings
    10-20% for minutes, and passes a minute apart (the second pass right after the first) fell
    in one spell more often than rows' passes did."""
    if not _rows_finished(table, grow):
        _networks_stage(runtime, table, protocol, clock, targets, *networks, progress, first_pass_only=True)
    return _rows_stage(runtime, table, protocol, clock, targets, per_space, networks, progress, grow)


def _rows_stage(runtime: Runtime, table: DeviceTable, protocol: Protocol, clock: _Clock, targets: Sequence[str],
                per_space: int, networks: tuple[int, int], progress: bool, grow: bool = True) -> str | None:
    """Pass 1 chooses and measures rows adaptively; pass 2 measures them again, in the same order, into
    ``NAME.pass2``, and each row keeps its quieter measurement. On a shared machine a measurement
    caught in a slow spell reads 10-50% high, thread-CPU clock or not; a second chance, minutes
    later, catches most of them (`DeviceTable.keep_quieter`). `grow`: measure on where an earlier
    run's budget ended pass 1 short of its kernels (`_rows_short`)."""
    from hwlat.predictors.adaptive import adaptive_profile

    if _rows_finished(table, grow):
        short = _rows_short(table)
        _say(clock, "rows", f"{len(table.rows('ok'))} stored rows kept" + (
            f" ({_rows_count(short)}; a run given more --minutes than the last measures on)" if short else ""))
        _cover_ops(runtime, table, protocol, clock, _row_pool(runtime, table, targets, per_space), progress)
        return None
    have = {(r["network"], int(r["pass"])) for r in _current_networks(table) if int(r["pass"]) <= 2}
    n_networks = sum(networks)
    growing = _growing(table)
    if growing:  # the networks still to measure are those of the new targets
        have = {(n, p) for n, p in have if n.split(":")[0] in growing}
        n_networks = len(growing) * sum(_share(n, len(targets)) for n in networks)
    if inapplicable_stages(table):  # no network to keep time for
        n_networks = 0
    reserve = max(0, 2 * n_networks - len(have)) * _network_seconds(protocol) + FIT_RESERVE_S
    left = clock.left()
    rows_s = max(left - reserve, 0.5 * left)
    pass2 = table.path.with_name(table.path.name + ".pass2")
    t0 = time.monotonic()
    pool = None
    short = _rows_short(table) if grow else None
    if not _done(table, "rows pass 1") or short:
        pool = _row_pool(runtime, table, growing or targets, per_space)
        had = {r.spec.key for r in table.rows()}
        first_s = max(ROWS_FIRST_PASS_SHARE * rows_s - (time.monotonic() - t0), 0.0)
        tried = sum(1 for k in pool if k in table)
        _say(clock, "rows", f"{len(pool)} distinct kernels in {len(pool_networks(growing or targets, per_space))} "
                            + (f"networks, {tried} of them measured by an earlier run whose budget ran out; "
                               f"measuring the most informative of the rest" if short else
                               "networks; measuring the most informative")
                            + f" for {first_s / 60:.1f} min, then each again")
        first_end = time.monotonic() + first_s
        alog = adaptive_profile(lambda s: runtime.measure(s, protocol), table, pool, budget=len(pool),
                                batch=32, progress=progress, deadline=first_end)
        table.update_meta(adaptive_rounds=(table.meta.get("adaptive_rounds") or []) + alog.rounds)
        # Kernels of the pool without a row because the budget ended pass 1 (not because the adaptive
        # choice ran out of candidates): the same command measures them next time (`_rows_short`).
        unmeasured = (len(pool) - sum(1 for k in pool if k in table)) if time.monotonic() >= first_end else 0
        keys = sorted((set(pool) - had) | set((short or {}).get("keys") or ())) if growing else None
        _stage(table, "rows pass 1", clock, seconds=round(time.monotonic() - t0, 1), rows=len(table.rows("ok")),
               pool=len(pool), keys=keys, unmeasured=unmeasured)
    deadline = t0 + rows_s
    with DeviceTable.open(pass2, table.device, {"pass_of": table.path.name}) as again:
        # A growing table measures again only the rows of its new targets' kernels.
        pooled = set(_stage_record(table, "rows pass 1").get("keys") or ())
        # A row an earlier run measured twice already (its pass 1 was cut short by the budget) is not
        # measured again.
        todo = [r.spec for r in table.rows("ok") if r.spec not in again and r.extra.get("passes") != 2
                and (not growing or r.spec.key in pooled)]
        _say(clock, "rows", f"second pass: {len(todo)} rows to measure again")
        from hwlat.predictors.adaptive import profile_specs_into

        profile_specs_into(lambda s: runtime.measure(s, protocol), again, todo, progress=progress, desc="pass 2",
                           deadline=deadline)
        replaced = table.keep_quieter(again)
        measured_twice = sum(1 for r in table.rows("ok") if r.spec in again)
    for suffix in (".csv", ".json", *LOCK_SUFFIXES):  # its lock too: pass 2 is written only under the table's
        pass2.with_name(pass2.name + suffix).unlink(missing_ok=True)
    if pool is None:  # pass 1 was done by an earlier run
        pool = _row_pool(runtime, table, growing or targets, per_space)
    _cover_ops(runtime, table, protocol, clock, pool, progress)
    _stage(table, "rows", clock, seconds=round(time.monotonic() - t0, 1), rows=len(table.rows("ok")),
           measured_twice=measured_twice, quieter_in_pass_2=replaced)
    short = _rows_short(table)
    if short:  # by design on a large pool: the regressors price the rest; not an unfinished stage
        _say(clock, "rows", f"{_rows_count(short)} (the rows' share of the time budget ran out before the rest, which "
                            "the regressors price); the same command with more --minutes measures on")
    return None


def _rows_count(short: dict[str, Any]) -> str:
    return f"{short['pool'] - short['unmeasured']} of {short['pool']} kernels measured or found not to run"


def _rows_short(table: DeviceTable) -> dict[str, Any] | None:
    """The record of the rows' first pass where the time budget ended it short of its pool (the rows of
    the kernels it did not reach are measured by the next run, then the later stages fit again), or None."""
    rec = _stage_record(table, "rows pass 1")
    if not all(isinstance(rec.get(k), int) for k in ("pool", "unmeasured")):
        return None
    return rec if rec["unmeasured"] else None


def _rows_finished(table: DeviceTable, grow: bool = True) -> bool:
    """Whether the rows stage is done: finished, and (where `grow`) not cut short of its kernels by a budget."""
    return _done(table, "rows") and not (grow and _rows_short(table))


def _row_pool(runtime: Runtime, table: DeviceTable, targets: Sequence[str], per_space: int
              ) -> dict[str, tuple[Any, int]]:
    """The kernels of the targets' pool networks (`pool_networks`) under the table's fusion rules, in the
    runtime's dtype: what the rows are chosen from (`hwlat.predictors.adaptive.kernel_pool`)."""
    from hwlat.device_tables.kernels import FusionRules
    from hwlat.nas.pool import graph_of
    from hwlat.predictors.adaptive import kernel_pool

    return kernel_pool([graph_of(n) for n in pool_networks(targets, per_space)], FusionRules.from_meta(table.meta),
                       runtime.dtype())


def _cover_ops(runtime: Runtime, table: DeviceTable, protocol: Protocol, clock: _Clock,
              pool: dict[str, tuple[Any, int]], progress: bool) -> None:
    """Measure the `pool` kernels (`_row_pool`) of every op (a base op, or ops fused into one kernel)
    the table has no row of (measured or refused): a kernel the adaptive rows left out, one the runtime
    (a board's firmware) has since learned to run, or one fusion rules found since make (a board's
    ``bn+relu``). Without a row of its family a kernel is uncovered and its networks partial; without a
    row of its own op it is regressed from its family's other ops (a ``bn+relu`` from the ``bn`` rows)."""
    from hwlat.predictors.adaptive import profile_specs_into

    have = {r.spec.op for r in table.rows()}
    todo = [s for s, _ in pool.values() if s.op not in have]
    if todo:
        _say(clock, "rows", f"{len(todo)} kernel(s) of ops without a row "
                            f"({', '.join(sorted({s.op for s in todo}))}): measuring them")
        profile_specs_into(lambda s: runtime.measure(s, protocol), table, todo, progress=progress, desc="ops",
                           deadline=time.monotonic() + max(clock.left() - FIT_RESERVE_S, 0.0))


# The files of a table that `_copy_table` copies as they are (its metadata is written after them).
COPIED_FILES = (".csv", ".networks.csv", ".regressors.json", ".regressors.npz")


def _copy_table(source: str | os.PathLike, out: str | os.PathLike, runtime: Runtime, meta: dict[str, Any],
                fresh: bool = False) -> Path | None:
    """`out` as a copy of the table `source` (a shipped name, which stands for this CPU's sibling, or
    a path); refused, before copying, where `out` exists or `source` is of another device than
    `runtime`'s or was measured with other settings than `meta`'s. Returns the copy's path (without suffix),
    or None where `out` is a copy of `source` whose recalibration an earlier run left unfinished (resumed).
    `fresh`: an existing `out` is set aside (NAME.old-<time>.*) and copied anew."""
    import shutil

    from hwlat.device_tables.registry import resolve
    from hwlat.device_tables.files import set_aside
    from hwlat.device_tables.table import FILE_SUFFIXES, MEASURING_SETTINGS, settings_differences, table_paths
    from hwlat.predictors.lut.regressors_store import REGRESSORS_SUFFIX

    stem = resolve(source)
    theirs = DeviceTable.load(stem)
    if theirs.device.name != runtime.device().name:
        raise HwlatError(f"--from {source}: a table of {theirs.device.name}, not of {runtime.device().name}; give the "
                         f"settings it was measured with: `{profile_command(theirs).rsplit(' --out ', 1)[0]} --from "
                         f"{source} --out {out}`")
    if not any(r["status"] == "ok" for r in read_networks(networks_path(theirs))):  # nothing to time again
        raise HwlatError(f"--from {source}: it has no measured networks to time again on this machine; give a table "
                         f"whose `hwlat profile device` run measured its networks, or complete it first")
    csv_path, json_path = table_paths(out)
    if json_path.exists() and not fresh:  # (its rows without it are a copy cut short: copied anew)
        mine = DeviceTable.load(csv_path.with_suffix(""))
        if (mine.meta.get("copied_from") or {}).get("table") == stem.name and not _recalibration(mine).get("finished"):
            return None  # the same command, run again after a kill or out of time: its recalibration resumes
        raise HwlatError(f"--from {source}: {csv_path.with_suffix('')} exists; choose a new --out (or recalibrate that "
                         "table with --recalibrate alone)")
    diffs = settings_differences(theirs.meta, meta, MEASURING_SETTINGS)
    if diffs:
        raise HwlatError(f"--from {source}: measured with other settings than this run's ({'; '.join(diffs)}); give "
                         f"the settings it was measured with (`hwlat table show {stem}` lists them; e.g. --protocol, "
                         "--clock)")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    target = csv_path.with_suffix("")
    if fresh:
        with TableLock.acquire(target):  # not while another run writes it
            set_aside(target, FILE_SUFFIXES)
    for suffix in COPIED_FILES:  # the metadata last: a copy cut short is no table, and is copied anew
        src = stem.with_name(stem.name + suffix)
        if src.exists():
            shutil.copyfile(src, target.with_name(target.name + suffix))
    meta = {**theirs.meta, "name": target.name, "copied_from": {"table": stem.name, "at": now()}}
    if meta.get("regressors"):  # their files were copied under the new name
        meta["regressors"] = {**meta["regressors"], "file": target.name + REGRESSORS_SUFFIX}
    DeviceTable(theirs.device, meta, target).write_meta()
    return target


def _remove_copy(target: Path) -> None:
    """Remove a `_copy_table` copy that a run refused before measuring anything into it, so that the
    same command, corrected, can make it again."""
    for suffix in (*COPIED_FILES, ".json", *LOCK_SUFFIXES):
        target.with_name(target.name + suffix).unlink(missing_ok=True)


def _start_recalibration(table: DeviceTable, clock: _Clock) -> None:
    """Count only network times from now on (`_since`); the networks stage then times every stored
    calibration and score network again, and the calibration and score are fitted on those times."""
    stored = [r for r in read_networks(networks_path(table)) if r["status"] == "ok"]
    if not stored:
        raise HwlatError(f"--recalibrate: {table.name} has no measured networks to time again; run `hwlat profile "
                         f"device` without --recalibrate first")
    if _recalibrating(table):
        return  # an unfinished recalibration resumes
    run = dict(table.meta.get("profile_device") or {})
    since = now()
    run["recalibrated"] = {"since": since, "networks": len({r["network"] for r in stored})}
    table.update_meta(profile_device=run)
    while now() == since:  # time stamps are to the second: what counts is stamped after `since`
        time.sleep(0.05)


def _recalibration(table: DeviceTable) -> dict[str, Any]:
    """The table's last recalibration (`since`, and `finished` once scored), or {} if none."""
    return (table.meta.get("profile_device") or {}).get("recalibrated") or {}


def _recalibrating(table: DeviceTable) -> bool:
    """Whether a recalibration has begun and not yet been scored."""
    rec = _recalibration(table)
    return bool(rec) and not rec.get("finished")


def _since(table: DeviceTable) -> str | None:
    """When the table's last recalibration began: network times before it no longer count."""
    return _recalibration(table).get("since")


def _counted(table: DeviceTable, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The network measurements among `rows` that count: those since the last recalibration, if any."""
    since = _since(table)
    if since is None:
        return rows
    start = _instant(since)
    return [r for r in rows if _instant(r["measured_at"]) > start]


# A machine whose stored networks time within this of their stored times runs as when its table was made.
DRIFT_TOLERANCE = 0.05


@dataclass(frozen=True)
class Drift:
    """How this machine runs a table's own stored networks now against when the table was made:
    each network's time now over its stored (quieter) time, and their median."""

    table: str
    ratios: dict[str, float]
    other_machine: bool = False  # the table was measured on another machine (`machine_differences`)

    @property
    def median(self) -> float:
        return float(np.median(list(self.ratios.values())))

    def describe(self) -> str:
        r = sorted(self.ratios.values())
        then = "the machine the table was made on" if self.other_machine else "when the table was made"
        state = (f"as {then}" if abs(self.median - 1) <= DRIFT_TOLERANCE else
                 f"{'slower' if self.median > 1 else 'faster'} than {then}: its predictions "
                 f"are {'low' if self.median > 1 else 'high'} by about that much now")
        return (f"{len(r)} of {self.table}'s own networks time now at {self.median:.2f}x their stored times "
                f"(median; {r[0]:.2f}-{r[-1]:.2f}): this machine runs {state}")


def drift(table: DeviceTable, networks: int = 6, runtime: Runtime | None = None) -> Drift:
    """Time `networks` of the networks `table`'s calibration and score timed once again on `runtime`
    (default: the table's runtime and settings, with the protocol they were timed with), each against
    its stored time: whether this machine still
    runs as when the table was made. A spell in which a shared machine runs 1.2x slower shows here
    and not in the spread of repeated timings. `HwlatError` for a table that stores no network timings."""
    from hwlat.nas.pool import onnx_of

    if _recalibrating(table):  # its calibration is of the times before, its counted times are the new ones
        raise HwlatError(f"{table.name}: a --recalibrate began timing its networks again and has not finished (its "
                         f"calibration is still of the times before it): `{profile_command(table)} --recalibrate` "
                         "finishes it")
    stored: dict[str, float] = {}
    for rec in _current_networks(table):
        if rec["status"] == "ok" and rec["median_ms"]:
            stored[rec["network"]] = min(stored.get(rec["network"], math.inf), float(rec["median_ms"]))
    if not stored:
        why = next(iter(inapplicable_stages(table).values()), None) or (
            f"{networks_path(table)}, where its run timed them, is gone" if lost_networks(table) else
            "no `hwlat profile device` run timed any")
        raise HwlatError(f"{table.name} stores no network timings to compare ({why})")
    if networks < 1:
        raise HwlatError(f"--networks {networks}: time at least 1 network")
    if runtime is None:
        from hwlat.profilers.runtimes import get_runtime

        dev = table.device
        runtime = get_runtime(dev.runtime, precision=dev.precision, **dict(dev.settings))
    run = table.meta.get("profile_device", {})
    protocol = Protocol.from_dict(run["protocol"]) if run.get("protocol") else runtime.default_protocol()
    names = sorted(stored)[:: max(1, len(stored) // networks)][:networks]
    return Drift(table.name, {n: runtime.time_model(onnx_of(n), protocol).median_ms / stored[n] for n in names},
                 bool(machine_differences(table)))


# This machine's speed now (`speed_now`): a reading (`drift`, 6 networks) is taken when the newest is
# older than SPEED_READ_EVERY_S, and the readings of the last SPEED_WINDOW_S count together. A shared
# machine's speed moves within minutes, network to network by up to 10-20% around a level that itself
# moves (an Intel Xeon VM: 1.0-1.45x its table's times, median 1.18, over one minute of 80 networks),
# so one reading of 6 networks can be 10% off the level; pooling a few minutes of them is steadier.
SPEED_READ_EVERY_S = 60.0
SPEED_WINDOW_S = 600.0
SPEED_LOCK_WAIT_S = 60.0  # another process's reading takes 2-6 s
AS_PROFILED_ENV = "HWLAT_AS_PROFILED"


@dataclass(frozen=True)
class Speed:
    """This machine's time now over a table's, from its own networks timed again: `factor` is the
    median of every network's ratio in the `readings` (time stamp, network -> ratio) of the window."""

    table: str
    readings: tuple[tuple[float, dict[str, float]], ...]

    @property
    def ratios(self) -> list[float]:
        return [r for _, ratios in self.readings for r in ratios.values()]

    @property
    def factor(self) -> float:
        return float(np.median(self.ratios))

    @property
    def spread(self) -> float:
        """How far networks stray from `factor` now: the standard deviation of the ratios' logarithms
        (0 with fewer than 3). A shared machine slows networks unevenly (an Intel Xeon VM, one reading:
        NB201 1.09-1.20x, ResNet-50 1.28-1.32x, OFA 1.58-1.78x), and each timing has its own noise; one
        factor leaves that much error in each prediction it scales."""
        logs = np.log(np.asarray(self.ratios, dtype=float))
        return float(np.std(logs, ddof=1)) if logs.size >= 3 else 0.0

    def describe(self) -> str:
        span = max(at for at, _ in self.readings) - min(at for at, _ in self.readings)
        over = f"over the last {span / 60:.0f} min" if span >= 60 else "just now"
        return (f"this machine times {self.table}'s own networks at {self.factor:.2f}x their stored times (median of "
                f"{len(self.ratios)} timings {over})")


def speed_cache_path() -> Path:
    """Where `speed_now` keeps its readings: ``$XDG_CACHE_HOME/hwlat/speed.json`` (``~/.cache`` by default, and
    for a relative $XDG_CACHE_HOME, which the XDG spec says to ignore: it put a cache folder wherever one ran)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return Path(xdg if os.path.isabs(xdg) else Path.home() / ".cache") / "hwlat" / "speed.json"


@contextlib.contextmanager
def _speed_cache_lock(cache: Path) -> Iterator[None]:
    """Hold the lock around reading, timing and writing `cache` (``speed.json.lock``), so that
    predictions started together time the networks once and keep every reading; go on without it
    where it cannot be taken (a read-only home, or a holder stuck for `SPEED_LOCK_WAIT_S`)."""
    from filelock import FileLock, Timeout

    lock = FileLock(f"{cache}.lock", timeout=SPEED_LOCK_WAIT_S)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except (OSError, Timeout) as exc:
        log.info("reading the speed cache %s without its lock: %s", cache, exc)
        yield
        return
    try:
        yield
    finally:
        lock.release()


def speed_now(table: DeviceTable) -> Speed | None:
    """This machine's speed now against the table's own stored networks, to scale its predictions by:
    None where there is nothing to compare (a table of another machine or kind of hardware, of a
    runtime not installed here, one storing no network timings, or one whose networks do not run
    now) or where ``HWLAT_AS_PROFILED`` is set. Readings are kept in `speed_cache_path`, per table name and
    stored networks (wherever the table's files are), so a loop of predictions times the networks once a minute."""
    from hwlat.device_tables.files import atomic_write_text

    if os.environ.get(AS_PROFILED_ENV, "") not in ("", "0") or table.device.hardware != "cpu" or machine_differences(table):
        return None
    from hwlat.profilers.runtimes import runtimes

    if table.device.runtime not in runtimes():
        return None
    try:  # by what the readings compare against: copies of one table (another clone, a --from copy) share them
        key = f"{table.name}|{hashlib.sha256(networks_path(table).read_bytes()).hexdigest()[:16]}"
    except OSError:
        return None  # no network timings stored
    cache = speed_cache_path()
    with _speed_cache_lock(cache):  # one process times the networks; the others wait and take its reading
        now_s = time.time()
        try:
            kept = json.loads(cache.read_text())
            kept = {k: [(float(at), {str(n): float(r) for n, r in ratios.items()}) for at, ratios in v
                        if 0 <= now_s - float(at) <= SPEED_WINDOW_S] for k, v in kept.items()}
        except (OSError, ValueError, TypeError, AttributeError):
            kept = {}
        readings = kept.get(key) or []
        if not readings or now_s - max(at for at, _ in readings) > SPEED_READ_EVERY_S:
            try:
                readings.append((now_s, _drift_ratios(table)))
            except (HwlatError, RuntimeError, OSError) as exc:  # a runtime that fails here: the table's own times
                log.warning("no reading of this machine's speed against %s now (%s): predicting the table's own "
                            "times", table.name, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                return None
            kept[key] = readings
            try:
                atomic_write_text(cache, json.dumps({k: v for k, v in kept.items() if v}))
            except WriteError as exc:  # a read-only home: the reading serves this process only
                log.info("cannot keep the speed reading in %s: %s", cache, exc)
    return Speed(table.name, tuple(readings))


def _drift_ratios(table: DeviceTable) -> dict[str, float]:
    """`drift(table).ratios`, timed in a forked child where this process has no runtime loaded yet:
    loading one here would keep `predict --archs` from forking its workers (`hwlat.predictors.lut.many`)."""
    from hwlat.predictors.lut.many import can_fork, fork_pool

    if not can_fork():
        return drift(table).ratios
    global _drift_table
    _drift_table = table  # the child has it as this process has it: nothing to pickle
    try:
        with fork_pool(1) as pool:
            ratios, error = pool.apply(_drift_in_child)
    finally:
        _drift_table = None
    if error is not None:
        raise RuntimeError(error)
    return ratios


_drift_table: DeviceTable | None = None


def _drift_in_child() -> tuple[dict[str, float], str | None]:
    try:
        return drift(_drift_table).ratios, None
    except (HwlatError, RuntimeError, OSError) as exc:  # as one message: not every error class pickles
        return {}, str(exc) or type(exc).__name__


def scale_to_speed_now(lut: Any) -> str | None:
    """Scale a `LUTPredictor`'s predictions to this machine's speed now (`speed_now`), where its
    table's own networks time more than `DRIFT_TOLERANCE` off their stored times; the line saying so
    (None where the table's own times stand)."""
    speed = speed_now(lut.table)
    lut.speed_error = 0.0 if speed is None else speed.spread  # scaled or not, networks stray that far now
    if speed is None or abs(speed.factor - 1) <= DRIFT_TOLERANCE:
        lut.speed = 1.0
        return None
    lut.speed = speed.factor
    return (f"{speed.describe()}: predictions scaled by {speed.factor:.2f}; --as-profiled (or {AS_PROFILED_ENV}=1) "
            "predicts the table's own times")


_speed_logged: set[tuple[str, float]] = set()  # (table, factor) lines already logged: once each per process


def at_speed_now(lut: Any, as_profiled: bool = False) -> Any:
    """`lut` (a `LUTPredictor`) scaled to this machine's speed now (`scale_to_speed_now`) unless
    `as_profiled`, the line saying so logged once per table and factor in a process: what the Python
    API does wherever it turns a device table into a predictor."""
    said = None if as_profiled else scale_to_speed_now(lut)
    if said and (lut.table.name, round(lut.speed, 2)) not in _speed_logged:
        _speed_logged.add((lut.table.name, round(lut.speed, 2)))
        log.warning("%s", said)
    return lut


def _current_networks(table: DeviceTable) -> list[dict[str, Any]]:
    """The stored network measurements that count (`_counted`)."""
    return _counted(table, read_networks(networks_path(table)))


def _instant(stamp: str) -> datetime.datetime:
    """A stored time stamp (`now`: local time with its UTC offset) as a comparable instant; an
    unreadable one as the earliest (a row without a readable time does not count after a recalibration)."""
    try:
        return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z")
    except (TypeError, ValueError):
        return datetime.datetime.min.replace(tzinfo=datetime.timezone.utc)


def _remeasure_rows(runtime: Runtime, table: DeviceTable, protocol: Protocol, clock: _Clock,
                    patterns: Sequence[str], progress: bool) -> None:
    """Measure the rows whose keys match `patterns` again, in two passes, and store the quieter."""
    from fnmatch import fnmatchcase

    from tqdm import tqdm

    specs = [r.spec for r in table.rows() if any(fnmatchcase(r.spec.key, p) for p in patterns)]
    if not specs:
        raise HwlatError(f"--remeasure {' '.join(patterns)}: no row of {table.name} matches; `hwlat table show "
                         f"{table.path}` lists its rows' keys (shell patterns: * and ?, e.g. 'gelu|*|tanh=true')")
    _say(clock, "rows", f"measuring {len(specs)} stored row(s) again, twice, for --remeasure")
    new: dict[str, tuple[Measurement, dict]] = {}
    refused: dict[str, str] = {}
    for spec in tqdm(specs * 2, desc="remeasure", unit="row", disable=None if progress else True, dynamic_ncols=True):
        if spec.key in refused:
            continue
        try:
            m, extra = runtime.measure(spec, protocol)
        except UnsupportedOpError as exc:  # e.g. over a board's arena: the row stays as it was
            refused[spec.key] = str(exc)
            continue
        if spec.key not in new or m.median_ms < new[spec.key][0].median_ms:
            new[spec.key] = (m, {**extra, "passes": 2})
    table.remeasured(new, refused)
    if refused:
        _say(clock, "rows", f"{len(refused)} of them do not run on {runtime.name}: a measured row keeps its "
                            f"measurement, a failed one takes the new reason (e.g. {next(iter(refused.values()))})")


def _networks_stage(runtime: Runtime, table: DeviceTable, protocol: Protocol, clock: _Clock, targets: Sequence[str],
                    n_cal: int, n_score: int, progress: bool, first_pass_only: bool = False) -> str | None:
    """Whole networks in two passes (each network's truth is its quieter pass, as for the rows); the
    calibration and score networks interleaved, so a short budget leaves some of each. With
    `first_pass_only` (before the rows), the first pass only, for at most `NETWORKS_FIRST_PASS_SHARE`
    of the time left; the stage itself measures what that left over."""
    from tqdm import tqdm

    from hwlat.nas.pool import onnx_of

    if inapplicable_stages(table):  # nothing to time (a board); `profile_device` says n/a for the stage
        return None
    path = networks_path(table)
    stored = read_networks(path)
    done = {(r["network"], int(r["pass"])) for r in _counted(table, stored)}
    failed = {r["network"] for r in stored if r["status"] == "error"}
    want = {"calibration": n_cal, "score": n_score}
    chosen: dict[str, list[str]] = {role: [] for role in ROLES}
    for r in stored:
        if r["status"] == "ok" and int(r["pass"]) == 1 and r["network"] not in chosen[r["role"]]:
            chosen[r["role"]].append(r["network"])
    growing = _growing(table)
    if growing:  # the networks of the other targets are kept; each new target gets its share on top
        kinds = len(targets)
        old = {role: [n for n in chosen[role] if n.split(":")[0] not in growing] for role in ROLES}
        want = {role: len(old[role]) + len(growing) * _share(want[role], kinds) for role in ROLES}
        n_cal, n_score = want["calibration"], want["score"]
    queues = {role: [n for n in candidate_networks(growing or targets, role, want[role])
                     if n not in chosen[role] and n not in failed] for role in ROLES}
    stored_pass_1 = sum(1 for _, p in done if p == 1)
    if first_pass_only and stored_pass_1 >= n_cal + n_score:
        return None
    # The first pass runs in the rows' turn, before them: its lines say so under the rows' number.
    stage, lead = ("rows", "before the rows, the networks' first pass: ") if first_pass_only else ("networks", "")
    if _recalibrating(table):
        _say(clock, stage, f"{lead}recalibrating: the stored networks are timed again; only times since "
                           f"{_since(table)} count (the older ones stay in the file)")
    passes = 1 if first_pass_only else 2
    first_pass_end = time.monotonic() + NETWORKS_FIRST_PASS_SHARE * clock.left()
    _say(clock, stage, f"{lead}{len(done)} measurements stored; measuring {n_cal} calibration and {n_score} score "
                       + ("networks whole, a first time (the second after the rows)" if first_pass_only
                          else "networks whole, twice"))
    bar = tqdm(total=passes * (n_cal + n_score),
               initial=min(stored_pass_1 if first_pass_only else len(done), passes * (n_cal + n_score)),
               desc="networks" + (", pass 1" if first_pass_only else ""), unit="net", disable=None if progress else True,
               dynamic_ncols=True)

    def measure(role: str, name: str, pass_: int) -> bool:
        if first_pass_only and time.monotonic() > first_pass_end:
            raise _FirstPassDone
        if clock.left() <= FIT_RESERVE_S:  # chosen: networks measured, or (recalibrating) to be timed again
            timed = {r["network"] for r in _counted(table, read_networks(path)) if r["status"] == "ok"}
            so_far = " and ".join(f"{sum(n in timed for n in chosen[r])} of {max(want[r], len(chosen[r]))} {r}"
                                  for r in ROLES)
            raise OutOfTime("the networks stage", f"{so_far} networks measured ({_kept_for_fitting(clock)}); run the "
                            f"same command again (with more --minutes) to measure the rest")
        try:
            m = runtime.time_model(onnx_of(name), protocol)
        except UnsupportedOpError as exc:
            _append_network(path, name, role, pass_, None, str(exc))
            return False
        _append_network(path, name, role, pass_, m)
        bar.update(1)
        return True

    try:
        for role in ROLES:  # after a recalibration began, the networks chosen before are timed again
            for name in chosen[role]:
                if (name, 1) not in done:
                    measure(role, name, 1)
        if _recalibrating(table):  # and those that could not run then are tried again (the runtime may run them now)
            for role in ROLES:
                for name in dict.fromkeys(r["network"] for r in stored if r["status"] == "error" and r["role"] == role
                                          and r["network"] not in chosen[role]):
                    if not _timed_since(table, stored, name) and measure(role, name, 1):
                        chosen[role].append(name)
        while any(len(chosen[r]) < want[r] and queues[r] for r in ROLES):  # pass 1
            for role in ROLES:
                if len(chosen[role]) < want[role] and queues[role]:
                    name = queues[role].pop(0)
                    if any(name in chosen[r] for r in ROLES):  # a kind with few networks (the transformers):
                        continue  # a score network is never one the table is calibrated on
                    if measure(role, name, 1):
                        chosen[role].append(name)
        if first_pass_only:
            raise _FirstPassDone
        for role in ROLES:  # pass 2: what time allows; a network measured once keeps that
            for name in chosen[role]:
                if (name, 2) not in done:
                    measure(role, name, 2)
        rechecks = _slow_spell_suspects(table, {n for r in ROLES for n in chosen[r]})
        if rechecks:
            _say(clock, "networks", f"measuring {len(rechecks)} network(s) a third time: their time, against the sum "
                                    f"of their kernels, reads over {SUSPECT_SLOWDOWN - 1:.0%} slower than the "
                                    f"median network of their kind ({', '.join(n for _, n in rechecks)})")
            for role, name in rechecks:
                measure(role, name, 3)
    except _FirstPassDone:
        bar.close()
        return None
    except OutOfTime:
        bar.close()
        if first_pass_only:  # the stage meets the budget in its turn, and says what it could not finish
            return None
        if any(len(chosen[r]) < min(want[r], 1) for r in ROLES):
            raise
        if _since(table):  # a recalibration counts only when every network has been timed again
            timed = {(r["network"], int(r["pass"])) for r in _current_networks(table)}
            if any((n, 1) not in timed for r in ROLES for n in chosen[r]):
                raise
        # Enough to calibrate and score on, short of the run's aim: the later stages go on with what
        # there is, and the run says what is missing (the same command measures it next time).
        twice = {n for n, p in ((r["network"], int(r["pass"])) for r in _counted(table, read_networks(path))) if p == 2}
        return (f"{len(chosen['calibration'])} of {want['calibration']} calibration and "
                f"{len(chosen['score'])} of {want['score']} score networks measured, "
                f"{sum(n in twice for r in ROLES for n in chosen[r])} of them twice ({_kept_for_fitting(clock)}); "
                f"run the same command again (with more --minutes) to measure the rest")
    bar.close()
    _stage(table, "networks", clock, calibration=len(chosen["calibration"]), score=len(chosen["score"]))
    return None


def _kept_for_fitting(clock: _Clock) -> str:
    """Why a stage stopped with some budget left: the rest is kept for the stages that fit."""
    return (f"stopped with {max(clock.left(), 0.0):.0f} s of the budget left, under the {FIT_RESERVE_S:.0f} s kept "
            f"for fitting the regressors, calibration and score")


def _timed_since(table: DeviceTable, stored: list[dict[str, Any]], name: str) -> bool:
    """Whether `name` was already tried since the recalibration began (an interrupted one resumes)."""
    since = _since(table)
    return since is not None and any(r["network"] == name and _instant(r["measured_at"]) >= _instant(since)
                                     for r in stored)


def _slow_spell_suspects(table: DeviceTable, names: set[str]) -> list[tuple[str, str]]:
    """(role, network) of the measured networks whose truth looks taken in a slow spell of the machine
    and that have no third pass yet: measured over `SUSPECT_SLOWDOWN` times slower, relative to the
    uncalibrated sum of their kernels, than the median network of their kind (all networks where a
    kind has fewer than 3). Both passes of a network can fall in one spell: other tenants slowed this
    2-core VM by 20-30% for minutes while a LiteRT table grew, and 5 of its 20 transformer networks
    stored times 16-33% above what they measured minutes later; the calibration learned that."""
    from hwlat.nas.pool import graph_of
    from hwlat.predictors.lut import LUTPredictor
    from hwlat.predictors.lut.calibration import Calibration

    rows = [r for r in _current_networks(table) if r["status"] == "ok" and r["network"] in names]
    passes: dict[str, int] = {}
    for r in rows:
        passes[r["network"]] = max(passes.get(r["network"], 0), int(r["pass"]))
    truth = {role: dict(zip(*_measured(table, role))) for role in ROLES}
    lut = LUTPredictor(table, calibration=Calibration()).fit()
    ratio: dict[tuple[str, str], float] = {}
    for role in ROLES:
        for name, ms in truth[role].items():
            if name in names:
                pred = lut.predict_graph(graph_of(name), name=name)
                if not pred.partial and pred.total_ms > 0:
                    ratio[(role, name)] = ms / pred.total_ms
    if len(ratio) < 3:
        return []
    everyone = float(np.median(list(ratio.values())))
    suspects = []
    for (role, name), r in ratio.items():
        kind = [v for (_, n), v in ratio.items() if n.split(":")[0] == name.split(":")[0]]
        typical = float(np.median(kind)) if len(kind) >= 3 else everyone
        if r > SUSPECT_SLOWDOWN * typical and passes.get(name, 0) < 3:
            suspects.append((role, name))
    return suspects


class _FirstPassDone(Exception):
    """The networks' first pass, before the rows, has measured what it is for or spent its share."""


def _regressors_stage(table: DeviceTable, clock: _Clock) -> str | None:
    from hwlat.predictors.lut import LUTPredictor

    if not table.rows("ok"):
        return "no op rows to fit them on"
    lut = LUTPredictor(table)
    if lut.stored_regressors() is None:
        stem = lut.save_regressors()
        _say(clock, "regressors", f"{len(lut.regressors.families_)} kernel families fitted -> {stem.name}.json/.npz")
    else:  # every stage says what it did: here, nothing (a --from copy or a resume keeps the fitted ones)
        _say(clock, "regressors", "stored regressors kept (fitted to these rows)")
    _stage(table, "regressors", clock)
    return None


def _measured(table: DeviceTable, role: str) -> tuple[list[str], list[float]]:
    """The networks of a role and their truth: the quieter of their passes (the lower median), of the
    times since the last recalibration if there was one."""
    best: dict[str, float] = {}
    for r in _current_networks(table):
        if r["role"] == role and r["status"] == "ok":
            best[r["network"]] = min(best.get(r["network"], math.inf), float(r["median_ms"]))
    return list(best), list(best.values())


def _calibration_stage(table: DeviceTable, clock: _Clock) -> str | None:
    from hwlat.nas.pool import graph_of
    from hwlat.predictors.lut import LUTPredictor

    names, ys = _measured(table, "calibration")
    if not names:
        return "no calibration network was measured"
    lut = LUTPredictor(table, calibration=None).fit()
    graphs = [graph_of(n) for n in names]
    if not any(lut.predict_graph(g).kernels for g in graphs):
        return f"the table's rows price none of the {len(names)} calibration networks yet; measure rows first"
    cal = lut.calibrate(graphs, ys)
    lut.save_calibration()
    table.update_meta(lut_calibration_networks=names)
    _say(clock, "calibration", cal.describe())
    _stage(table, "calibration", clock, networks=len(names))
    return None


def score_table(table: DeviceTable, names: Sequence[str], measured_ms: Sequence[float]) -> dict[str, Any]:
    """The table's predictions of `names` against their measured latencies: ±10% count, MAPE, ratios."""
    from hwlat.nas.pool import graph_of
    from hwlat.predictors.lut import LUTPredictor

    lut = LUTPredictor(table)
    ratios = {}
    for name, y in zip(names, measured_ms):
        pred = lut.predict_graph(graph_of(name), name=name)
        ratios[name] = (pred.total_ms / y) if not pred.partial else float("nan")
    r = np.asarray(list(ratios.values()), dtype=float)
    within = int(np.sum(np.abs(r - 1) <= 0.10))
    finite = r[np.isfinite(r)]
    return {"networks": len(r), "within_10": within, "mape": float(np.mean(np.abs(finite - 1))) if finite.size else float("nan"),
            "ratio_range": [float(finite.min()), float(finite.max())] if finite.size else None,
            "partial": int(np.sum(~np.isfinite(r))), "ratios": {k: round(float(v), 4) for k, v in ratios.items()},
            "statistic": "median", "scored_at": now()}


def _score_stage(table: DeviceTable, clock: _Clock, result: DeviceProfileResult) -> str | None:
    names, ys = _measured(table, "score")
    if not names:
        return "no score network was measured"
    score = {**score_table(table, names, ys), **passes_apart(table)}
    table.update_meta(self_score=score)
    result.score = score
    _say(clock, "score", score_line(score))
    _stage(table, "score", clock)
    if _recalibrating(table):
        run = dict(table.meta.get("profile_device") or {})
        table.update_meta(profile_device={**run, "recalibrated": {**run["recalibrated"], "finished": now()}})
    if _growing(table):
        run = dict(table.meta.get("profile_device") or {})
        run.pop("growing", None)
        table.update_meta(profile_device=run)
    return None


def _user_path(table: DeviceTable) -> str:
    """The table's path as a user would type it; a shipped table's name is better not written over."""
    from hwlat.device_tables.registry import TABLES_DIR

    if table.path is None or table.path.parent == TABLES_DIR:
        return f"tables/{table.name}"
    return str(table.path)


def profile_command(table: DeviceTable) -> str:
    """The `hwlat profile device` command that makes (or completes) `table`: its runtime, precision,
    threads, settings and where it runs (a GPU, a board), its targets, and its path."""
    from hwlat.nas.pool import target_kinds
    from hwlat.profilers.runtimes import runtimes

    d = table.device
    settings = dict(d.settings)
    flags = [f"--runtime {d.runtime}"]
    if d.precision != "fp32":
        flags.append(f"--precision {d.precision}")
    if settings.get("threads", 1) != 1:
        flags.append(f"--threads {settings['threads']}")
    cls = runtimes().get(d.runtime)
    flags += cls.device_flags(d) if cls is not None else []
    stored = dict(table.meta.get("protocol") or {})  # a resume needs the protocol and clock it was measured with
    clock = stored.pop("clock", None)
    preset = Protocol.preset_of(stored)
    if preset not in (None, "default"):
        flags.append(f"--protocol {preset}")
    if clock and clock != ("cpu" if d.hardware == "cpu" and settings.get("threads", 1) == 1 else "wall"):
        flags.append(f"--clock {clock}")
    targets = (table.meta.get("profile_device") or {}).get("targets")  # other targets: the defaults would grow it
    if targets and set(targets) != set(cls.default_targets_at(d.precision) if cls is not None else target_kinds()):
        flags.append(f"--targets {','.join(targets)}")
    return f"hwlat profile device {' '.join(flags)} --out {_user_path(table)}"


def machine_differences(table: DeviceTable) -> list[str]:
    """How this machine differs from the one a CPU table was measured on (CPU model, SIMD flags, the
    runtime's package versions), each as ``what: table's -> this host's``; [] for a table of another
    kind of hardware or of a runtime unknown here. A runtime whose package is not installed here differs
    by the CPU alone: the same machine without it is not another machine (what to install is said where
    the runtime is needed)."""
    from hwlat.device_tables.device import host_differences
    from hwlat.profilers.runtimes import runtimes

    if table.device.hardware != "cpu" or table.device.runtime not in runtimes():
        return []
    cls = runtimes()[table.device.runtime]
    return host_differences(table.device.fingerprint, cls.packages if cls.installed() else ())


def table_warnings(table: DeviceTable) -> list[str]:
    """One line each: the stages a table lacks (it predicts without them, less accurately), and how
    this machine differs from the CPU the table was measured on."""
    out = []
    missing = missing_stages(table)
    if missing:
        out.append(f"{table.name} lacks {', '.join(missing)}: it predicts, less accurately than a complete table; "
                   f"`{profile_command(table)}` adds them (on the device it describes)")
    diff = machine_differences(table)
    if diff:
        out.append(f"{table.name} was measured on another machine ({'; '.join(diff)}): it predicts that machine's "
                   "latency; `hwlat profile device` makes a table of this one")
    writer = TableLock.writer(table.path) if table.path is not None else None
    if writer:
        out.append(f"{table.name} is being written by {writer}: it predicts from the {len(table.rows('ok'))} rows "
                   "measured so far (its predictions change as that run adds rows)")
    return out + lost_networks(table)


def other_version_regressors(table: DeviceTable) -> list[str]:
    """The line saying a table's stored regressors were written by another hwlat (a table from an older
    version): every prediction refits them from its rows until `hwlat profile device` stores new ones."""
    from hwlat.predictors.kernel_regressors import KernelRegressors, OtherVersionRegressorsError, RegressorError
    from hwlat.predictors.lut.regressors_store import regressors_stem

    stem = regressors_stem(table)
    if not table.meta.get("regressors") or stem is None:
        return []
    try:
        KernelRegressors.load(stem)
    except OtherVersionRegressorsError as exc:
        return [f"{str(exc).split(';')[0]}: each prediction refits them from the rows (slower); "
                f"`{profile_command(table)}` stores new ones (it keeps every row; on the machine the table was measured on)"]
    except RegressorError:
        pass  # damage: `table_problems` names it
    return []


def lost_networks(table: DeviceTable) -> list[str]:
    """The line saying a table's networks file is gone though its run timed networks into it (its stored
    calibration and score stand; the speed check, `table drift` and --recalibrate need the file)."""
    stages = (table.meta.get("profile_device") or {}).get("stages")
    path = networks_path(table)
    if not (isinstance(stages, dict) and "networks" in stages) or path.exists():
        return []
    # a networks file beside it whose table is not there: the table's own, left behind when it was renamed
    orphans = [p for p in path.parent.glob("*.networks.csv") if not p.with_name(p.name[:-13] + ".csv").exists()]
    old = orphans[0].name[:-13] if len(orphans) == 1 else None
    fix = (f"if the table was renamed from {old}, rename its files beside it too ({old}.networks.csv -> {path.name}, "
           f"{old}.regressors.json/.npz -> {table.path.name}.regressors.json/.npz)" if old else
           f"restore the file from a copy, or run `{profile_command(table)}` to time its networks again")
    return [f"{path}: not found, though the table's `hwlat profile device` run timed whole networks into it: "
            "predictions use its stored calibration at its own times, without the check of this machine's speed now "
            f"(nor `hwlat table drift` or --recalibrate); {fix}"]


__all__ = ["DeviceProfileResult", "STAGES", "missing_stages", "profile_device", "read_networks", "score_table",
           "table_stages", "table_warnings"]
