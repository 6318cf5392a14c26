"""Frozen PyTorch outputs and gradients for `scratchdet.nn` (run through `reference/generate.py nn`).

Writes `outputs/nn_<op>.npz`: for each case the float32 inputs, an upstream gradient, and PyTorch's
output and input gradients computed in float64 from those same float32 values. Every file has a
`metadata` entry (JSON: library versions, seed, what each case is).

RoI max pooling: torchvision is not installed here, so `nn_roi_pool.npz` comes from the independent
NumPy loop `roi_pool_reference` below, written from torchvision's CPU kernel rules (`roi_pool_kernel.cpp`):
corners scaled and rounded half away from zero, RoI size end - start + 1 (at least 1), bin rows
[floor(ph*h/PH), ceil((ph+1)*h/PH)) offset by the RoI start and clipped to the map, an empty bin gives 0,
ties go to the first maximum in row-major order, and the gradient goes to each bin's argmax.
"""

import json
import math
import pathlib
import platform

import numpy as np

SEED = 20240611

# (N, C, H, W, K, kh, kw, stride, padding): strides, paddings, kernel sizes and odd shapes
CONV_CASES = [
    (2, 3, 7, 5, 4, 3, 3, 1, 1),
    (1, 2, 9, 8, 3, 2, 2, 2, 0),
    (3, 4, 6, 7, 5, 3, 3, 2, 2),
    (2, 1, 5, 5, 2, 5, 5, 1, 0),  # the kernel covers the whole image
    (1, 3, 10, 13, 6, 1, 1, 1, 0),  # 1 x 1 convolution
    (2, 2, 11, 9, 3, 3, 2, 3, 1),  # rectangular kernel, stride 3
    (1, 1, 4, 6, 2, 3, 3, 1, 3),  # padding wider than half the kernel
    (4, 8, 16, 16, 8, 3, 3, 1, 1),
]

# (N, C, H, W, kernel_size, stride, integer_valued): integer-valued inputs are full of ties
POOL_CASES = [
    (2, 3, 8, 8, 2, 2, False),
    (1, 2, 7, 9, 3, 2, False),  # the last row / column is dropped (floor mode)
    (2, 2, 6, 6, 3, 1, False),  # overlapping windows
    (2, 2, 6, 8, 2, 2, True),  # ties: the first maximum takes the gradient
    (1, 2, 7, 7, 3, 2, True),  # ties and overlap
]

LINEAR_CASES = [(5, 7, 3), (1, 4, 2), (8, 16, 10)]

# (output_size, spatial_scale)
ROI_CASES = [((2, 2), 0.25), ((3, 4), 0.5), ((7, 7), 1.0 / 16)]


def _versions():
    import torch

    return {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()}


def _save(path, metadata, arrays):
    arrays = dict(arrays)
    arrays["metadata"] = np.array(json.dumps(metadata))
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)
    return path


def _f32(rng, shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _leaf(torch, a):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=True)


def conv(outdir, rng, torch):
    arrays = {}
    for i, (n, c, h, w, k, kh, kw, stride, padding) in enumerate(CONV_CASES):
        x, weight, bias = _f32(rng, (n, c, h, w)), _f32(rng, (k, c, kh, kw)), _f32(rng, (k,))
        xt, wt, bt = _leaf(torch, x), _leaf(torch, weight), _leaf(torch, bias)
        y = torch.nn.functional.conv2d(xt, wt, bt, stride=stride, padding=padding)
        dy = _f32(rng, tuple(y.shape))
        y.backward(torch.tensor(dy, dtype=torch.float64))
        arrays.update({
            f"{i}/x": x, f"{i}/w": weight, f"{i}/b": bias, f"{i}/dy": dy, f"{i}/y": y.detach().numpy(),
            f"{i}/dx": xt.grad.numpy(), f"{i}/dw": wt.grad.numpy(), f"{i}/db": bt.grad.numpy(),
        })
    meta = {"source": "torch.nn.functional.conv2d, float64", "seed": SEED, "versions": _versions(),
            "cases": [dict(zip("N C H W K kh kw stride padding".split(), case)) for case in CONV_CASES]}
    return _save(outdir / "nn_conv.npz", meta, arrays)


