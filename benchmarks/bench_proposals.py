"""Region proposals: scratchdet's Selective Search against OpenCV's, on real COCO photographs.

Run: ``python -m pytest benchmarks/bench_proposals.py -s`` (``-s`` shows the tables). The images are
`../shared/data/coco128` beside the repository (126 COCO photographs, 929 boxes); the suite is skipped
without it. ``SCRATCHDET_BENCH_IMAGES=N`` sets how many of them each mode uses (default 20; quality
mode on all 126 takes a while). Both libraries get the same decoded RGB images and two threads
(``cv2.setNumThreads(2)``; scratchdet's strategies run on two threads).

What it prints:
1. per mode (fast, quality): seconds per image, boxes per image, recall at IoU 0.5 / 0.7 and MABO,
   overall and for small / medium / large boxes, for scratchdet and OpenCV, and the speed ratio;
   also scratchdet's recall when it keeps only as many boxes as OpenCV returned for that image;
2. time against image size (0.25 to 2 megapixels) for both;
3. how many sliding windows reach the recall Selective Search gets with 2,000 boxes, and a figure of
   recall against the number of proposals (``benchmarks/figures/proposals_recall.png``);
4. Felzenszwalb segmentation against scikit-image's;
5. on a machine with a GPU, the CUDA per-pixel stages against the CPU kernels.
"""

import json
import os
import pathlib
import time

import numpy as np
import pytest

from scratchdet.data.images import load_image
from scratchdet.eval.recall import proposal_recall, recall_curve
from scratchdet.proposals import adjusted_rand_index, count_sliding_windows, felzenszwalb, selective_search, sliding_windows

ROOT = pathlib.Path(__file__).resolve().parents[1]
COCO128 = ROOT.parent / "shared" / "data" / "coco128"
N_IMAGES = int(os.environ.get("SCRATCHDET_BENCH_IMAGES", "20"))
FIGURES = ROOT / "benchmarks" / "figures"  # the README shows the figures drawn here



def _cv2():
    """OpenCV with its contrib modules, or a skip."""
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2, "ximgproc"):
        pytest.skip("OpenCV without the contrib modules (cv2.ximgproc)")
    cv2.setNumThreads(2)
    return cv2


def opencv_selective_search(bgr, mode):
    """OpenCV's Selective Search on a BGR image: (N, 4) float64 xyxy."""
    cv2 = _cv2()
    search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    search.setBaseImage(bgr)
    if mode == "fast":
        search.switchToSelectiveSearchFast()
    else:
        search.switchToSelectiveSearchQuality()
    rects = search.process().astype(np.float64)  # (N, 4) x, y, w, h
    return np.c_[rects[:, :2], rects[:, :2] + rects[:, 2:]]


@pytest.fixture(scope="module")
def coco():
    """[(file name, RGB image, (G, 4) xyxy gt boxes)] for the images that have boxes."""
    annotations = COCO128 / "annotations.json"
    if not annotations.exists():
        pytest.skip(f"{COCO128} is not here (126 COCO photographs beside the repository)")
    data = json.loads(annotations.read_text())
    boxes = {}
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        boxes.setdefault(a["image_id"], []).append([x, y, x + w, y + h])
    out = []
    for info in sorted(data["images"], key=lambda i: i["id"]):
        if info["id"] in boxes:
            out.append((info["file_name"], load_image(COCO128 / "images" / info["file_name"]), np.array(boxes[info["id"]])))
    return out


def _row(name, seconds, n_boxes, result):
    sizes = result["by_size"]
    cells = [f"{name:<22}", f"{seconds:7.3f}", f"{n_boxes:7.0f}", f"{result['recall'][0.5]:6.3f}",
             f"{result['recall'][0.7]:6.3f}", f"{result['mabo']:6.3f}"]
    cells += [f"{sizes[s]['recall'][0.5]:6.3f}/{sizes[s]['mabo']:5.3f}" for s in ("small", "medium", "large")]
    return " ".join(cells)


HEADER = (f"{'method':<22} {'s/img':>7} {'boxes':>7} {'R@0.5':>6} {'R@0.7':>6} {'MABO':>6} "
          f"{'small R/MABO':>12} {'medium R/MABO':>12} {'large R/MABO':>12}")


