"""`benchmarks/bench_cuda.py` itself, at tiny sizes in the simulator (or on a GPU): a GPU is lent
rarely and briefly, and a benchmark script that fails there wastes the loan. PyTorch, when installed,
stands in for itself on the CPU (its `.cuda()` calls keep tensors where they are)."""

import importlib.util
import pathlib

import numpy as np
import pytest
from numba import cuda

from scratchdet.backend import simulated

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "bench_cuda.py"


@pytest.fixture
def bench(monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_cuda_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "CONV_SHAPES", [(1, 3, 3, 3, 2), (1, 5, 3, 3, 2)])  # few channels; implicit GEMM
    monkeypatch.setattr(module, "TRAIN_BATCH", 1)
    monkeypatch.setattr(module, "TRAIN_IMAGE", 8)
    monkeypatch.setattr(module, "TRAIN_CHANNELS", (2, 3, 2))
    monkeypatch.setattr(module, "LINEAR_SHAPE", (3, 7, 5))
    monkeypatch.setattr(module, "N_BOXES", 70)  # two 64-box words
    monkeypatch.setattr(module, "NMS_SCENARIOS", {"few_kept": (3, 0.5)})
    monkeypatch.setattr(module, "DET_IMAGE", 16)
    monkeypatch.setattr(module, "DET_ROIS", 2)
    monkeypatch.setattr(module, "DET_PROPOSALS", 8)
    monkeypatch.setattr(module, "DET_NETWORK", {"channels": (2,), "hidden": 4, "roi_size": 2})
    monkeypatch.setattr(module, "_synchronize", cuda.synchronize)
    timed = module.gpu_time
    monkeypatch.setattr(module, "gpu_time", lambda fn, repeat=5, warmup=2: timed(fn, 1, 0))  # one call each
    return module


def test_stage_breakdowns_time_every_stage(bench):
    tables = [bench.conv_breakdown(shape) for shape in bench.CONV_SHAPES]
    tables += [bench.train_breakdown()] + [bench.nms_breakdown(s) for s in bench.NMS_SCENARIOS]
    assert any("(<= 4 channels)" in name for name in tables[0])  # an RGB layer's input gradient
    assert any("implicit GEMM W~" in name for name in tables[1])
    assert len(tables[2]) == 2 * 11 + 2  # 11 layers forward and backward, the loss, the SGD step
    for stages in tables:
        assert stages and all(np.isfinite(ms) and ms >= 0 for ms in stages.values()), stages


def test_the_whole_script_writes_its_table(bench, monkeypatch, tmp_path):
    torch = pytest.importorskip("torch")
    if simulated() or not torch.cuda.is_available():  # PyTorch on the CPU stands in for its CUDA self
        monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *args, **kwargs: self)
        monkeypatch.setattr(torch.nn.Module, "cuda", lambda self, *args, **kwargs: self)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: "CPU stand-in")
        monkeypatch.setattr(bench, "_gpu_available", lambda: True)
    only = "conv,linear,train,detectors" + (",nms" if importlib.util.find_spec("torchvision") else "")
    out = tmp_path / "results.md"
    assert bench.main(["--only", only, "--out", str(out)]) == 0
    table = out.read_text()
    assert table.count("conv2d fwd+bwd") == 2 and "linear fwd+bwd 3x7->5" in table and "training step" in table
    assert ("NMS 70 boxes" in table) == ("per-class NMS (20 classes) 70 boxes" in table) == ("nms" in only)
    lines = table.splitlines()
    rows = lines[next(i for i, line in enumerate(lines) if line.startswith("| ---")) + 1:]
    assert len(rows) == 6 + 2 * ("nms" in only)  # every case (NMS: plain and per class), under the header
    assert "Fast R-CNN training step, 2 images 16x16" in table and "Fast R-CNN detection, 1 image 16x16" in table
    for line in rows:
        ratio = float(line.split("|")[5])
        assert ratio > 0, line
        if "training step" in line:  # the same first loss as PyTorch's
            assert float(line.split("max diff ")[1].split()[0].rstrip("|;")) < 1e-4, line
