"""`benchmarks/host_time.py` measures what it names (one operation, one call, here)."""

import importlib.util
import pathlib

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "host_time.py"


def test_host_time_measures_an_operation_in_microseconds():
    spec = importlib.util.spec_from_file_location("host_time_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    names = ["SGD step alone (8 parameters)"]
    assert names[0] in module.operations() and any(name.startswith("Fast R-CNN") for name in module.detector_operations())
    result = module.measure(names, calls=1, repeats=1)
    assert list(result) == names and 0 < result[names[0]] < 1e6