def pool(outdir, rng, torch):
    arrays = {}
    for i, (n, c, h, w, kernel, stride, integer) in enumerate(POOL_CASES):
        x = rng.integers(0, 3, (n, c, h, w)).astype(np.float32) if integer else _f32(rng, (n, c, h, w))
        xt = _leaf(torch, x)
        y = torch.nn.functional.max_pool2d(xt, kernel, stride)
        dy = _f32(rng, tuple(y.shape))
        y.backward(torch.tensor(dy, dtype=torch.float64))
        arrays.update({f"{i}/x": x, f"{i}/dy": dy, f"{i}/y": y.detach().numpy(), f"{i}/dx": xt.grad.numpy()})
    meta = {"source": "torch.nn.functional.max_pool2d, float64", "seed": SEED, "versions": _versions(),
            "cases": [dict(zip("N C H W kernel_size stride integer_valued".split(), case)) for case in POOL_CASES]}
    return _save(outdir / "nn_pool.npz", meta, arrays)


def linear(outdir, rng, torch):
    arrays = {}
    for i, (n, d_in, d_out) in enumerate(LINEAR_CASES):
        x, weight, bias = _f32(rng, (n, d_in)), _f32(rng, (d_out, d_in)), _f32(rng, (d_out,))
        xt, wt, bt = _leaf(torch, x), _leaf(torch, weight), _leaf(torch, bias)
        y = torch.nn.functional.linear(xt, wt, bt)
        dy = _f32(rng, tuple(y.shape))
        y.backward(torch.tensor(dy, dtype=torch.float64))
        arrays.update({
            f"{i}/x": x, f"{i}/w": weight, f"{i}/b": bias, f"{i}/dy": dy, f"{i}/y": y.detach().numpy(),
            f"{i}/dx": xt.grad.numpy(), f"{i}/dw": wt.grad.numpy(), f"{i}/db": bt.grad.numpy(),
        })
    meta = {"source": "torch.nn.functional.linear, float64", "seed": SEED, "versions": _versions(),
            "cases": [dict(zip("N D_in D_out".split(), case)) for case in LINEAR_CASES]}
    return _save(outdir / "nn_linear.npz", meta, arrays)


def losses(outdir, rng, torch):
    arrays = {}
    # cross-entropy: ordinary logits, and huge ones that overflow a naive exp
    for name, scale in (("ce", 1.0), ("ce_large", 1000.0)):
        logits = _f32(rng, (6, 5), scale)
        labels = rng.integers(0, 5, 6)
        lt = _leaf(torch, logits)
        loss = torch.nn.functional.cross_entropy(lt, torch.tensor(labels))
        loss.backward()
        arrays.update({f"{name}/logits": logits, f"{name}/labels": labels, f"{name}/loss": np.array(loss.item()),
                       f"{name}/dlogits": lt.grad.numpy()})
    # smooth L1 (summed) with several kinks, and the summed squared error
    pred, target = _f32(rng, (4, 8), 2.0), _f32(rng, (4, 8))
    arrays.update({"regression/pred": pred, "regression/target": target})
    for beta in (1.0, 0.5, 0.0):
        pt = _leaf(torch, pred)
        loss = torch.nn.functional.smooth_l1_loss(pt, torch.tensor(target, dtype=torch.float64), reduction="sum", beta=beta)
        loss.backward()
        arrays.update({f"smooth_l1_{beta}/loss": np.array(loss.item()), f"smooth_l1_{beta}/dpred": pt.grad.numpy()})
    pt = _leaf(torch, pred)
    loss = torch.nn.functional.mse_loss(pt, torch.tensor(target, dtype=torch.float64), reduction="sum")
    loss.backward()
    arrays.update({"l2/loss": np.array(loss.item()), "l2/dpred": pt.grad.numpy()})
    meta = {"source": "torch.nn.functional cross_entropy (mean), smooth_l1_loss (sum, beta 1, 0.5, 0), mse_loss (sum); float64",
            "seed": SEED, "versions": _versions()}
    return _save(outdir / "nn_losses.npz", meta, arrays)


def optim(outdir, rng, torch):
    """Three steps of torch.optim.SGD (momentum, weight decay) and Adam (weight decay) on fixed gradients."""
    param = _f32(rng, (6,))
    grads = _f32(rng, (3, 6))
    arrays = {"param": param, "grads": grads}
    settings = {
        "sgd": (torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
        "adam": (torch.optim.Adam, dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)),
    }
    for name, (cls, kwargs) in settings.items():
        p = torch.nn.Parameter(torch.tensor(param, dtype=torch.float64))
        opt = cls([p], **kwargs)
        for g in grads:
            p.grad = torch.tensor(g, dtype=torch.float64)
            opt.step()
        arrays[f"{name}/param"] = p.detach().numpy().copy()
    meta = {"source": "torch.optim SGD and Adam, 3 steps, float64", "seed": SEED, "versions": _versions(),
            "settings": {"sgd": settings["sgd"][1], "adam": {**settings["adam"][1], "betas": [0.9, 0.999]}}}
    return _save(outdir / "nn_optim.npz", meta, arrays)


