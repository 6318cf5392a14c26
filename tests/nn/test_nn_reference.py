"""scratchdet.nn against frozen PyTorch outputs (reference/outputs/nn_*.npz) and, when torch is
installed, against PyTorch live on fresh random shapes.

The frozen inputs are float32; the references were computed in float64 from those same values, and our
float32 kernels must agree at float32 tolerance.
"""

import json
import pathlib

import numpy as np
import pytest

from scratchdet import nn
from scratchdet.nn import functional as F

OUTPUTS = pathlib.Path(__file__).resolve().parents[2] / "reference" / "outputs"
RTOL, ATOL = 1e-4, 1e-4  # float32 tolerance for sums of up to a few hundred terms


def load(name):
    with np.load(OUTPUTS / f"nn_{name}.npz", allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    return json.loads(str(arrays.pop("metadata"))), arrays


def close(ours, theirs, what, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=atol, err_msg=f"{what}: ours vs PyTorch")


CONV_META, CONV = load("conv")


@pytest.mark.parametrize("route", ["as-chosen", "im2col"])
@pytest.mark.parametrize("case", range(len(CONV_META["cases"])), ids=lambda i: "-".join(f"{k}{v}" for k, v in CONV_META["cases"][i].items()))
def test_conv2d_matches_frozen_pytorch(case, route, monkeypatch):
    """Every case as `functional` routes it (float32 stride 1: the register-tiled kernels), and every case
    through im2col + OpenBLAS, the route float64 and strided convolutions take."""
    if route == "im2col":
        monkeypatch.setattr(F, "_register_tiled", lambda *args: False)
    spec = CONV_META["cases"][case]
    x, w, b, dy = (CONV[f"{case}/{k}"] for k in ("x", "w", "b", "dy"))
    y = F.conv2d_forward(x, w, b, stride=spec["stride"], padding=spec["padding"])
    assert y.dtype == np.float32 and y.shape == CONV[f"{case}/y"].shape
    close(y, CONV[f"{case}/y"], "y")
    dx, dw, db = F.conv2d_backward(dy, x, w, stride=spec["stride"], padding=spec["padding"])
    close(dx, CONV[f"{case}/dx"], "dx")
    close(dw, CONV[f"{case}/dw"], "dw")
    close(db, CONV[f"{case}/db"], "db")


@pytest.mark.parametrize("images_per_group", [1, 3], ids=["every-image", "last-group-partial"])
def test_conv2d_in_small_image_groups_matches_frozen_pytorch(monkeypatch, images_per_group):
    """The batch is cut into groups of images so that the column buffer stays small: cut at every
    image, and into groups of 3 + 1 (the last group uses only part of the buffers)."""
    case = 7  # N = 4, C = 8, 16 x 16, 3 x 3 filters, stride 1, padding 1: 8*9*16*16 columns per image
    monkeypatch.setattr(F, "COLUMN_BUFFER_BYTES", images_per_group * 8 * 9 * 16 * 16 * 4)
    monkeypatch.setattr(F, "_register_tiled", lambda *args: False)  # float32 stride 1 would skip im2col
    x, w, b, dy = (CONV[f"{case}/{k}"] for k in ("x", "w", "b", "dy"))
    close(F.conv2d_forward(x, w, b, stride=1, padding=1), CONV[f"{case}/y"], "y")
    dx, dw, db = F.conv2d_backward(dy, x, w, stride=1, padding=1)
    close(dx, CONV[f"{case}/dx"], "dx")
    close(dw, CONV[f"{case}/dw"], "dw")


POOL_META, POOL = load("pool")


@pytest.mark.parametrize("case", range(len(POOL_META["cases"])), ids=lambda i: "-".join(f"{k}{v}" for k, v in POOL_META["cases"][i].items()))
def test_maxpool2d_matches_frozen_pytorch_including_ties(case):
    spec = POOL_META["cases"][case]
    x, dy = POOL[f"{case}/x"], POOL[f"{case}/dy"]
    y = F.maxpool2d_forward(x, spec["kernel_size"], stride=spec["stride"])
    np.testing.assert_array_equal(y, POOL[f"{case}/y"])
    dx = F.maxpool2d_backward(dy, x, spec["kernel_size"], stride=spec["stride"])
    close(dx, POOL[f"{case}/dx"], "dx")


LINEAR_META, LINEAR = load("linear")


@pytest.mark.parametrize("case", range(len(LINEAR_META["cases"])))
def test_linear_matches_frozen_pytorch(case):
    x, w, b, dy = (LINEAR[f"{case}/{k}"] for k in ("x", "w", "b", "dy"))
    close(F.linear_forward(x, w, b), LINEAR[f"{case}/y"], "y")
    dx, dw, db = F.linear_backward(dy, x, w)
    close(dx, LINEAR[f"{case}/dx"], "dx")
    close(dw, LINEAR[f"{case}/dw"], "dw")
    close(db, LINEAR[f"{case}/db"], "db")


_, LOSSES = load("losses")


@pytest.mark.parametrize("name", ["ce", "ce_large"])
def test_softmax_cross_entropy_matches_frozen_pytorch(name):
    loss, dlogits = nn.softmax_cross_entropy(LOSSES[f"{name}/logits"], LOSSES[f"{name}/labels"])
    assert np.isfinite(loss)
    close(loss, LOSSES[f"{name}/loss"], "loss", rtol=1e-5)
    close(dlogits, LOSSES[f"{name}/dlogits"], "dlogits")


@pytest.mark.parametrize("beta", [1.0, 0.5, 0.0])
def test_smooth_l1_matches_frozen_pytorch_sum(beta):
    loss, grad = nn.smooth_l1(LOSSES["regression/pred"], LOSSES["regression/target"], beta=beta)
    close(loss, LOSSES[f"smooth_l1_{beta}/loss"], "loss", rtol=1e-5)
    close(grad, LOSSES[f"smooth_l1_{beta}/dpred"], "dpred")


def test_l2_loss_matches_frozen_pytorch_mse_sum():
    loss, grad = nn.l2_loss(LOSSES["regression/pred"], LOSSES["regression/target"])
    close(loss, LOSSES["l2/loss"], "loss", rtol=1e-5)
    close(grad, LOSSES["l2/dpred"], "dpred")


OPTIM_META, OPTIM = load("optim")


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_optimisers_match_frozen_pytorch_three_steps(name):
    layer = nn.Linear(1, 1, rng=0, dtype=np.float64)
    layer.params = {"p": OPTIM["param"].astype(np.float64)}
    layer.grads = {"p": np.zeros(6)}
    settings = OPTIM_META["settings"][name]
    if name == "sgd":
        opt = nn.SGD(layer, lr=settings["lr"], momentum=settings["momentum"], weight_decay=settings["weight_decay"])
    else:
        opt = nn.Adam(layer, lr=settings["lr"], beta1=settings["betas"][0], beta2=settings["betas"][1],
                      eps=settings["eps"], weight_decay=settings["weight_decay"])
    for g in OPTIM["grads"]:
        layer.grads["p"] = g.astype(np.float64)
        opt.step()
    np.testing.assert_allclose(layer.params["p"], OPTIM[f"{name}/param"], rtol=1e-12, atol=1e-12)


ROI_META, ROI = load("roi_pool")


@pytest.mark.parametrize("case", range(len(ROI_META["cases"])), ids=lambda i: str(ROI_META["cases"][i]))
def test_roi_pool_matches_frozen_reference_loop(case):
    spec = ROI_META["cases"][case]
    features, rois = ROI["features"], ROI["rois"]
    out = F.roi_pool_forward(features, rois, tuple(spec["output_size"]), spec["spatial_scale"])
    np.testing.assert_array_equal(out, ROI[f"{case}/out"].astype(np.float32))
    dfeatures = F.roi_pool_backward(ROI[f"{case}/dout"], features, rois, tuple(spec["output_size"]), spec["spatial_scale"])
    close(dfeatures, ROI[f"{case}/dfeatures"], "dfeatures")


# ------------------------------------------------------------------------------------------------
# live comparisons on fresh random shapes (only where PyTorch is installed)
# ------------------------------------------------------------------------------------------------


def test_conv2d_and_maxpool_match_live_pytorch_on_random_shapes():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng()  # fresh shapes every run: the frozen cases pin the seeds
    for _ in range(5):
        n, c, k = rng.integers(1, 4), rng.integers(1, 5), rng.integers(1, 6)
        kh, kw = rng.integers(1, 5, size=2)
        stride, padding = int(rng.integers(1, 4)), int(rng.integers(0, 3))
        h, w = kh + rng.integers(0, 9), kw + rng.integers(0, 9)
        x = rng.standard_normal((n, c, h, w)).astype(np.float32)
        weight = rng.standard_normal((k, c, kh, kw)).astype(np.float32)
        bias = rng.standard_normal(k).astype(np.float32)
        xt, wt, bt = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, weight, bias))
        yt = torch.nn.functional.conv2d(xt, wt, bt, stride=stride, padding=padding)
        dy = rng.standard_normal(tuple(yt.shape)).astype(np.float32)
        yt.backward(torch.tensor(dy, dtype=torch.float64))
        shape = f"x {x.shape} w {weight.shape} stride {stride} padding {padding}"
        close(F.conv2d_forward(x, weight, bias, stride=stride, padding=padding), yt.detach().numpy(), f"y, {shape}")
        dx, dw, db = F.conv2d_backward(dy, x, weight, stride=stride, padding=padding)
        close(dx, xt.grad.numpy(), f"dx, {shape}")
        close(dw, wt.grad.numpy(), f"dw, {shape}")
        close(db, bt.grad.numpy(), f"db, {shape}")

        size = int(rng.integers(1, min(h, w) + 1))
        pool_stride = int(rng.integers(1, 4))
        pt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        yt = torch.nn.functional.max_pool2d(pt, size, pool_stride)
        dy = rng.standard_normal(tuple(yt.shape)).astype(np.float32)
        yt.backward(torch.tensor(dy, dtype=torch.float64))
        np.testing.assert_array_equal(F.maxpool2d_forward(x, size, pool_stride), yt.detach().numpy().astype(np.float32))
        close(F.maxpool2d_backward(dy, x, size, pool_stride), pt.grad.numpy(), f"maxpool dx, {shape} k {size} s {pool_stride}")


