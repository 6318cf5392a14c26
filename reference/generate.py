"""Write the frozen outputs of trusted libraries that the tests compare against.

    python reference/generate.py            # every source
    python reference/generate.py coco nn    # only these

Needs the `reference` extra (PyTorch CPU, OpenCV contrib, pycocotools, faster-coco-eval) and
scikit-image. Each source is a module `reference/_<name>.py` with ``generate(outdir) -> list of
paths written``; every file records the library versions and the seeds of its inputs.
"""

import argparse
import importlib
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
OUTPUTS = HERE / "outputs"

# name -> what it freezes
SOURCES = {
    "boxes": "OpenCV NMSBoxes / NMSBoxesBatched and pycocotools box IoU on seeded boxes",
    "coco": "pycocotools COCOeval statistics on seeded random datasets",
    "nn": "PyTorch outputs and gradients of conv, pooling, linear, losses, RoI pooling",
    "proposals": "scikit-image Felzenszwalb segmentations and OpenCV Selective Search on real photographs",
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="*", metavar="SOURCE", help=f"one of {', '.join(SOURCES)} (default: all)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.sources) - set(SOURCES))
    if unknown:
        parser.error(f"unknown source(s) {', '.join(unknown)}; choose from {', '.join(SOURCES)}")
    sys.path.insert(0, str(HERE))
    OUTPUTS.mkdir(exist_ok=True)
    for name in args.sources or SOURCES:
        module = importlib.import_module(f"_{name}")
        for path in module.generate(OUTPUTS):
            print(f"{name}: wrote {pathlib.Path(path).relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
