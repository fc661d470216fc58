"""A segmentation network's data movement as torch.onnx exports it (Resize of interpolate, Pad of
F.pad, Concat of a skip connection with another channel count) is priced as a copy of its output;
networks without them predict what they did before."""

from __future__ import annotations

import warnings

import pytest

import hwlat
from hwlat.device_tables.graph import FREE, OP, Graph
from hwlat.device_tables.registry import TABLES_DIR
from hwlat.nas.models import build_model

torch = pytest.importorskip("torch")
F = torch.nn.functional


class _UNet(torch.nn.Module):
    """Two levels of a UNet: reflect padding, max pools, upsampling by `mode`, skip connections with
    fewer channels than the upsampled map, and a zero-padded head."""

    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode
        conv = torch.nn.Conv2d
        self.e1, self.e2, self.d1, self.head = conv(3, 8, 3, padding=1), conv(8, 16, 3, padding=1), conv(24, 8, 3, padding=1), conv(8, 2, 3)

    def forward(self, x):
        e1 = F.relu(self.e1(F.pad(x, (2, 2, 2, 2), mode="reflect")))
        e2 = F.relu(self.e2(F.max_pool2d(e1, 2)))
        up = F.interpolate(e2, scale_factor=2, mode=self.mode, **({} if self.mode == "nearest" else {"align_corners": False}))
        return self.head(F.pad(F.relu(self.d1(torch.cat([up, e1], 1))), (1, 1, 1, 1)))


def _export(mode, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_UNet(mode).eval(), (torch.randn(1, 3, 32, 32),), str(path), dynamo=False, opset_version=17)
    return path


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_resize_pad_and_a_concat_of_unequal_maps_are_priced_as_copies_of_their_outputs(tmp_path, mode):
    path = _export(mode, tmp_path / "unet.onnx")
    g = Graph.from_onnx(path)
    assert not g.uncovered, [u.describe() for u in g.uncovered]
    moving = [op for op in g.ops if op.onnx_op in ("Resize", "Pad", "Concat") and op.kind != FREE]
    moved = {op.onnx_op: op for op in moving}
    assert len(moving) == 4 and set(moved) == {"Resize", "Pad", "Concat"}  # two Pads
    for op in moved.values():
        assert op.kind == OP and op.spec.op == "copy" and "priced as a copy of its output" in op.note
    assert moved["Resize"].spec.input_shape == (1, 16, 36, 36) and moved["Concat"].spec.input_shape == (1, 24, 36, 36)
    assert len(moved["Concat"].inputs) == 2  # both parts are read: the layouts of both producers count
    pred = hwlat.predict(path, table=TABLES_DIR / "cpu_onnxruntime_fp32_threads1", as_profiled=True)
    assert not pred.partial
    copies = {n for k in pred.kernels if k.op == "copy" for n in k.nodes}  # the breakdown names each as a copy
    assert {op.name for op in moving} <= copies


# Totals of the code before Resize, Pad and unequal Concat were priced (each network has none of them).
BEFORE = {("cpu_onnxruntime_fp32_threads1", "resnet18"): "0x1.55b2ff4a43e68p+5",
          ("cpu_onnxruntime_fp32_threads1", "mobilenet_v3_small"): "0x1.1a51cd3d86ea8p+1",
          ("cpu_litert_fp32_threads1", "resnet18"): "0x1.3e5bec04faf7ap+5",
          ("cpu_torch_fp32_threads1", "mobilenet_v3_small"): "0x1.ac87866a34087p+2"}


@pytest.mark.parametrize("table, model", list(BEFORE))
def test_networks_priced_in_full_before_predict_as_before(table, model):
    pred = hwlat.predict(build_model(model), table=TABLES_DIR / table, as_profiled=True)
    # rel 1e-12: the regressors' floating point may differ in the last bit on another BLAS
    assert not pred.partial and pred.total_ms == pytest.approx(float.fromhex(BEFORE[table, model]), rel=1e-12)