@pytest.mark.parametrize("mode", ["fast", "quality"])
def test_selective_search_vs_opencv(coco, mode, benchmark):
    _cv2()
    images = coco[:N_IMAGES]
    selective_search(images[0][1], mode=mode)  # warm-up: Numba kernels from the cache
    ours_t, cv_t, ours_cpu, cv_cpu, ours_boxes, cv_boxes, matched = [], [], [], [], [], [], []
    for _, rgb, _ in images:
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        start, start_cpu = time.perf_counter(), time.process_time()
        boxes = selective_search(rgb, mode=mode, seed=0)
        ours_t.append(time.perf_counter() - start)
        ours_cpu.append(time.process_time() - start_cpu)
        start, start_cpu = time.perf_counter(), time.process_time()
        theirs = opencv_selective_search(bgr, mode)
        cv_t.append(time.perf_counter() - start)
        cv_cpu.append(time.process_time() - start_cpu)
        ours_boxes.append(boxes)
        cv_boxes.append(theirs)
        matched.append(boxes[: len(theirs)])
    gts = [g for _, _, g in images]
    ours = proposal_recall(gts, ours_boxes, iou_thresholds=(0.5, 0.7))
    theirs = proposal_recall(gts, cv_boxes, iou_thresholds=(0.5, 0.7))
    ours_matched = proposal_recall(gts, matched, iou_thresholds=(0.5, 0.7))
    speedup = np.mean(cv_t) / np.mean(ours_t)
    benchmark.pedantic(lambda: selective_search(images[0][1], mode=mode), rounds=1, iterations=1)
    benchmark.extra_info.update(
        mode=mode, n_images=len(images), ours_s_per_image=float(np.mean(ours_t)), opencv_s_per_image=float(np.mean(cv_t)),
        speedup=float(speedup), ours_cpu_s_per_image=float(np.mean(ours_cpu)), opencv_cpu_s_per_image=float(np.mean(cv_cpu)),
        ours_mabo=ours["mabo"], opencv_mabo=theirs["mabo"],
        ours_recall_05=ours["recall"][0.5], opencv_recall_05=theirs["recall"][0.5],
    )
    print(f"\nSelective Search, {mode} mode, {len(images)} COCO images, {ours['num_gt']} boxes")
    print(HEADER)
    print(_row("scratchdet", np.mean(ours_t), np.mean([len(b) for b in ours_boxes]), ours))
    print(_row("OpenCV", np.mean(cv_t), np.mean([len(b) for b in cv_boxes]), theirs))
    print(_row("scratchdet, top-N_cv", np.mean(ours_t), np.mean([len(b) for b in matched]), ours_matched))
    print(f"scratchdet is {speedup:.1f}x faster than OpenCV ({mode}, wall clock); per image: "
          f"scratchdet {min(ours_t):.3f}-{max(ours_t):.3f} s, OpenCV {min(cv_t):.3f}-{max(cv_t):.3f} s")
    print(f"CPU time (all threads) per image: scratchdet {np.mean(ours_cpu):.3f} s, OpenCV {np.mean(cv_cpu):.3f} s "
          f"-> {np.mean(cv_cpu) / np.mean(ours_cpu):.1f}x less work")
    assert ours["recall"][0.5] >= theirs["recall"][0.5] and ours["mabo"] >= theirs["mabo"] - 0.01


def test_time_against_image_size(coco):
    import skimage.transform

    _cv2()
    _, rgb, _ = coco[0]
    print("\nTime against image size (fast mode, one COCO image resized)")
    print(f"{'megapixels':>10} {'size':>11} {'scratchdet s':>13} {'OpenCV s':>9} {'ratio':>6}")
    for megapixels in (0.25, 0.5, 1.0, 2.0):
        factor = np.sqrt(megapixels * 1e6 / (rgb.shape[0] * rgb.shape[1]))
        shape = (int(round(rgb.shape[0] * factor)), int(round(rgb.shape[1] * factor)))
        image = np.round(skimage.transform.resize(rgb, shape, anti_aliasing=True) * 255).astype(np.uint8)
        selective_search(image, mode="fast")  # warm-up
        start = time.perf_counter()
        selective_search(image, mode="fast")
        ours = time.perf_counter() - start
        start = time.perf_counter()
        opencv_selective_search(np.ascontiguousarray(image[:, :, ::-1]), "fast")
        theirs = time.perf_counter() - start
        print(f"{megapixels:10.2f} {shape[1]:5d}x{shape[0]:<5d} {ours:13.3f} {theirs:9.3f} {theirs / ours:6.1f}")