def _round_half_away(v):
    return math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5)


def roi_pool_reference(features, rois, output_size, spatial_scale):
    """RoI max pooling and its argmax, written from torchvision's CPU kernel as plain Python loops.

    Returns:
        (out (R, C, PH, PW) float64, argmax (R, C, PH, PW) int64 flat index y*W + x, -1 for an empty bin).
    """
    n_rois = rois.shape[0]
    _, channels, height, width = features.shape
    pooled_h, pooled_w = output_size
    out = np.zeros((n_rois, channels, pooled_h, pooled_w))
    argmax = np.full((n_rois, channels, pooled_h, pooled_w), -1, dtype=np.int64)
    for r in range(n_rois):
        b = int(rois[r, 0])
        start_w = _round_half_away(float(rois[r, 1]) * spatial_scale)
        start_h = _round_half_away(float(rois[r, 2]) * spatial_scale)
        end_w = _round_half_away(float(rois[r, 3]) * spatial_scale)
        end_h = _round_half_away(float(rois[r, 4]) * spatial_scale)
        roi_w = max(end_w - start_w + 1, 1)
        roi_h = max(end_h - start_h + 1, 1)
        bin_h = roi_h / pooled_h
        bin_w = roi_w / pooled_w
        for c in range(channels):
            for ph in range(pooled_h):
                h0 = min(max(math.floor(ph * bin_h) + start_h, 0), height)
                h1 = min(max(math.ceil((ph + 1) * bin_h) + start_h, 0), height)
                for pw in range(pooled_w):
                    w0 = min(max(math.floor(pw * bin_w) + start_w, 0), width)
                    w1 = min(max(math.ceil((pw + 1) * bin_w) + start_w, 0), width)
                    best, best_index = -math.inf, -1
                    for y in range(h0, h1):
                        for x in range(w0, w1):
                            if features[b, c, y, x] > best:
                                best, best_index = float(features[b, c, y, x]), y * width + x
                    out[r, c, ph, pw] = best if best_index >= 0 else 0.0
                    argmax[r, c, ph, pw] = best_index
    return out, argmax


def roi_pool_backward_reference(dout, argmax, features_shape, rois):
    """Each bin's gradient added to its argmax cell (Fast R-CNN, eq. 4)."""
    dfeatures = np.zeros(features_shape)
    width = features_shape[3]
    for r, c, ph, pw in np.ndindex(*dout.shape):
        index = argmax[r, c, ph, pw]
        if index >= 0:
            dfeatures[int(rois[r, 0]), c, index // width, index % width] += dout[r, c, ph, pw]
    return dfeatures


def roi_pool(outdir, rng):
    features = _f32(rng, (2, 3, 12, 16))
    rois = np.array([
        [0, 0, 0, 63, 47],  # the whole map at scale 1/4
        [1, 8, 4, 40, 30],
        [0, 10, 6, 10, 6],  # a single point
        [1, 2, 6, 5, 10],  # corners land on exact halves (0.5, 1.5, 2.5): rounded away from zero
        [0, 2.5, 6.5, 14.5, 22],
        [0, 50, 40, 90, 70],  # partly outside the map
        [1, 200, 200, 260, 240],  # entirely outside: empty bins give 0
        [0, 30, 20, 12, 8],  # x2 < x1: at least one cell
        [1, -6, -3, 20, 18],  # negative corners
    ], dtype=np.float32)
    arrays = {"features": features, "rois": rois}
    for i, (size, scale) in enumerate(ROI_CASES):
        out, argmax = roi_pool_reference(features, rois, size, scale)
        dout = _f32(rng, out.shape)
        arrays.update({
            f"{i}/out": out, f"{i}/dout": dout,
            f"{i}/dfeatures": roi_pool_backward_reference(dout, argmax, features.shape, rois),
        })
    meta = {"source": "independent NumPy loop (reference/_nn.py roi_pool_reference) following torchvision's "
            "roi_pool CPU kernel rules; torchvision was not installed", "seed": SEED,
            "versions": {"numpy": np.__version__, "python": platform.python_version()},
            "rois_format": "(batch_index, x1, y1, x2, y2) in image pixels",
            "cases": [{"output_size": list(size), "spatial_scale": scale} for size, scale in ROI_CASES]}
    return _save(outdir / "nn_roi_pool.npz", meta, arrays)


def generate(outdir):
    import torch

    outdir = pathlib.Path(outdir)
    written = []
    for step in (conv, pool, linear, losses, optim):
        written.append(step(outdir, np.random.default_rng(SEED), torch))
    written.append(roi_pool(outdir, np.random.default_rng(SEED)))
    return written
