"""fedseg: federated medical image segmentation across hospitals.

The library is plain Python and PyTorch; it never imports Flower. The Flower
apps in ``sites/`` and ``server/`` are thin layers over it.
"""

__version__ = "0.1.0"
