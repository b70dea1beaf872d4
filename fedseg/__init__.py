"""fedseg: federated medical image segmentation across hospitals.

The library is plain Python and PyTorch; it never imports Flower. The Flower
apps in ``sites/`` and ``server/`` are thin layers over it.

Importing fedseg applies the CPU allocator and thread settings of ``fedseg.runtime`` to the
process (once), so every entry point is fast without anything for the user to set.
"""

from fedseg import runtime as _runtime

__version__ = "0.1.0"

_runtime.configure()