# sliding-window grids from coarse to dense: (sizes, ratios, stride)
WINDOW_GRIDS = [  # (sizes, aspect ratios, stride as a fraction of the window), by window count
    ((64, 128, 256), (1.0,), 0.5),
    ((32, 64, 128, 256), (0.5, 1.0, 2.0), 0.5),
    ((32, 48, 64, 96, 128, 192, 256, 384), (0.5, 1.0, 2.0), 0.5),
    ((32, 48, 64, 96, 128, 192, 256, 384), (0.33, 0.5, 1.0, 2.0, 3.0), 0.5),
    ((24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256, 320, 384, 448), (0.5, 1.0, 2.0), 0.5),
    ((24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256, 320, 384, 448), (0.33, 0.5, 1.0, 2.0, 3.0), 0.5),
    ((24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256, 320, 384, 448), (0.25, 0.33, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0), 0.5),
    ((24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256, 320, 384, 448), (0.33, 0.5, 1.0, 2.0, 3.0), 0.25),
    ((24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256, 320, 384, 448), (0.25, 0.33, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0), 0.25),
    ((16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512),
     (0.25, 0.33, 0.5, 0.67, 0.75, 1.0, 1.33, 1.5, 2.0, 3.0, 4.0), 0.125),
]


def test_sliding_windows_needed_for_selective_search_recall(coco):
    images = coco[:N_IMAGES]
    gts = [g for _, _, g in images]
    proposals = [selective_search(rgb, mode="fast") for _, rgb, _ in images]
    ss_curve = recall_curve(gts, proposals, counts=(10, 20, 50, 100, 200, 500, 1000, 2000, 5000), iou_threshold=0.5)
    target = proposal_recall(gts, proposals, iou_thresholds=0.5, max_proposals=2000)["recall"][0.5]
    print(f"\nSelective Search fast, first 2,000 boxes: recall@0.5 = {target:.3f} on {len(images)} images")
    print(f"{'windows per image':>18} {'recall@0.5':>10}  grid")
    window_counts, window_recalls, needed = [], [], None
    for sizes, ratios, stride in WINDOW_GRIDS:
        windows = [sliding_windows(rgb.shape, sizes=sizes, ratios=ratios, stride=stride) for _, rgb, _ in images]
        count = np.mean([count_sliding_windows(rgb.shape, sizes=sizes, ratios=ratios, stride=stride) for _, rgb, _ in images])
        recall = proposal_recall(gts, windows, iou_thresholds=0.5)["recall"][0.5]
        window_counts.append(count)
        window_recalls.append(recall)
        if needed is None and recall >= target:
            needed = count
        print(f"{count:18.0f} {recall:10.3f}  {len(sizes)} sizes x {len(ratios)} ratios, stride {stride}")
    print("sliding windows needed to match it: " + (f"{needed:.0f} per image" if needed else f"more than {window_counts[-1]:.0f} per image"))
    from scratchdet.viz import plot_recall_curves

    path = plot_recall_curves(
        {"Selective Search (fast)": (ss_curve["counts"], ss_curve["recall"]), "sliding windows": (window_counts, window_recalls)},
        FIGURES / "proposals_recall.png", iou_threshold=0.5, title=f"{len(images)} COCO images",
    )
    print(f"figure: {path}")


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea", "rocket"])
def test_felzenszwalb_vs_skimage(name, compare_with_peer):
    import skimage.data
    from skimage.segmentation import felzenszwalb as skimage_felzenszwalb

    image = getattr(skimage.data, name)()
    labels = compare_with_peer(
        lambda: felzenszwalb(image, scale=100, sigma=0.8, min_size=50),
        lambda: skimage_felzenszwalb(image, scale=100, sigma=0.8, min_size=50),
        "skimage.segmentation.felzenszwalb", repeat=3,
    )
    theirs = skimage_felzenszwalb(image, scale=100, sigma=0.8, min_size=50)
    agreement = adjusted_rand_index(labels, theirs)
    print(f"{name}: {labels.max() + 1} segments (scikit-image {theirs.max() + 1}), adjusted Rand index {agreement:.6f}")
    assert agreement > 0.999  # the same segments (README: "adjusted Rand index 1.0 on its photographs")


