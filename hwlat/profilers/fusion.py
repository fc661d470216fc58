"""Detect a runtime's kernel fusion by measurement, and store the rules in its device table.

For each candidate pattern (``conv2d+bn``, ``conv2d+relu``, ``dwconv2d+relu6``, ``add+relu``, ...)
the fused kernel and its parts are timed apart on the runtime. The pattern is fused when the
fused kernel saves most of what its tails cost alone (after removing the per-call overhead every
separate part pays): ``saved / tails >= 0.5``. Where the runtime shows its own graph (ONNX Runtime's
optimised model; the LiteRT builder's operator list) the number of kernels it runs is recorded as
structural evidence and settles measurements too close to call.

The rules describe the single-op models a table times, so table rows and grouping agree. For ONNX
Runtime the kernel count of each pattern *inside a network* (between convs, where its NCHWc layout
lets a conv absorb a residual add and more activations) is recorded beside them
(``network_kernels``): a pattern that runs as one kernel there joins the conv's kernel when the
predictor groups a network (`FusionRules.absorbed`), priced by the conv's row.
"""

from __future__ import annotations

import difflib
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from hwlat.device_tables.errors import HwlatError, OpSpecError, UnsupportedOpError
from hwlat.device_tables.kernels import FusionRules, join_kernel, split_kernel
from hwlat.device_tables.ops import ACTIVATIONS, BASE_OPS, OpSpec
from hwlat.profilers.base import Runtime
from hwlat.profilers.onnx_ops import erf_gelu, model_of
from hwlat.profilers.protocol import Protocol

log = logging.getLogger(__name__)

# Decision thresholds on the share of the tails' own time that fusing saves.
FUSED_RATIO = 0.5
AMBIGUOUS = (0.25, 0.8)


def _probe_head(base: str, tokens: bool = False) -> OpSpec:
    """A cheap head on a large tensor, so its tails cost a visible share of it (savings measurable);
    `tokens`: an elementwise head on a transformer's tokens (197 x 192, ViT-Ti), in the token view."""
    if tokens:
        return OpSpec.make(base, (197, 192, 1, 1))
    if base == "conv2d":
        return OpSpec.make("conv2d", (1, 4, 64, 64), cout=32, kernel=3)
    if base == "dwconv2d":
        return OpSpec.make("dwconv2d", (1, 32, 64, 64), kernel=3)
    if base == "pwconv2d":
        return OpSpec.make("pwconv2d", (1, 8, 64, 64), cout=32)
    if base == "linear":  # tokens of a ViT-Ti MLP
        return OpSpec.make("linear", (197, 192), cout=768)
    return OpSpec.make(base, (1, 32, 64, 64))


# A transformer's residual projection and its skip layer norm (ONNX Runtime's SkipLayerNormalization).
TRANSFORMER_PATTERNS = ("linear+add", "add+layernorm")


def candidate_patterns(activations: Iterable[str] = ACTIVATIONS) -> list[str]:
    """The patterns worth testing: conv heads with bn/activation/residual tails, linear+act, bn+act, add+act,
    and a transformer's residual projection (linear+add) and skip layer norm (add+layernorm)."""
    acts = [a for a in activations if a in BASE_OPS]
    out: list[str] = []
    for head in ("conv2d", "dwconv2d", "pwconv2d"):
        out += [f"{head}+bn", f"{head}+add", f"{head}+bn+add", f"{head}+add+relu", f"{head}+bn+add+relu"]
        out += [f"{head}+{a}" for a in acts] + [f"{head}+bn+{a}" for a in acts]
    out += [f"linear+{a}" for a in acts] + [f"bn+{a}" for a in acts] + [f"add+{a}" for a in acts]
    return out + list(TRANSFORMER_PATTERNS)


