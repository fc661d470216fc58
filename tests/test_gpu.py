"""GPU profiling (docs/tutorials/profile-gpu.md): torch on CUDA and ONNX Runtime's CUDA provider when a GPU is here, and
everywhere the logic that needs none: device naming, precisions, one clear error per bad input
(CUDA absent, out of memory mid-sweep, a mismatched onnxruntime package), nvidia-smi parsing and
GPU kernel times from a profiler trace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hwlat.device_tables.archtable import ArchTable, arch_table_paths  # noqa: E402
from hwlat.device_tables.device import Device, gpu_fingerprint, gpu_hardware_name, parse_nvidia_smi_csv  # noqa: E402
from hwlat.device_tables.errors import HwlatError, OutOfDeviceMemoryError, RuntimeUnavailableError  # noqa: E402
from hwlat.device_tables.ops import OpSpec  # noqa: E402
from hwlat.device_tables.table import DeviceTable  # noqa: E402
from hwlat.profilers.cuda import cudnn_version_str, is_out_of_memory, parse_device  # noqa: E402
from hwlat.profilers.protocol import Protocol  # noqa: E402
from hwlat.profilers.run import profile_ops  # noqa: E402
from hwlat.profilers.torch_eager.runtime import TorchRuntime  # noqa: E402
from hwlat.profilers.torch_eager.ops import build_inputs, build_module  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QUICK = Protocol.preset("quick")
HAS_CUDA = torch.cuda.is_available()
NO_CUDA_REASON = (f"needs an NVIDIA GPU: torch {torch.__version__} sees none "
                  f"({'a CPU-only build' if not torch.version.cuda else 'no driver or device visible'})")
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason=NO_CUDA_REASON)


def _ort_cuda() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers() and HAS_CUDA


needs_ort_cuda = pytest.mark.skipif(not _ort_cuda(), reason="needs onnxruntime-gpu with CUDAExecutionProvider and a GPU "
                                                            "(pip uninstall onnxruntime && pip install onnxruntime-gpu)")


def hwlat(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "hwlat", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("hwlat: error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


# ---- naming ---------------------------------------------------------------------------------------
def test_gpu_hardware_names_and_device_names():
    assert gpu_hardware_name("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert gpu_hardware_name("NVIDIA GeForce RTX 4090") == "nvidia-geforce-rtx-4090"
    assert gpu_hardware_name("Tesla V100-SXM2-16GB") == "tesla-v100-sxm2-16gb"
    assert gpu_hardware_name("  ") == "gpu"
    dev = Device.make(gpu_hardware_name("NVIDIA H200"), "torch", "fp16", threads=1)
    assert dev.name == "nvidia-h200/torch/fp16/threads=1"
    assert dev.file_stem == "nvidia_h200_torch_fp16_threads1"
    batch = Device.make("nvidia-h200", "torch", "fp32", threads=1, batch=256)
    assert batch.name == "nvidia-h200/torch/fp32/batch=256/threads=1"


def test_device_strings():
    assert parse_device("cpu") == ("cpu", None)
    assert parse_device("cuda") == ("cuda", 0)
    assert parse_device(" CUDA:3 ") == ("cuda", 3)
    for bad in ("gpu", "cuda:", "cuda:x", "tpu", "cuda:-1"):
        with pytest.raises(RuntimeUnavailableError, match="cpu, cuda or cuda:N"):
            parse_device(bad)


def test_arch_device_names_carry_precision_and_batch():
    from hwlat.nas.spaces.measure import runtime_device

    from hwlat.profilers.torch_eager.runtime import TorchRuntime

    assert runtime_device(TorchRuntime()).name == "cpu/torch/fp32/threads=1"
    assert runtime_device(TorchRuntime(precision="bf16"), batch=32).name == "cpu/torch/bf16/batch=32/threads=1"
    assert runtime_device(TorchRuntime(), hardware="lab-box", batch=256).name == "lab-box/torch/fp32/batch=256/threads=1"


# ---- precisions (real, on the CPU here) -----------------------------------------------------------
@pytest.mark.parametrize("precision,dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_precision_casts_module_and_inputs_and_keys_stay_float32(tmp_path, precision, dtype):
    rt = TorchRuntime(precision=precision)
    spec = OpSpec.make("conv2d+bn+relu", (1, 8, 8, 8), cout=8, kernel=3)
    module, inputs = rt._to_device(build_module(spec), build_inputs(spec))
    assert {p.dtype for p in module.parameters()} == {dtype} and all(x.dtype == dtype for x in inputs)
    with torch.inference_mode():
        y = module(*inputs)
        ref = build_module(spec)(*build_inputs(spec))
    assert y.dtype == dtype
    np.testing.assert_allclose(y.float().numpy(), ref.numpy(), rtol=0.05, atol=0.05)  # same function, lower precision
    specs = [spec, OpSpec.make("relu", (2, 8, 8, 8)), OpSpec.make("relu", (1, 4, 4, 4), dtype="int8")]
    result = profile_ops(rt, specs, tmp_path / "t", QUICK, progress=False)
    table = DeviceTable.load(tmp_path / "t")
    assert result.measured == 2 and table.device.name == f"cpu/torch/{precision}/threads=1"
    assert {r.spec.dtype for r in table} == {"float32"}  # the precision names the device, not the op
    assert table.device.fingerprint["runtime"]["dtype"] == str(dtype).removeprefix("torch.")


def test_int8_is_not_a_torch_precision():
    with pytest.raises(HwlatError, match="fp32, fp16, bf16"):
        TorchRuntime(precision="int8")


# ---- out of memory: the error row, then the sweep goes on ------------------------------------------
class RunsOutOfMemoryAtLargeBatch(TorchRuntime):
    """A real runtime whose `prepare` hits the allocator's limit at batch >= 256 (no GPU here to fill)."""

    def prepare(self, spec):
        if spec.input_shape[0] >= 256:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB. GPU 0 has a total "
                                              "capacity of 79.19 GiB of which 1.06 GiB is free.")
        return super().prepare(spec)