def test_cuda_pixel_stages_vs_cpu():
    """Colour conversion, smoothing, gradients, edge weights, bins and region histograms: GPU vs CPU."""
    from scratchdet import backend

    if "cuda" not in backend.available() or backend.simulated():
        pytest.skip("needs a CUDA GPU")
    import skimage.data
    import skimage.transform
    from numba import cuda

    from scratchdet.proposals import pixels

    def timed(fn, repeat=5):
        fn()
        cuda.synchronize()
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        return best

    photo = skimage.data.astronaut()
    print(f"\n{'stage':<18} {'pixels':>9} {'CPU ms':>8} {'GPU ms':>8} {'ratio':>6}")
    for megapixels in (0.3, 2.0):
        factor = np.sqrt(megapixels * 1e6 / (photo.shape[0] * photo.shape[1]))
        shape = (int(photo.shape[0] * factor), int(photo.shape[1] * factor))
        rgb = np.round(skimage.transform.resize(photo, shape, anti_aliasing=True) * 255).astype(np.uint8)
        image = pixels.convert_colour(rgb, "lab")
        gx, gy = pixels.gaussian_gradients(image, 1.0)
        colour_bin, texture_bin = pixels.colour_bins(image), pixels.texture_bins(gx, gy)
        labels = felzenszwalb(rgb, scale=100, sigma=0.8, min_size=100)
        n = int(labels.max()) + 1
        d = {name: cuda.to_device(a) for name, a in
             dict(rgb=rgb, image=image, gx=gx, gy=gy, cb=colour_bin, tb=texture_bin, labels=labels).items()}
        stages = [
            ("convert lab", lambda: pixels.convert_colour(rgb, "lab"), lambda: pixels.convert_colour(d["rgb"], "lab")),
            ("smooth", lambda: pixels.smooth(image, 0.8), lambda: pixels.smooth(d["image"], 0.8)),
            ("gradients", lambda: pixels.gaussian_gradients(image, 1.0), lambda: pixels.gaussian_gradients(d["image"], 1.0)),
            ("grid weights", lambda: pixels.grid_weights(image), lambda: pixels.grid_weights(d["image"])),
            ("texture bins", lambda: pixels.texture_bins(gx, gy), lambda: pixels.texture_bins(d["gx"], d["gy"])),
            ("region histograms", lambda: pixels.region_histograms(labels, n, colour_bin, texture_bin),
             lambda: pixels.region_histograms(d["labels"], n, d["cb"], d["tb"])),
        ]
        for name, on_cpu, on_gpu in stages:
            cpu_s, gpu_s = timed(on_cpu), timed(on_gpu)
            print(f"{name:<18} {rgb.shape[0] * rgb.shape[1]:9d} {cpu_s * 1e3:8.2f} {gpu_s * 1e3:8.2f} {cpu_s / gpu_s:6.1f}")
        np.testing.assert_array_equal(pixels.texture_bins(d["gx"], d["gy"]).copy_to_host(), texture_bin)


@pytest.mark.parametrize("mode", ["fast", "quality"])
@pytest.mark.parametrize("name", ["chelsea", "coffee", "astronaut"])
def test_selective_search_vs_opencv_on_skimage_photos(name, mode, compare_with_peer):
    """The same comparison on scikit-image's photographs (no COCO needed), best of a few calls each."""
    import skimage.data

    _cv2()
    rgb = getattr(skimage.data, name)()
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    boxes = compare_with_peer(
        lambda: selective_search(rgb, mode=mode), lambda: opencv_selective_search(bgr, mode),
        f"OpenCV selective search ({mode})", repeat=3 if mode == "fast" else 1,
    )
    assert len(boxes) > 100