def check_patterns(patterns: Iterable[str]) -> list[str]:
    """`patterns` stripped of blanks, each checked before anything is measured: known op names
    joined by '+', a head and at least one tail it can fuse, no tail twice, buildable as a probe
    (`probe_spec`). An `OpSpecError` names the first bad one, with the known patterns."""
    out: list[str] = []
    for raw in patterns:
        pattern = str(raw).strip()
        if not pattern:
            continue
        parts = [p.strip() for p in pattern.split("+")]
        why = None
        if len(parts) < 2:
            why = "one op; a pattern is two or more ops joined by '+': a head and the tails it fuses"
        elif unknown := [p for p in parts if p not in BASE_OPS]:
            why = f"unknown op {unknown[0]!r}"
        elif len(set(parts[1:])) < len(parts) - 1:
            why = "a tail appears twice"
        else:
            try:
                probe_spec("+".join(parts))
            except HwlatError as exc:
                why = str(exc)
        if why is not None:
            known = candidate_patterns()
            close = difflib.get_close_matches(pattern, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise OpSpecError(f"--patterns: {pattern!r} is not a fusion pattern ({why}); {hint}"
                              f"known patterns: {', '.join(known)}")
        out.append("+".join(parts))
    if not out:
        raise OpSpecError("--patterns: no pattern given; give patterns such as conv2d+relu,conv2d+bn+relu, or leave "
                          "--patterns out to probe all of them")
    return list(dict.fromkeys(out))


def probe_spec(pattern: str, dtype: str = "float32") -> OpSpec:
    parts = pattern.split("+")
    head = _probe_head(parts[0], tokens="layernorm" in parts[1:])
    if dtype != head.dtype:
        head = head.replace(dtype=dtype)
    return join_kernel(head, parts[1:])


@dataclass(frozen=True)
class PatternResult:
    """Evidence for one pattern: fused time, part times, call overhead, saving ratio, kernels run."""

    pattern: str
    key: str
    fused_ms: float | None
    parts_ms: tuple[float | None, ...]  # None: a part the runtime did not run alone
    overhead_ms: float
    ratio: float | None
    kernels: int | None
    fused: bool
    note: str = ""
    network_kernels: int | None = None  # kernels of the pattern between convs, as in a network

    def to_meta(self) -> dict[str, Any]:
        return {"key": self.key, "fused_ms": self.fused_ms, "parts_ms": list(self.parts_ms), "call_overhead_ms": self.overhead_ms,
                "saved_ratio": self.ratio, "runtime_kernels": self.kernels, "network_kernels": self.network_kernels,
                "fused": self.fused, "note": self.note}


def saved_ratio(fused_ms: float, parts_ms: list[float], overhead_ms: float) -> float:
    """Share of the tails' own time (each minus the per-call overhead) that the fused kernel saves."""
    head, tails = parts_ms[0], parts_ms[1:]
    tail_cost = sum(max(t - overhead_ms, 0.0) for t in tails)
    if tail_cost <= 0:
        return 0.0
    saved = head + tail_cost - fused_ms
    return saved / tail_cost


def decide(ratio: float | None, kernels: int | None) -> tuple[bool, str]:
    """Fused when the saving is large (>= `FUSED_RATIO` of the tails' time). Where the runtime shows
    how many kernels it runs, that count decides unless timing clearly shows more fusion than the
    graph (a delegate fusing further); single-digit-microsecond savings drown in a shared CPU's noise."""
    if ratio is None:
        return (kernels == 1, "no timing; from the runtime's graph") if kernels is not None else (False, "not measurable")
    timed = ratio >= FUSED_RATIO
    if kernels is None:
        return timed, ""
    if kernels > 1 and ratio >= AMBIGUOUS[1]:
        return True, f"the graph has {kernels} kernels but the tails cost nothing (saving ratio {ratio:.2f}): fused further"
    if timed != (kernels == 1):
        return kernels == 1, f"saving ratio {ratio:.2f} disagrees with the {kernels} kernel(s) the runtime runs; the graph decides"
    return timed, ""


def context_probe(spec: OpSpec):
    """(ONNX model, number of context kernels) placing `spec`'s parts between convs (or Gemms):
    ``x -> pre -> pattern -> post``, the residual of an ``add`` coming from a second conv."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from hwlat.profilers.weights import BN_EPS, make_weights

    rng = np.random.default_rng(0)
    inits: list = []
    nodes: list = []
    count = [0]

    def const(arr) -> str:
        count[0] += 1
        name = f"c{count[0]}"
        inits.append(numpy_helper.from_array(np.asarray(arr, np.float32), name))
        return name

    def node(op, ins, **attrs) -> str:
        count[0] += 1
        out = f"t{count[0]}"
        nodes.append(helper.make_node(op, ins, [out], name=f"n{count[0]}", **attrs))
        return out

    def pointwise(x: str, cin: int, cout: int) -> str:
        return node("Conv", [x, const(rng.normal(0, 0.3, (cout, cin, 1, 1))), const(np.zeros(cout))], kernel_shape=[1, 1])

    def gemm(x: str, cin: int, cout: int) -> str:
        return node("Gemm", [x, const(rng.normal(0, 0.1, (cout, cin))), const(np.zeros(cout))], transB=1)

    def matmul(x: str, cin: int, cout: int) -> str:
        return node("MatMul", [x, const(rng.normal(0, 0.1, (cin, cout)))])

    base = spec.base
    shape = spec.input_shape
    linear = base == "linear"
    # A skip layer norm between a transformer's projections, on its tokens (1, rows, C).
    tokens = base == "add" and "layernorm" in spec.parts[1:]
    if tokens:
        shape = (1,) + shape[:2]
    cin = spec.input_shape[1]
    project = gemm if linear else matmul if tokens else pointwise
    x = "x"
    pre = project(x, cin, cin)
    context = 1
    w = make_weights(spec)
    a = spec.a
    if base in ("conv2d", "dwconv2d", "pwconv2d"):
        k = 1 if base == "pwconv2d" else int(a["kernel"])
        p = 0 if base == "pwconv2d" else int(a["padding"])
        groups = cin if base == "dwconv2d" else int(a.get("groups", 1))
        y = node("Conv", [pre, const(w["W"])] + ([const(w["b"])] if a["bias"] else []), kernel_shape=[k, k],
                 strides=[int(a["stride"])] * 2, pads=[p] * 4, group=groups)
    elif linear:
        y = node("Gemm", [pre, const(w["W"])] + ([const(w["b"])] if a["bias"] else []), transB=1)
    elif base == "add":
        other = project(x, cin, cin)
        context += 1
        y = node("Add", [pre, other])
    elif base in ("bn", "relu", "relu6", "hardswish", "hardsigmoid", "sigmoid", "silu", "gelu"):
        y = _tail_node(node, const, base, pre, w, BN_EPS)
    else:
        raise UnsupportedOpError(f"no network context for {spec.op}")
    out_c = spec.output_shape[1]
    for tail in spec.parts[1:]:
        if tail == "add":
            if linear:
                res = gemm(x, cin, out_c)
            elif spec.output_shape[2:] == shape[2:]:
                res = pointwise(x, cin, out_c)
            else:  # strided head: the residual comes from a strided 1x1 conv
                res = node("Conv", [x, const(rng.normal(0, 0.3, (out_c, cin, 1, 1))), const(np.zeros(out_c))],
                           kernel_shape=[1, 1], strides=[int(a.get("stride", 1))] * 2)
            context += 1
            y = node("Add", [y, res])
        else:
            y = _tail_node(node, const, tail, y, w, BN_EPS)
    y = project(y, out_c, out_c)
    context += 1
    out_shape = list(shape) if tokens else list(spec.output_shape)
    graph = helper.make_graph(nodes, "context", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info(y, TensorProto.FLOAT, out_shape)], inits)
    return model_of(graph), context


def _tail_node(node, const, part: str, x: str, w: dict, eps: float) -> str:
    import numpy as np

    from hwlat.profilers.weights import LN_EPS

    if part == "bn":
        c = len(w["bn_gamma"]) if "bn_gamma" in w else None
        if c is None:
            raise UnsupportedOpError("bn without statistics")
        return node("BatchNormalization", [x, const(w["bn_gamma"]), const(w["bn_beta"]), const(w["bn_mean"]), const(w["bn_var"])],
                    epsilon=eps)
    if part == "relu":
        return node("Relu", [x])
    if part == "relu6":
        return node("Clip", [x, const(np.array(0.0)), const(np.array(6.0))])
    if part == "hardswish":
        return node("HardSwish", [x])
    if part == "hardsigmoid":
        return node("HardSigmoid", [x], alpha=1.0 / 6.0, beta=0.5)
    if part == "sigmoid":
        return node("Sigmoid", [x])
    if part == "silu":
        return node("Mul", [x, node("Sigmoid", [x])])
    if part == "gelu":
        return erf_gelu(node, lambda v: const(np.array(v)), x)
    if part == "layernorm":
        return node("LayerNormalization", [x, const(w["ln_scale"]), const(w["ln_bias"])], axis=-1, epsilon=LN_EPS)
    raise UnsupportedOpError(f"no network context for tail {part!r}")


def detect_fusion(runtime: Runtime, patterns: Iterable[str] | None = None, protocol: Protocol = Protocol(),
                  progress: bool = True, rounds: int = 3,
                  measure: Callable[[OpSpec], tuple[Any, dict]] | None = None, extras: bool = True,
                  on_result: Callable[[PatternResult], None] | None = None
                  ) -> tuple[FusionRules, list[PatternResult]]:
    """Measure every pattern fused and apart on `runtime` (or with `measure(spec)`, e.g. another
    clock); the rules and the evidence. `extras` also probes repeated ops and the weights cache.
    `on_result` gets each pattern's evidence as soon as it is measured (to store it). Bad
    `patterns` are refused (`check_patterns`) before anything is measured."""
    from tqdm import tqdm

    if patterns is not None:
        patterns = list(patterns)
        patterns = check_patterns(patterns) if patterns else []

    dtype = runtime.dtype()
    cache: dict[tuple[str, int], float | None] = {}

    def time_of(spec: OpSpec, rnd: int = 0) -> float | None:
        if (spec.key, rnd) not in cache:
            if rnd > 0 and cache.get((spec.key, 0), 1.0) is None:
                cache[(spec.key, rnd)] = None
                return None
            try:
                m, _ = measure(spec) if measure is not None else runtime.measure(spec, protocol)
                cache[(spec.key, rnd)] = m.median_ms
            except UnsupportedOpError as exc:
                log.info("fusion probe %s: %s", spec.key, exc)
                cache[(spec.key, rnd)] = None
        return cache[(spec.key, rnd)]

    tiny = OpSpec.make("relu", (1, 1, 1, 1), dtype=dtype)

    def call_overhead(rounds: range) -> float:
        # The fastest of a few timings of a one-element op: one timing alone can fall in a burst of
        # other work (torch on a 2-core VM: 10.3 us stored where the same op read 5.6-5.9 us five
        # times in six, above a 64x8x8 relu's 6.0 us row), and every kernel of every prediction is
        # priced less this overhead.
        times = [t for t in (time_of(tiny, r) for r in rounds) if t is not None]
        return min(times, default=0.0)

    overhead = call_overhead(range(3))
    count = runtime.count_kernels
    in_network = runtime.count_network_kernels
    results: list[PatternResult] = []

    def found(result: PatternResult) -> None:
        results.append(result)
        if on_result is not None:
            on_result(result)

    patterns = list(patterns if patterns is not None else candidate_patterns())
    for pattern in tqdm(patterns, desc=f"fusion {runtime.name}", unit="pattern", disable=None if progress else True, dynamic_ncols=True):
        try:
            spec = probe_spec(pattern, dtype)
        except HwlatError as exc:
            found(PatternResult(pattern, "", None, (), overhead, None, None, False, f"not buildable: {exc}"))
            continue
        fused_ms = time_of(spec)
        parts = [time_of(p) for p in split_kernel(spec)]
        kernels = count(spec)
        if fused_ms is None or any(p is None for p in parts):
            # one kernel whose parts do not run alone (a board's conv with its activation as a clamp and its
            # batch norm folded) can only be priced whole; one the runtime cannot time at the probe's size (over
            # a board's tensor arena) is still one kernel: the graph decides; otherwise it cannot be probed
            fused = kernels == 1
            note = ("the runtime cannot build the fused kernel or a part" if not fused
                    else "one kernel; a part alone does not run on this runtime" if fused_ms is not None
                    else "one kernel in the runtime's graph; not timed at the probe's size here")
            found(PatternResult(pattern, spec.key, fused_ms, tuple(parts), overhead, None, kernels, fused,
                                note))
            continue
        net_kernels = in_network(spec)
        ratio = saved_ratio(fused_ms, parts, overhead)
        fused, note = decide(ratio, kernels)
        for rnd in range(1, rounds):
            # Timing that overrules the runtime's graph (or stands alone near the threshold) is measured
            # again, fused and parts afresh; the verdict must hold every time (noise rarely repeats).
            if not (kernels is not None and fused != (kernels == 1)) and not (kernels is None and abs(ratio - FUSED_RATIO) < 0.25):
                break
            again = saved_ratio(time_of(spec, rnd) or fused_ms, [time_of(p, rnd) or t for p, t in zip(split_kernel(spec), parts)],
                                overhead)
            ratio = min(ratio, again) if fused else max(ratio, again)
            fused, note = decide(ratio, kernels)
        if net_kernels is not None and kernels is not None and net_kernels < kernels:
            note = (note + "; " if note else "") + f"inside a network it runs as {net_kernels} kernel(s)"
        found(PatternResult(pattern, spec.key, fused_ms, tuple(parts), overhead, ratio, kernels, fused, note, net_kernels))
        log.info("%s: fused %.4f ms, parts %s, ratio %.2f, kernels %s -> %s", pattern, fused_ms,
                 ", ".join(f"{p:.4f}" for p in parts), ratio, kernels, "fused" if fused else "apart")
    shared, evidence, cached_mb, cache_evidence = False, {}, None, {}
    if extras:
        shared, evidence = detect_shared_duplicates(runtime, protocol)
        log.info("repeated ops computed once: %s (%s)", shared, evidence)
        cached_mb, cache_evidence = detect_weights_cache(runtime, protocol)
        log.info("weights held in the cache: %s MB (%s)", cached_mb, cache_evidence)
    overhead = call_overhead(range(5))  # the first three (cached) and two more, at the end
    rules = FusionRules(frozenset(r.pattern for r in results if r.fused), {r.pattern: r.to_meta() for r in results},
                        call_overhead_ms=overhead, shares_duplicates=shared, duplicates_evidence=evidence,
                        weights_cache_mb=cached_mb, weights_cache_evidence=cache_evidence)
    return rules, results


def duplicate_probes(shape: tuple[int, ...] = (1, 32, 64, 64)) -> dict[str, Any]:
    """Three ONNX models: ``twice`` computes one avg-pool twice on the same input and adds the two,
    ``once`` adds one pool to itself, ``add`` adds the input to itself. A runtime that computes a
    repeated op once runs ``twice`` as fast as ``once``; one that does not pays a pool more."""
    from onnx import TensorProto, helper

    pool = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [1, 1]}

    def model(nodes):
        graph = helper.make_graph(nodes, "duplicates", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))])
        return model_of(graph).SerializeToString()

    return {
        "twice": model([helper.make_node("AveragePool", ["x"], ["p1"], **pool), helper.make_node("AveragePool", ["x"], ["p2"], **pool),
                        helper.make_node("Add", ["p1", "p2"], ["y"])]),
        "once": model([helper.make_node("AveragePool", ["x"], ["p"], **pool), helper.make_node("Add", ["p", "p"], ["y"])]),
        "add": model([helper.make_node("Add", ["x", "x"], ["y"])]),
    }


def _not_timed_whole(runtime: Runtime) -> str | None:
    """Why a whole-model probe cannot run on `runtime`; None where it can."""
    return None if runtime.times_whole_models() else f"not measured: {runtime.name} does not time whole models"


def detect_shared_duplicates(runtime: Runtime, protocol: Protocol = Protocol()) -> tuple[bool, dict[str, Any]]:
    """Whether `runtime` computes an op repeated on the same input once, and the evidence: the
    repeated pool's share of a pool's own time (``extra_ratio``, about 1 when computed twice, 0 when
    once) and, where the runtime shows its graph (`Runtime.count_compute_nodes`), its compute nodes
    (3 or 2), which decide."""
    if note := _not_timed_whole(runtime):
        return False, {"note": note}
    shape = (1, 32, 64, 64)
    probes = duplicate_probes(shape)
    ms = {name: runtime.time_model(model, protocol).median_ms for name, model in probes.items()}
    pool_ms = ms["once"] - ms["add"]
    ratio = (ms["twice"] - ms["once"]) / pool_ms if pool_ms > 0 else None
    evidence: dict[str, Any] = {**{f"{k}_ms": v for k, v in ms.items()}, "extra_ratio": ratio}
    shared = ratio is not None and ratio < FUSED_RATIO
    nodes = runtime.count_compute_nodes(probes["twice"], OpSpec.make("avgpool", shape, kernel=3, stride=1, padding=1))
    if nodes is not None:
        evidence["runtime_kernels"] = nodes
        shared = nodes < 3
    return shared, evidence


# A chain of layers runs as fast per layer as one layer alone while the cache holds all their
# weights; beyond, each layer reads its weights from memory. A chain is over the cache once it
# runs this much slower per layer than the shortest chains.
CACHE_SLOWDOWN = 1.10
CACHE_PROBE_WIDTH = 512  # a 512x512 linear layer: 1.05 MB of fp32 weights
CACHE_PROBE_LAYERS = (1, 2, 4, 8, 12, 16, 24, 32, 48)


def linear_chain(layers: int, width: int = CACHE_PROBE_WIDTH, seed: int = 0) -> bytes:
    """An ONNX model of `layers` fully connected layers of `width` in a chain, each with its own
    random weights. Not `hwlat.profilers.context.replicated_model`: its copies carry identical weights,
    and ONNX Runtime ran a chain of them no slower per layer up to 50 MB."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, weights, x = [], [], "x"
    for i in range(layers):
        w = numpy_helper.from_array((rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32), f"w{i}")
        b = numpy_helper.from_array(np.zeros(width, np.float32), f"b{i}")
        y = "y" if i == layers - 1 else f"h{i}"
        nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [y], transB=1))
        weights += [w, b]
        x = y
    graph = helper.make_graph(nodes, "weights_cache", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])], initializer=weights)
    return model_of(graph).SerializeToString()