def test_out_of_memory_becomes_an_error_row_and_the_sweep_continues(tmp_path):
    specs = [OpSpec.make("conv2d+bn+relu", (n, 16, 16, 16), cout=16, kernel=3) for n in (1, 256, 2)]
    specs.insert(2, OpSpec.make("relu", (512, 4, 4, 4)))
    rt = RunsOutOfMemoryAtLargeBatch()
    with pytest.raises(OutOfDeviceMemoryError, match="out of memory.*a smaller batch may fit") as info:
        rt.measure(specs[1], QUICK)
    assert info.value.__cause__ is None  # the torch error (and the tensors its frames hold) is gone
    result = profile_ops(rt, specs, tmp_path / "t", QUICK, progress=False)
    assert (result.measured, result.failed) == (2, 2)
    rows = {r.spec.key: r for r in DeviceTable.load(tmp_path / "t")}
    assert len(rows) == 4
    assert rows[specs[0].key].ok and rows[specs[3].key].ok  # measured before and after the failures
    for spec in specs[1:3]:
        assert not rows[spec.key].ok
        assert "out of memory" in rows[spec.key].error and "Tried to allocate 3.00 GiB" in rows[spec.key].error
    # a resumed run keeps the error rows and measures nothing again
    again = profile_ops(rt, specs, tmp_path / "t", QUICK, progress=False)
    assert again.skipped == 4 and again.measured == again.failed == 0


def test_out_of_memory_in_a_whole_model_is_recorded_per_architecture(tmp_path):
    from hwlat.nas.spaces import get_space
    from hwlat.nas.spaces.measure import profile_archs, resolve_archs

    class Greedy(torch.nn.Module):
        """Needs more memory than there is at a large batch (the allocator's own error type)."""

        def forward(self, x):
            if x.shape[0] >= 256:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 40.00 GiB")
            return x.relu()

    rt = TorchRuntime()
    assert rt.time_module(Greedy(), [torch.ones(2, 3)], QUICK).median_ms > 0
    with pytest.raises(OutOfDeviceMemoryError, match="model 7: out of memory on cpu in fp32"):
        rt.time_module(Greedy(), [torch.ones(256, 3)], QUICK, what="model 7")

    space = get_space("nb201")
    items = resolve_archs(space, "900:903")
    big = space.key(items[1].arch)

    def timer(arch):
        n = 256 if space.key(arch) == big else 1
        return rt.time_module(Greedy(), [torch.ones(n, 3)], QUICK, what=space.key(arch)), 0.0

    res = profile_archs(space, items, tmp_path / "a", rt, protocol=QUICK, progress=False, timer=timer,
                        device=Device.make("cpu", "torch", "fp32", threads=1, batch=256))
    assert (res.measured, res.failed) == (2, 1)
    t = ArchTable.read(tmp_path / "a", space=space.arch_keys)
    assert t.devices == ["cpu/torch/fp32/batch=256/threads=1"] and int(t.missing().sum()) == 1
    stats = arch_table_paths(tmp_path / "a")[2].read_text()
    assert "OutOfDeviceMemoryError" in stats and "out of memory" in stats


