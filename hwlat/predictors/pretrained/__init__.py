"""Pretrained transfer predictors for NB201, FBNet and OFA, meta-trained on the public latency
data, so users predict on a new device without the data: measure the listed reference
architectures and a few more, `adapt`, `predict`. Each has a card (``<space>.md``).

    from hwlat.predictors import pretrained
    from hwlat.nas.features import latency_features
    pred = pretrained.load("fbnet")
    keys = pretrained.reference_keys("fbnet") + my_other_keys      # measure these on the board
    pred.adapt(latency_features("fbnet", keys)[0], measured_ms)
    ms = pred.predict(latency_features("fbnet", candidates)[0])
"""

from __future__ import annotations

from pathlib import Path

from hwlat.device_tables.errors import UnknownDeviceError

HERE = Path(__file__).resolve().parent


def available() -> list[str]:
    """The spaces a pretrained predictor is shipped for (``<space>.json`` beside this module)."""
    return sorted(p.stem for p in HERE.glob("*.json"))


def path(space: str) -> Path:
    """The stem of a space's pretrained files (``<stem>.npz``, ``.json``, ``.md``)."""
    if space not in available():
        raise UnknownDeviceError(f"no pretrained transfer predictor for {space!r}; available: {', '.join(available())} "
                                 "(benchmarks/pretrain_transfer.py builds one)")
    p = HERE / space
    if not p.with_suffix(".json").is_file():
        raise UnknownDeviceError(f"the pretrained {space} predictor is not built; run benchmarks/pretrain_transfer.py")
    return p


def load(space: str):
    """The meta-trained `TransferPredictor` of a space (call `adapt` with your measurements)."""
    from hwlat.predictors.io import load as load_file

    return load_file(path(space))


def info(space: str) -> dict:
    """What the predictor was trained on: devices, reference architectures, features, scores."""
    from hwlat.predictors.io import read_info

    return read_info(path(space))["info"]


def reference_keys(space: str) -> list[str]:
    """Architectures (the space's key strings) to measure first on a new device."""
    return list(info(space)["reference_keys"])


def card(space: str) -> str:
    """The predictor's card (markdown)."""
    return path(space).with_suffix(".md").read_text()