def test_register_tiled_conv2d_matches_live_pytorch_on_random_layer_shapes():
    """Float32 stride-1 layers of conv-net size (the register-tiled route and all its variants: narrow and
    wide maps, few and many filters, RGB-like inputs) against PyTorch in float64, fresh shapes every run."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng()
    for _ in range(4):
        n, c, k = int(rng.integers(1, 4)), int(rng.choice([1, 3, int(rng.integers(4, 40))])), int(rng.integers(1, 140))
        kh, kw = (int(v) for v in rng.integers(1, 6, size=2))
        padding = int(rng.integers(0, min(kh, kw)))
        h, w = kh + int(rng.integers(0, 40)), kw + int(rng.integers(0, 40))
        x = rng.standard_normal((n, c, h, w)).astype(np.float32)
        weight = (rng.standard_normal((k, c, kh, kw)) / np.sqrt(c * kh * kw)).astype(np.float32)
        bias = rng.standard_normal(k).astype(np.float32)
        assert F._register_tiled(x, weight, 1, padding)
        xt, wt, bt = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, weight, bias))
        yt = torch.nn.functional.conv2d(xt, wt, bt, stride=1, padding=padding)
        dy = rng.standard_normal(tuple(yt.shape)).astype(np.float32)
        yt.backward(torch.tensor(dy, dtype=torch.float64))
        shape = f"x {x.shape} w {weight.shape} padding {padding}"
        close(F.conv2d_forward(x, weight, bias, stride=1, padding=padding), yt.detach().numpy(), f"y, {shape}")
        dx, dw, db = F.conv2d_backward(dy, x, weight, stride=1, padding=padding)
        scale = np.abs(wt.grad.numpy()).max()
        close(dx, xt.grad.numpy(), f"dx, {shape}")
        close(dw, wt.grad.numpy(), f"dw, {shape}", atol=1e-5 * max(1.0, scale))
        close(db, bt.grad.numpy(), f"db, {shape}", atol=1e-5 * max(1.0, np.abs(bt.grad.numpy()).max()))


def test_losses_match_live_pytorch_on_random_inputs():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng()
    n, k = int(rng.integers(1, 20)), int(rng.integers(2, 10))
    logits = (rng.standard_normal((n, k)) * 5).astype(np.float32)
    labels = rng.integers(0, k, n)
    lt = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    torch.nn.functional.cross_entropy(lt, torch.tensor(labels)).backward()
    loss, dlogits = nn.softmax_cross_entropy(logits, labels)
    close(dlogits, lt.grad.numpy(), "dlogits")
    beta = float(rng.uniform(0.1, 2.0))
    pred, target = rng.standard_normal((n, 4)), rng.standard_normal((n, 4))
    pt = torch.tensor(pred, requires_grad=True)
    ref = torch.nn.functional.smooth_l1_loss(pt, torch.tensor(target), reduction="sum", beta=beta)
    ref.backward()
    loss, grad = nn.smooth_l1(pred, target, beta=beta)
    assert loss == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(grad, pt.grad.numpy(), rtol=1e-12)