def test_out_of_memory_detection():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory."), torch)
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory "
                                         "for requested buffer of size 1073741824"))
    assert is_out_of_memory(RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"))
    assert not is_out_of_memory(RuntimeError("Given groups=1, weight of size [8, 4, 3, 3], expected input..."), torch)


# ---- CUDA requested but absent: one line, exit 1, nothing written ----------------------------------
@pytest.mark.skipif(HAS_CUDA, reason="a GPU is present: CUDA is not absent here")
def test_cuda_requested_but_absent_via_the_cli(tmp_path):
    proc = hwlat("profile", "ops", "--runtime", "torch", "--device", "cuda", "--sweep", "quick", "--out", "t",
                 "--no-progress", cwd=tmp_path)
    line = one_error_line(proc)
    assert "--device cuda:0" in line and "--device cpu" in line
    assert ("CPU-only build" in line and "download.pytorch.org/whl/cu" in line) or "sees no GPU" in line
    assert not list(tmp_path.iterdir())  # no table started
    with pytest.raises(RuntimeUnavailableError, match="--device cuda:0"):
        TorchRuntime(device="cuda", precision="fp16")


def test_gpu_flags_belong_to_their_runtime(tmp_path, capsys):
    from hwlat.cli import main

    cases = [
        (["profile", "ops", "--runtime", "onnxruntime", "--device", "cuda"],
         "--device is a setting of --runtime torch, not of onnxruntime (its own flags are --opt-level, --provider)"),
        (["profile", "ops", "--runtime", "torch", "--provider", "cuda"],
         "--provider is a setting of --runtime onnxruntime, not of torch (its own flags are --device, --cudnn-benchmark)"),
        (["profile", "ops", "--runtime", "torch", "--cudnn-benchmark", "off"], "a setting of torch on CUDA (--device cuda)"),
        (["profile", "ops", "--runtime", "torch", "--device", "cuda:0,cuda:1"], "several devices need --cluster"),
        (["profile", "archs", "--space", "nb201", "--archs", "0:2", "--precision", "fp16"], "--runtime torch for fp16"),
    ]
    for argv, fragment in cases:
        assert main([*argv, "--out", str(tmp_path / "t")]) == 1
        err = capsys.readouterr().err
        assert fragment in err and err.count("hwlat: error:") == 1, (argv, err)
    assert not list(tmp_path.iterdir())


# ---- onnxruntime: the CUDA provider's install problems -----------------------------------------------
def test_mismatched_onnxruntime_packages_get_one_message_each():
    from hwlat.profilers.ort.runtime import GPU_INSTALL_HINT, cuda_provider_problem

    cpu_only = ["AzureExecutionProvider", "CPUExecutionProvider"]
    with_cuda = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    both = cuda_provider_problem({"onnxruntime": "1.22.0", "onnxruntime-gpu": "1.22.0"}, cpu_only, "1.22.0")
    assert "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu" in both
    assert "share the onnxruntime module" in both
    cpu = cuda_provider_problem({"onnxruntime": "1.22.0"}, cpu_only, "1.22.0")
    assert "is the CPU build" in cpu and GPU_INSTALL_HINT in cpu and "docs/tutorials/profile-gpu.md" in cpu
    broken = cuda_provider_problem({"onnxruntime-gpu": "1.22.0"}, cpu_only, "1.22.0")
    assert "pip install --force-reinstall onnxruntime-gpu" in broken
    other = cuda_provider_problem({"onnxruntime-openvino": "1.20.0"}, ["OpenVINOExecutionProvider"], "1.20.0")
    assert "pip uninstall -y onnxruntime-openvino && pip install onnxruntime-gpu" in other
    assert cuda_provider_problem({"onnxruntime-gpu": "1.22.0"}, with_cuda, "1.22.0") is None
    assert len({both, cpu, broken, other}) == 4


@pytest.mark.skipif(_ort_cuda(), reason="onnxruntime here has the CUDA provider")
def test_cuda_provider_on_a_cpu_onnxruntime_says_what_to_install(tmp_path):
    pytest.importorskip("onnxruntime")
    from hwlat.profilers.ort.runtime import OnnxRuntime, time_onnx_model

    with pytest.raises(RuntimeUnavailableError, match="--provider cuda: .*pip install onnxruntime-gpu"):
        OnnxRuntime(provider="cuda")
    with pytest.raises(RuntimeUnavailableError, match="pip install onnxruntime-gpu"):
        time_onnx_model(b"not reached", provider="cuda:0")
    with pytest.raises(RuntimeUnavailableError, match="unknown onnxruntime provider 'gpu'"):
        OnnxRuntime(provider="gpu")


# ---- fingerprint pieces --------------------------------------------------------------------------
def test_nvidia_smi_csv_parsing():
    keys = ("index", "name", "uuid", "memory_total_mib", "driver_version", "clocks_sm_mhz", "clocks_max_sm_mhz",
            "power_limit_w", "compute_capability", "clocks_applications_sm_mhz")
    text = ("0, NVIDIA H100 80GB HBM3, GPU-5d2f0b9e-1c1a-4d61-9d2e-0a6c1f2b3c4d, 81559, 580.159.04, 345, 1980, "
            "700.00, 9.0, [N/A]\n"
            "1, NVIDIA A100-SXM4-40GB, GPU-aaaa, 40960, 580.159.04, 210, 1410, 400.00, 8.0, 1410\n\n")
    rows = parse_nvidia_smi_csv(text, keys)
    assert len(rows) == 2
    h100 = rows[0]
    assert h100["name"] == "NVIDIA H100 80GB HBM3" and h100["memory_total_mib"] == 81559
    assert h100["driver_version"] == "580.159.04" and h100["compute_capability"] == "9.0"
    assert h100["clocks_max_sm_mhz"] == 1980 and h100["power_limit_w"] == 700 and h100["clocks_applications_sm_mhz"] is None
    assert rows[1]["index"] == 1 and rows[1]["clocks_applications_sm_mhz"] == 1410
    assert cudnn_version_str(91002) == "9.10.2" and cudnn_version_str(8902) == "8.9.2" and cudnn_version_str(None) is None


def test_gpu_fingerprint_merges_what_the_runtime_knows():
    fp = gpu_fingerprint(0, name="NVIDIA H100 80GB HBM3", cudnn="9.10.2", compute_capability="9.0", missing=None)
    assert fp["cuda_index"] == 0 and fp["name"] == "NVIDIA H100 80GB HBM3" and fp["cudnn"] == "9.10.2"
    assert "missing" not in fp
    from hwlat.device_tables.device import _nvidia_smi

    if _nvidia_smi() is None:
        assert fp["nvidia_smi"] == "nvidia-smi not found"
    else:  # asked nvidia-smi: ok with its facts, or the reason it failed
        assert fp["nvidia_smi"] != "nvidia-smi not found"
        if fp["nvidia_smi"] == "ok":
            assert "driver_version" in fp and "memory_total_mib" in fp


def test_gpu_kernel_times_from_a_profiler_trace(tmp_path):
    from hwlat.profilers.ort.nodes import kernel_times

    def node(name, ts, dur, op):
        return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur, "ph": "X",
                "args": {"op_name": op, "provider": "CUDAExecutionProvider"}}

    def kernel(name, ts, dur, parent=None):
        args = {"stream": "7", "grid_x": "4"}
        if parent:
            args["parent_name"] = parent
        return {"cat": "Kernel", "name": name, "ts": ts, "dur": dur, "ph": "X", "args": args}

    events = []
    for run, t0 in enumerate((1000, 2000, 3000)):  # run 0 is a warm-up run
        events.append({"cat": "Session", "name": "model_run", "ts": t0, "dur": 500, "ph": "X"})
        events += [node("conv", t0 + 10, 3, "FusedConv"), kernel("implicit_gemm", t0 + 20, 40 + run),
                   kernel("bias_act", t0 + 61, 5 + run),
                   node("pool", t0 + 70, 2, "GlobalAveragePool"), kernel("reduce", t0 + 80, 7, parent="pool_kernel_time")]
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(events))
    times = kernel_times(path, skip_runs=1)
    assert times == {"conv": [47.0, 49.0], "pool": [7.0, 7.0]}
    host_only = tmp_path / "host.json"
    host_only.write_text(json.dumps([e for e in events if e["cat"] != "Kernel"]))
    assert kernel_times(host_only, skip_runs=1) == {}


