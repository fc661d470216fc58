"""In-network ("marginal") kernel latency on ONNX Runtime: an op timed as one of k copies in one model.

A single-op model's latency includes the per-run cost of ``session.run`` and of the op's first touch
of its input, which a kernel inside a network does not pay: a 3x3 average pool on 1x16x32x32 takes
~14 us alone but adds ~4 us per copy to a model. Timing a model of 1 and of k independent copies
(each with its own weights; as a chain when the op keeps its input's shape, else side by side with
inputs of their own, so common-subexpression elimination cannot merge them) and dividing the difference by k-1 gives the kernel's cost as a network sees it. Ops that change the
shape are timed alone, less the per-call overhead (see `measure_in_context`).
"""

from __future__ import annotations

import logging

from hwlat.device_tables.measurement import Measurement
from hwlat.device_tables.ops import OpSpec
from hwlat.profilers.protocol import Protocol

log = logging.getLogger(__name__)

DEFAULT_COPIES = 4
# A marginal cost below this share of the single-copy time is noise (the difference of two timings).
FLOOR_SHARE = 0.05


def replicated_model(spec: OpSpec, copies: int):
    """The single-op ONNX model of `spec` with its graph repeated `copies` times side by side
    (inputs, initializers, nodes and outputs renamed per copy)."""
    import onnx

    from hwlat.profilers.onnx_ops import build_onnx_model

    base = build_onnx_model(spec)
    g = base.graph
    if copies <= 1:
        return base
    names = {v.name for v in g.input} | {i.name for i in g.initializer} | {o for n in g.node for o in n.output}

    def ren(name: str, c: int) -> str:
        return f"{name}__c{c}" if name and name in names else name

    chain = is_chainable(spec) and len(g.output) == 1
    first, last = g.input[0].name, g.output[0].name
    nodes, inputs, outputs, inits, vinfo = [], [], [], [], []
    for c in range(copies):
        for n in g.node:
            m = onnx.NodeProto()
            m.CopyFrom(n)
            m.name = f"{n.name or n.op_type}__c{c}"
            m.input[:] = [ren(last, c - 1) if chain and c > 0 and x == first else ren(x, c) for x in n.input]
            m.output[:] = [ren(x, c) for x in n.output]
            nodes.append(m)
        for coll, src in ((inputs, g.input), (outputs, g.output), (vinfo, g.value_info)):
            for v in src:
                if chain and ((coll is inputs and c > 0 and v.name == first) or (coll is outputs and c < copies - 1)):
                    continue
                w = onnx.ValueInfoProto()
                w.CopyFrom(v)
                w.name = ren(v.name, c)
                coll.append(w)
        for t in g.initializer:
            u = onnx.TensorProto()
            u.CopyFrom(t)
            u.name = ren(t.name, c)
            inits.append(u)
    graph = onnx.helper.make_graph(nodes, f"{g.name}_x{copies}", inputs, outputs, inits, value_info=vinfo)
    model = onnx.helper.make_model(graph, opset_imports=list(base.opset_import))
    model.ir_version = base.ir_version
    return model


def is_chainable(spec: OpSpec) -> bool:
    """Copies run as a chain (each reads the previous one's output) when the op keeps its first
    input's shape, as a network's ops mostly do; ONNX Runtime then keeps the chain in its blocked
    (NCHWc) layout and reorders only at the ends, as in a network. Otherwise copies run side by side."""
    try:
        return tuple(spec.output_shape) == tuple(spec.input_shape)
    except Exception:  # noqa: BLE001 - an op whose shape rule fails runs side by side
        return False


def marginal_measurement(single: Measurement, many: Measurement, copies: int) -> Measurement:
    """Per-copy cost from the timings of 1 and `copies` copies (each statistic differenced)."""
    k = copies - 1

    def diff(a: float, b: float) -> float:
        return max((b - a) / k, FLOOR_SHARE * a)

    median = diff(single.median_ms, many.median_ms)
    # Differenced quantiles need not stay ordered: keep p10 <= median <= p90.
    return Measurement(median_ms=median, mean_ms=diff(single.mean_ms, many.mean_ms),
                       std_ms=(single.std_ms ** 2 + many.std_ms ** 2) ** 0.5 / k,
                       iqr_ms=(single.iqr_ms + many.iqr_ms) / k,
                       p10_ms=min(diff(single.p10_ms, many.p10_ms), median),
                       p90_ms=max(diff(single.p90_ms, many.p90_ms), median),
                       n=min(single.n, many.n), noisy=single.noisy or many.noisy)


def less_overhead(m: Measurement, overhead_ms: float) -> Measurement:
    """A single-op measurement less the runtime's per-call overhead (never below a tenth of it)."""
    def net(v: float) -> float:
        return max(v - overhead_ms, 0.1 * v)

    return Measurement(median_ms=net(m.median_ms), mean_ms=net(m.mean_ms), std_ms=m.std_ms, iqr_ms=m.iqr_ms,
                       p10_ms=net(m.p10_ms), p90_ms=net(m.p90_ms), n=m.n, noisy=m.noisy)


def measure_in_context(runtime, spec: OpSpec, protocol: Protocol = Protocol(), copies: int = DEFAULT_COPIES,
                       call_overhead_ms: float = 0.0) -> tuple[Measurement, dict]:
    """The in-network latency of `spec` on an ONNX Runtime `runtime` (threads and opt level as set),
    with the row's extra (like `Runtime.measure`). A shape-keeping op: the marginal cost of one more
    copy in a chain. Any other op: its single-op model less `call_overhead_ms` (side-by-side copies
    would each read a cold input and reorder it to the blocked layout, which a network does not)."""
    from hwlat.profilers.ort.runtime import time_onnx_model

    runtime.check_protocol(protocol)
    if not is_chainable(spec):
        m, extra = runtime.measure(spec, protocol)
        return less_overhead(m, call_overhead_ms), {**extra, "context": "single", "call_overhead_ms": call_overhead_ms}
    opt = getattr(runtime, "opt_level", "all")
    one = time_onnx_model(replicated_model(spec, 1).SerializeToString(), threads=runtime.threads, protocol=protocol, opt_level=opt)
    many = time_onnx_model(replicated_model(spec, copies).SerializeToString(), threads=runtime.threads, protocol=protocol,
                           opt_level=opt)
    return marginal_measurement(one, many, copies), {"context": "chain", "copies": copies,
                                                     "single_ms": round(one.median_ms, 6), "clock": protocol.clock}
