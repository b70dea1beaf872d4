"""The federation's message protocol, in plain Python: names, and what each reply carries.

The Flower apps translate these to and from Flower records; nothing here imports Flower.

- ``query.describe``: the site answers who it is (site name, centre, role, image counts).
- ``train``: global weights in, local weights and training metrics out (or ``refused``).
- ``evaluate``: global weights in, sums and counts of the site's evaluation images out.
- ``query.unmask`` (masked aggregation): the round's ticket and the sites missing from the sum
  in, the site's own mask seed and its seeds with the missing sites out (signed).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import torch

DESCRIBE = "describe"
UNMASK = "unmask"
WEIGHTS = "weights"
METRICS = "metrics"
CONFIG = "config"
SITE = "site"
COUNTS = "counts"
REFUSED = "refused"
NUM_EXAMPLES = "num-examples"


def weights_digest(weights: Mapping[str, torch.Tensor | np.ndarray]) -> str:
    """SHA-256 of a model's weights (names, shapes and values), to recognise a repeated request."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        value = weights[name]
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        digest.update(name.encode())
        digest.update(str(array.shape).encode() + str(array.dtype).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()