# ---- on a real GPU ---------------------------------------------------------------------------------
@needs_cuda
def test_cuda_op_timed_with_events_and_fingerprinted():
    rt = TorchRuntime(device="cuda")
    name = torch.cuda.get_device_name(0)
    dev = rt.device()
    assert dev.hardware == gpu_hardware_name(name) and dev.name == f"{gpu_hardware_name(name)}/torch/fp32/threads=1"
    gpu = dev.fingerprint["gpu"]
    assert gpu["name"] == name and gpu["memory_total_mib"] > 0 and gpu["compute_capability"].count(".") == 1
    assert gpu["cuda_runtime"] == torch.version.cuda
    runtime = dev.fingerprint["runtime"]
    assert runtime["cudnn_benchmark"] is True and "cudnn_allow_tf32" in runtime and runtime["device"] == "cuda:0"
    spec = OpSpec.make("conv2d+bn+relu", (32, 64, 32, 32), cout=64, kernel=3)
    before = torch.backends.cudnn.benchmark
    prepared = rt.prepare(spec)
    assert torch.backends.cudnn.benchmark == before  # set while the runtime works, restored after
    with rt.context():
        assert torch.backends.cudnn.benchmark is True
        sample = prepared.timed()
    assert isinstance(sample, float) and sample > 0
    m, _ = rt.measure(spec, QUICK)
    assert m.median_ms > 0 and m.n >= QUICK.min_runs
    off = TorchRuntime(device="cuda", cudnn_benchmark=False)
    assert off.device().name.endswith("/cudnn_benchmark=off/threads=1")


