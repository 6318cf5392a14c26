"""`scratchdet train` and `detect` with ``--device cuda``: the network trains and detects on the GPU
and gives what the same commands give on the CPU. The commands' detector is swapped for a tiny one
(the simulator runs every GPU thread in Python); what is tested is the path through the commands."""

import json

import numpy as np
import pytest

from scratchdet import backend, nn
from scratchdet.cli import main
from scratchdet.models import FastRCNN


@pytest.fixture
def tiny_detectors(monkeypatch):
    def build_model(name, classes, seed, device="cpu"):
        assert name == "fast-rcnn"
        return FastRCNN(classes, channels=(2, 3), hidden=6, dropout=0.25, roi_size=2, rng=seed).to(device)

    monkeypatch.setattr("scratchdet.commands.train.build_model", build_model)


@pytest.fixture
def shapes(tmp_path):
    directory = tmp_path / "shapes"
    assert main(["data", "shapes", str(directory), "--images", "2", "--size", "16", "16", "--seed", "1", "--no-progress"]) == 0
    return directory


def test_train_and_detect_on_the_gpu_give_what_the_cpu_gives(tiny_detectors, shapes, tmp_path, monkeypatch):
    moved = []
    to = FastRCNN.to
    monkeypatch.setattr(FastRCNN, "to", lambda self, device: moved.append(device) or to(self, device))
    weights = {}
    for device in ("cpu", "cuda"):
        weights[device] = tmp_path / f"{device}.npz"
        status = main(["train", "--gt", str(shapes / "annotations.json"), "--images", str(shapes), "--model", "fast-rcnn",
                       "--steps", "1", "--max-proposals", "20", "--out", str(weights[device]), "--device", device,
                       "--log", str(tmp_path / f"{device}.json"), "--no-progress"])
        assert status == 0
    assert moved == ["cpu", "cuda"]
    losses = {device: json.loads((tmp_path / f"{device}.json").read_text())["losses"]["total"] for device in weights}
    np.testing.assert_allclose(losses["cuda"], losses["cpu"], rtol=1e-4)
    on_cpu, on_gpu = nn.load(weights["cpu"]), nn.load(weights["cuda"])  # saved from the GPU as host arrays
    for (name, cpu_layer, key), (_, gpu_layer, _) in zip(on_cpu.named_parameters(), on_gpu.named_parameters()):
        assert not backend.is_cuda_array(gpu_layer.params[key])
        np.testing.assert_allclose(gpu_layer.params[key], cpu_layer.params[key], rtol=1e-4, atol=1e-6, err_msg=name)

    detections = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / f"dets-{device}.json"
        status = main(["detect", str(weights["cpu"]), str(shapes / "shapes_000001.png"), "--out", str(out), "--score", "0",
                       "--max-proposals", "20", "--device", device, "--no-progress"])
        assert status == 0
        detections[device] = json.loads(out.read_text())
    assert moved[-2:] == ["cpu", "cuda"] and len(detections["cuda"]) == len(detections["cpu"]) > 0
    for ours, theirs in zip(detections["cuda"], detections["cpu"]):
        assert ours["category_id"] == theirs["category_id"]
        assert ours["score"] == pytest.approx(theirs["score"], rel=1e-4, abs=1e-6)
        np.testing.assert_allclose(ours["bbox"], theirs["bbox"], rtol=1e-4, atol=1e-3)
