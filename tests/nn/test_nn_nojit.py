"""With NUMBA_DISABLE_JIT=1 every kernel runs as plain Python and gives the compiled kernels' results.

The plain-Python run happens in a subprocess (the variable must be set before numba is imported) on
tiny shapes; it writes its results to a file that this process compares with the compiled kernels.
"""

import os
import pathlib
import subprocess
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[2]

SCRIPT = """
import sys
import numpy as np
import numba
assert numba.config.DISABLE_JIT
from scratchdet import nn
from scratchdet.nn import functional as F
exec(open(sys.argv[2]).read())
np.savez(sys.argv[1], **run(np, nn, F))
"""

RUN = '''
def run(np, nn, F):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 2, 5, 4))
    w = rng.standard_normal((3, 2, 3, 3))
    b = rng.standard_normal(3)
    y = F.conv2d_forward(x, w, b, stride=2, padding=1)
    dx, dw, db = F.conv2d_backward(np.ones_like(y), x, w, stride=2, padding=1)
    y1 = F.conv2d_forward(x, w, b, stride=1, padding=1)  # im2col / col2im have a separate stride-1 loop
    dx1, dw1, db1 = F.conv2d_backward(np.cos(y1), x, w, stride=1, padding=1)
    # float32, stride 1, 16 channels: the register-tiled kernels of kernels/cpu/conv_gemm.py
    x16 = rng.standard_normal((2, 16, 3, 4)).astype(np.float32)
    w16 = rng.standard_normal((7, 16, 3, 2)).astype(np.float32)
    y16 = F.conv2d_forward(x16, w16, np.ones(7, np.float32), stride=1, padding=1)
    dx16, dw16, db16 = F.conv2d_backward(np.cos(y16), x16, w16, stride=1, padding=1)
    w64 = rng.standard_normal((64, 16, 3, 3)).astype(np.float32)  # 64 filters: the filter gradient by 64-wide tiles
    dx64, dw64, db64 = F.conv2d_backward(np.ones((1, 64, 3, 3), np.float32), x16[:1, :, :, :3].copy(), w64, stride=1, padding=1)
    x_narrow = rng.standard_normal((1, 16, 16, 16)).astype(np.float32)  # a 16-wide map, 16-pixel runs: 6 filters stored as whole tiles, 2 run by run
    y_narrow = F.conv2d_forward(x_narrow, rng.standard_normal((8, 16, 3, 3)).astype(np.float32), np.ones(8, np.float32), stride=1, padding=1)
    y_small = F.conv2d_forward(x16[:1, :, :, :4].copy(), rng.standard_normal((70, 16, 3, 3)).astype(np.float32), np.ones(70, np.float32), stride=1, padding=1)  # 6-pixel x 64-filter tiles
    y_small_fold = F.conv2d_forward(x16[:1, :15, :, :4].copy(), rng.standard_normal((20, 15, 3, 3)).astype(np.float32), np.ones(20, np.float32), stride=1, padding=1)  # folded pixel tiles, odd channels
    y_small0 = F.conv2d_forward(x16[:1, :, :, :4].copy(), rng.standard_normal((70, 16, 1, 1)).astype(np.float32), np.ones(70, np.float32), stride=1, padding=0)  # the same, x read in place
    _, dw_blocks, _ = F.conv2d_backward(np.cos(np.arange(1024, dtype=np.float32)).reshape(1, 64, 4, 4), x_narrow[:, :, :4, :4].copy(), w64, stride=1, padding=1)  # dy laid out by 16 x 16 blocks
    # Winograd's kernels (kernels/cpu/winograd.py), called directly: conv2d takes them for batches of >= 256 tiles only
    from scratchdet.kernels.cpu import winograd as W

    x_wino = rng.standard_normal((2, 33, 3, 5)).astype(np.float32)
    w_wino = rng.standard_normal((70, 33, 3, 3)).astype(np.float32)
    y_wino, y_fold = np.empty((2, 70, 3, 5), np.float32), np.empty((2, 32, 3, 5), np.float32)
    panels = np.empty((16, 2, 33, 64), np.float32)
    W.transform_filters(w_wino, panels)
    W.winograd_correlate(x_wino, 1, 1, panels, np.ones(70, np.float32), y_wino, 2)
    folded = np.empty((16, 1, 17, 64), np.float32)  # 32 filters: folded products, the second half one channel short
    W.transform_filters(w_wino[:32].copy(), folded)
    W.winograd_correlate(x_wino, 1, 1, folded, np.ones(32, np.float32), y_fold, 2)
    dw_wino, db_wino = np.empty((33 * 9, 70), np.float32), np.empty(70)
    W.winograd_filter_gradient(x_wino, 1, 1, np.cos(np.arange(2100, dtype=np.float32)).reshape(2, 70, 3, 5), dw_wino, db_wino, 2)
    dw_fold, db_fold = np.empty((33 * 9, 32), np.float32), np.empty(32)
    W.winograd_filter_gradient(x_wino, 1, 1, np.cos(np.arange(960, dtype=np.float32)).reshape(2, 32, 3, 5), dw_fold, db_fold, 2)
    # folded, more channels than a 64-wide tile row (V's rows 80 wide) and an odd number of tiles: the spare
    # step reads V's row past the last tile, which must lie inside V (plain Python raises IndexError if not)
    x_wide = rng.standard_normal((1, 65, 1, 3)).astype(np.float32)
    dw_wide, db_wide = np.empty((65 * 9, 32), np.float32), np.empty(32)
    W.winograd_filter_gradient(x_wide, 1, 0, np.cos(np.arange(32, dtype=np.float32)).reshape(1, 32, 1, 1), dw_wide, db_wide, 1)
    pooled = F.maxpool2d_forward(x, 2, 1)
    dpool = F.maxpool2d_backward(np.ones_like(pooled), x, 2, 1)
    rois = np.array([[0, 0, 0, 7, 9], [1, 2, 1, 5, 3]], dtype=np.float64)
    roi = F.roi_pool_forward(x, rois, 2, 0.5)
    droi = F.roi_pool_backward(np.ones_like(roi), x, rois, 2, 0.5)
    relu = F.relu_forward(x)
    drelu = F.relu_backward(np.cos(x), x)
    drop, mask = F.dropout_forward(x, 0.5, 9)
    ddrop = F.dropout_backward(np.cos(x), mask)
    l2, dl2 = nn.l2_loss(x, 0.5 * x)
    ce, dce = nn.softmax_cross_entropy(x.reshape(2, -1), np.array([1, 3]))
    sl1, dsl1 = nn.smooth_l1(x, 0.5 * x, beta=0.7)
    mt, (dcls, dbox) = nn.multitask_loss(x[:, 0, 0, :3], np.array([0, 2]), x[:, 1, :3, :].reshape(2, 12), x[:, 0, 1, :], lam=2.0)
    p, g, v = x.copy(), np.cos(3 * x), np.zeros_like(x)
    F.sgd_update(p, g, v, lr=0.1, momentum=0.9, weight_decay=0.01)
    m2, v2, p2 = np.zeros_like(x), np.zeros_like(x), x.copy()
    F.adam_update(p2, g, m2, v2, step=1, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01)
    return dict(y=y, dx=dx, dw=dw, db=db, y1=y1, dx1=dx1, dw1=dw1, db1=db1, y16=y16, dx16=dx16, dw16=dw16, db16=db16, y_narrow=y_narrow, y_small=y_small, y_small_fold=y_small_fold, y_small0=y_small0, dw_blocks=dw_blocks, y_wino=y_wino, y_fold=y_fold, dw_wino=dw_wino, db_wino=db_wino.astype(np.float32), dw_fold=dw_fold, db_fold=db_fold.astype(np.float32), dw_wide=dw_wide, dx64=dx64, dw64=dw64, db64=db64, pooled=pooled, dpool=dpool, roi=roi, droi=droi, relu=relu, drelu=drelu, drop=drop, mask=mask, ddrop=ddrop, l2=np.array(l2), dl2=dl2,
                ce=np.array(ce), dce=dce, sl1=np.array(sl1), dsl1=dsl1, mt=np.array(mt), dcls=dcls, dbox=dbox, sgd=p, adam=p2)
'''


def test_kernels_run_as_plain_python_and_agree_with_compiled(tmp_path):
    from scratchdet import nn
    from scratchdet.nn import functional as F

    run_file = tmp_path / "run.py"
    run_file.write_text(RUN)
    out = tmp_path / "plain.npz"
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(out), str(run_file)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    namespace = {}
    exec(RUN, namespace)
    compiled = namespace["run"](np, nn, F)
    with np.load(out) as plain:
        assert set(plain.files) == set(compiled)
        for key, value in compiled.items():
            # float32 sums come out in a different order when compiled (fastmath lets the compiler regroup them):
            # their rounding is relative to the array's scale (a sum of large terms that cancels keeps their error)
            tolerance = 1e-4 if value.dtype == np.float32 else 1e-12
            scale = max(1.0, float(np.abs(value).max())) if value.dtype == np.float32 else 1.0
            np.testing.assert_allclose(plain[key], value, rtol=tolerance, atol=tolerance * scale, err_msg=key)