def detect_weights_cache(runtime: Runtime, protocol: Protocol = Protocol(), layers: Iterable[int] = CACHE_PROBE_LAYERS,
                         width: int = CACHE_PROBE_WIDTH, repeats: int = 3) -> tuple[float | None, dict[str, Any]]:
    """The MB of weights a network keeps in the cache across runs, and the evidence: chains of
    1 MB linear layers, each chain's time per layer (the median of `repeats` timings: a shared
    cache's neighbours move the knee) against the shortest chains'. The cached size is the most
    weights a chain held before it ran `CACHE_SLOWDOWN` times slower per layer. On this machine (a
    32 MB L3 shared with other tenants) LiteRT runs 12.6 MB at 1.14-1.26x: 8.4 MB; onnxruntime at
    1.02-1.13x: 12.6 MB in three probes of four; both 2.7-3.7x at 50 MB. None where whole models
    cannot be timed."""
    import statistics

    if note := _not_timed_whole(runtime):
        return None, {"note": note}
    layer_mb = width * (width + 1) * 4 / 1e6
    chains = {n: linear_chain(n, width) for n in sorted(set(layers))}
    per_layer = {n: statistics.median(runtime.time_model(model, protocol).median_ms for _ in range(repeats)) / n
                 for n, model in chains.items()}
    # The shortest chains pay a call's overhead on few layers: the base is the fastest of up to 4.
    start = min((n for n in per_layer if n <= 4), key=per_layer.get)
    ratios = {round(n * layer_mb, 2): v / per_layer[start] for n, v in per_layer.items() if n >= start}
    cached = 0.0
    for mb, ratio in ratios.items():
        if ratio > CACHE_SLOWDOWN:
            break
        cached = mb
    return cached, {"layer_mb": round(layer_mb, 3), "slowdown": {str(k): round(v, 3) for k, v in ratios.items()},
                    "threshold": CACHE_SLOWDOWN}


