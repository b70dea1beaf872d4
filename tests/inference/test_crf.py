from __future__ import annotations

import numpy as np

from fedseg.inference.crf import CRFConfig, CRFPool, refine
from fedseg.metrics import score_image


def _scene(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An image with a bright disc, its truth, and a noisy prediction of it."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:96, 0:96]
    truth = (yy - 48) ** 2 + (xx - 44) ** 2 < 26**2
    image = np.where(truth[..., None], 200, 60).astype(np.float32) + rng.normal(0, 8, (96, 96, 3))
    image = np.clip(image, 0, 255).astype(np.uint8)
    probabilities = np.where(truth, 0.7, 0.3) + rng.normal(0, 0.25, truth.shape)
    return image, truth, np.clip(probabilities, 0, 1).astype(np.float32)


def test_crf_moves_a_noisy_prediction_toward_the_truth() -> None:
    image, truth, probabilities = _scene(0)
    before = score_image(probabilities > 0.5, truth, with_hd95=False).dice
    after = score_image(refine(image, probabilities, CRFConfig()) > 0.5, truth, with_hd95=False).dice
    assert before < 0.9 and after > before + 0.05


def test_parallel_pool_returns_serial_results_in_order() -> None:
    scenes = [_scene(seed) for seed in range(5)]
    config = CRFConfig(iterations=3)
    serial = [refine(image, probabilities, config) for image, _, probabilities in scenes]
    results = []
    with CRFPool(config, workers=2, max_pending=2) as pool:
        for index, (image, _, probabilities) in enumerate(scenes):
            results += list(pool.submit(index, image, probabilities))
        results += list(pool.drain())
    assert [tag for tag, _ in results] == list(range(5))
    assert all(np.allclose(refined, expected, atol=1e-6) for (_, refined), expected in zip(results, serial))
