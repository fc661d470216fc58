"""Differentiable NAS with a latency term: a supernet's expected latency under architecture
probabilities (NB201: every architecture's prediction weighted by its probability, exact; FBNet: sum
over choices of probability x per-choice latency, as FBNet / ProxylessNAS) is a torch expression;
gradient descent on architecture logits trades a stand-in for accuracy
(expected MACs: "bigger computes more") against a latency penalty around the budget, with the
softmax temperature annealed (as FBNet does) so the derived architecture matches the expectation.

    .venv/bin/python examples/differentiable_latency.py                # NB201, predictor adapted here
    .venv/bin/python examples/differentiable_latency.py --space fbnet  # FBNet, lookup table of this CPU
"""

import argparse

try:
    import torch
except ImportError:
    raise SystemExit("error: this example needs PyTorch: pip install torch --index-url https://download.pytorch.org/whl/cpu") from None

from hwlat.nas.arch_predictors import CallablePredictor, load_arch_predictor
from hwlat.nas.constraints import LatencyConstraint
from hwlat.nas.device_loop import adapted_predictor
from hwlat.nas.latency_table import ChoiceLatencyTable


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", choices=["nb201", "fbnet"], default="nb201")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="tiny run (tests)")
    args = ap.parse_args()
    if args.steps < 1:
        ap.error("--steps: at least 1")
    steps = 40 if args.quick else args.steps

    if args.space == "fbnet":  # lookup table of this CPU (shipped)
        pred = load_arch_predictor("lut:cpu_onnxruntime_fp32_threads1", "fbnet")
    else:
        pred = adapted_predictor("nb201", shots=5 if args.quick else 10, protocol="quick" if args.quick else "brief",
                                 progress=False)
    space = pred.space
    latency = ChoiceLatencyTable.every_architecture(space, pred) if args.space == "nb201" else \
        ChoiceLatencyTable.least_squares(space, pred, n=300 if args.quick else 1000)  # as c.choice_table() picks
    print(latency.describe())
    c = LatencyConstraint(pred, budget_ms=latency.base_ms)  # budget: the expected latency of the uniform supernet
    macs = ChoiceLatencyTable.least_squares(space, CallablePredictor(space, space.macs), n=100 if args.quick else 300)

    alphas = [torch.zeros(k, dtype=torch.float64, requires_grad=True) for k in latency.decisions.sizes]
    opt = torch.optim.Adam(alphas, lr=0.1)
    for step in range(steps + 1):
        tau = 0.05 ** (step / steps)  # temperature annealed 1 -> 0.05: probabilities end near one-hot
        probs = [(a / tau).softmax(-1) for a in alphas]
        lat = c.expected_latency(probs, latency)                   # differentiable, ms
        task = -torch.log(macs.expected_ms(probs))                 # stand-in for the task loss
        loss = task + c.penalty(lat, scale=20.0)                   # over budget costs
        if step % max(steps // 4, 1) == 0:
            print(f"step {step:4d}  expected latency {lat.item():.3f} ms (budget {c.budget_ms:.3f})  "
                  f"loss {loss.item():.3f}")
        opt.zero_grad()
        loss.backward()
        opt.step()

    arch = latency.decisions.build([int(a.argmax()) for a in alphas])
    one_hot = latency.onehot([arch])
    print(f"derived arch {space.key(arch)}")
    print(f"  expected latency at one-hot {c.expected_latency(one_hot, latency).item():.4f} ms = table prediction "
          f"{latency.predict([arch])[0]:.4f} ms; predictor {c.latency(arch):.4f} ms")


if __name__ == "__main__":
    main()