def store_rules(table, rules: FusionRules, runtime: Runtime, unfinished: dict[str, Any] | None = None) -> None:
    """Write the rules (and the measured single-op call overhead) into a table's metadata under ``fusion``;
    `unfinished`: the run storing them is still measuring (what it was asked and has done, to resume)."""
    entry = {**rules.to_meta(), "runtime": runtime.name, "method": "measured fused vs parts", "threshold": FUSED_RATIO}
    if unfinished is not None:
        entry["unfinished"] = unfinished
    table.update_meta(fusion=entry)


@dataclass
class FusionRun:
    """What `measure_into` did: the table's rules after it, the patterns measured now, the stored
    patterns kept without measuring them again (`kept`), of which `resumed` an interrupted run measured;
    `evidence`: the repeated-op and weights-cache probes were measured now (else the stored ones stay)."""

    rules: FusionRules
    results: list[PatternResult] = field(default_factory=list)
    kept: int = 0
    resumed: int = 0
    evidence: bool = True


def measure_into(table, runtime: Runtime, patterns: Iterable[str] | None, protocol: Protocol,
                 progress: bool = True) -> FusionRun:
    """Detect fusion of `patterns` (all candidates by default) and merge the rules into `table`'s:
    a pattern measured now replaces its stored verdict, the other stored patterns stay. Each pattern
    is stored as soon as it is measured, so an interrupted run keeps them and its rerun (same
    patterns, same protocol) measures only the rest."""
    requested = check_patterns(patterns) if patterns is not None else candidate_patterns()
    entry = table.meta.get("fusion") or {}
    stored = FusionRules.from_meta(table.meta) if entry else FusionRules.none()
    proto = json.loads(json.dumps(protocol.to_dict(), default=str))
    pending = entry.get("unfinished") if isinstance(entry.get("unfinished"), dict) else {}
    resumed: set[str] = set()
    if pending.get("patterns") == requested and pending.get("protocol") == proto:
        resumed = {p for p in pending.get("done") or [] if p in stored.measured}
    todo = [p for p in requested if p not in resumed]
    now: dict[str, PatternResult] = {}

    def store(result: PatternResult) -> None:
        now[result.pattern] = result
        newer = FusionRules(frozenset(r.pattern for r in now.values() if r.fused), {p: r.to_meta() for p, r in now.items()},
                            call_overhead_ms=result.overhead_ms)
        rules = stored.merged(newer, evidence=not entry)  # a new table's call overhead is this run's
        store_rules(table, rules, runtime,
                    unfinished={"patterns": requested, "protocol": proto, "done": sorted(resumed | set(now))})

    # The repeated-op and weights-cache probes (and the call overhead) are measured again with all the
    # patterns, or where the table lacks them; a few patterns measured again keep the stored ones.
    extras = patterns is None or not entry or not stored.duplicates_evidence
    measured, results = detect_fusion(runtime, todo, protocol, progress=progress, on_result=store, extras=extras)
    rules = stored.merged(measured, evidence=extras)
    store_rules(table, rules, runtime)
    kept = len(set(stored.measured) - set(measured.measured))
    return FusionRun(rules, results, kept, len(resumed), extras)


