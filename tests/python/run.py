"""Runs bridge test cases for ctest: run.py --seqmix PATH module.Case [...].

Exits 77 (ctest's SKIP_RETURN_CODE for these tests) when torch, h5py, yaml or numpy
cannot be imported, so that a machine without them reports the tests as skipped
rather than passed or failed."""

import importlib
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv):
    if len(argv) >= 2 and argv[0] == "--seqmix":
        os.environ["SEQMIX_BINARY"] = argv[1]
        argv = argv[2:]
    for module in ("numpy", "h5py", "yaml", "torch"):
        try:
            importlib.import_module(module)
        except ImportError as e:
            print(f"skipped: the bridge tests need {module} ({e}); on Debian: apt-get install python3-torch "
                  "python3-h5py python3-yaml python3-numpy", file=sys.stderr)
            return 77
    sys.path.insert(0, HERE)
    suite = unittest.defaultTestLoader.loadTestsFromNames(argv)
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    return 0 if result.wasSuccessful() and result.testsRun > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