@needs_cuda
def test_cuda_computes_the_same_function_as_the_cpu():
    spec = OpSpec.make("conv2d+bn+add+relu", (2, 16, 12, 12), cout=16, kernel=3)
    rt = TorchRuntime(device="cuda")
    module, inputs = rt._to_device(build_module(spec), build_inputs(spec))
    assert all(x.is_cuda for x in inputs) and next(module.parameters()).is_cuda
    with torch.inference_mode():
        y = module(*inputs).cpu().numpy()
        ref = build_module(spec)(*build_inputs(spec)).numpy()
    np.testing.assert_allclose(y, ref, rtol=2e-2, atol=2e-2)  # TF32 convolutions may be on


@needs_cuda
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_cuda_half_precisions_sweep_batches(tmp_path, precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    rt = TorchRuntime(device="cuda", precision=precision)
    specs = [OpSpec.make("conv2d+bn+relu", (n, 32, 16, 16), cout=32, kernel=3) for n in (1, 32, 256)]
    result = profile_ops(rt, specs, tmp_path / "t", QUICK, progress=False)
    table = DeviceTable.load(tmp_path / "t")
    assert result.measured == 3 and table.device.precision == precision and table.device.hardware != "cpu"


@needs_cuda
def test_cuda_real_out_of_memory_is_caught_and_memory_released():
    class Hungry(torch.nn.Module):
        def forward(self, x):
            return torch.empty(1 << 46, dtype=torch.uint8, device=x.device)  # 64 TiB: more than any GPU

    rt = TorchRuntime(device="cuda")
    with pytest.raises(OutOfDeviceMemoryError, match="out of memory on"):
        rt.time_module(Hungry(), [torch.ones(1)], QUICK)
    m = rt.time_module(torch.nn.ReLU(), [torch.ones(8, 8)], QUICK)  # the device still works
    assert m.median_ms > 0


@needs_cuda
def test_cuda_architectures_at_a_batch(tmp_path):
    from hwlat.nas.spaces import get_space
    from hwlat.nas.spaces.measure import profile_archs, resolve_archs

    space = get_space("nb201")
    from hwlat.profilers.torch_eager.runtime import TorchRuntime

    res = profile_archs(space, resolve_archs(space, "900:902"), tmp_path / "a", TorchRuntime(device="cuda"), protocol=QUICK,
                        progress=False, batch=32)
    assert res.measured == 2
    t = ArchTable.read(tmp_path / "a", space=space.arch_keys)
    (column,) = t.devices
    assert column.startswith(gpu_hardware_name(torch.cuda.get_device_name(0))) and "/batch=32/" in column


@needs_ort_cuda
def test_onnxruntime_cuda_provider(tmp_path):
    from hwlat.profilers.ort.runtime import OnnxRuntime, profile_model, time_onnx_model

    rt = OnnxRuntime(provider="cuda")
    assert rt.device().hardware == gpu_hardware_name(torch.cuda.get_device_name(0))
    m, _ = rt.measure(OpSpec.make("conv2d+bn+relu", (8, 32, 16, 16), cout=32, kernel=3), QUICK)
    assert m.median_ms > 0
    from hwlat.nas.spaces import get_space

    space = get_space("nb201")
    model = space.to_onnx(space.parse(900), 32)
    assert time_onnx_model(model, protocol=QUICK, provider="cuda").median_ms > 0
    path = tmp_path / "m.onnx"
    path.write_bytes(model)
    prof = profile_model(path, protocol=QUICK, profile_runs=5, provider="cuda")
    assert prof.versions["provider"] == "CUDAExecutionProvider" and prof.nodes
    assert any(n.provider == "CUDAExecutionProvider" for n in prof.nodes)