def format_results(results: list[PatternResult], rules: FusionRules | None = None) -> str:
    lines = [f"{'pattern':<26} {'fused ms':>9} {'parts ms':>22} {'saved':>6} {'kern':>4}  verdict"]
    for r in results:
        parts = "+".join("n/a" if p is None else f"{p:.3f}" for p in r.parts_ms)  # a part that did not run
        lines.append(f"{r.pattern:<26} {r.fused_ms if r.fused_ms is not None else float('nan'):>9.4f} {parts:>22} "
                     f"{r.ratio if r.ratio is not None else float('nan'):>6.2f} {r.kernels if r.kernels is not None else '-':>4}  "
                     f"{'FUSED' if r.fused else 'apart'}{'  (' + r.note + ')' if r.note else ''}")
    dup = rules.duplicates_evidence if rules is not None else {}
    if "note" in dup:
        lines.append(f"an op repeated on one input: {dup['note']}")
    elif dup:
        ratio = dup.get("extra_ratio")
        lines.append(f"an op repeated on one input: computed {'once' if rules.shares_duplicates else 'twice'} (the repeat costs "
                     + (f"{ratio:.2f} of its own time" if ratio is not None else "an unknown share of its time")
                     + (f"; {dup['runtime_kernels']} kernels in the runtime's graph" if "runtime_kernels" in dup else "") + ")")
    cache = rules.weights_cache_evidence if rules is not None else {}
    if "note" in cache:
        lines.append(f"weights held in the cache across runs: {cache['note']}")
    elif rules is not None and rules.weights_cache_mb is not None:
        slow = ", ".join(f"{mb} MB {r:.2f}x" for mb, r in cache.get("slowdown", {}).items())
        lines.append(f"weights held in the cache across runs: {rules.weights_cache_mb:g} MB (a chain of linear layers, "
                     f"time per layer against the shortest chains: {slow})")
    return "\n".join(lines)
