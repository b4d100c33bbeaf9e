"""Does the classifier look at the tumor? Grad-CAM against the annotated tumor masks.

Two scores per set of images, each beside the same score for a map that knows nothing about the image
but where the brain is (``centred_baseline``: a Gaussian centred on the brain box, sigma a quarter of
its width and height, zero outside it). A model whose scores do not beat the baseline's is looking at
the middle of the brain, not at the tumor.

- pointing game: the share of images whose map peak lies inside the tumor mask;
- mass inside: the share of the map's total mass that lies inside the mask (mean over images).

All maps and masks are at each image's own size (``jaxmri.inference.outputs.paste_back``).
"""

import numpy as np


def centred_baseline(size, box) -> np.ndarray:
    """float32 (H, W): a Gaussian centred on ``box`` (x0, y0, x1, y1), sigma = box side / 4, 0 outside it."""
    height, width = (int(v) for v in size)
    x0, y0, x1, y1 = (int(v) for v in box)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    cx, cy, sx, sy = (x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2, max((x1 - x0) / 4, 1.0), max((y1 - y0) / 4, 1.0)
    heat = np.exp(-0.5 * (((xs - cx) / sx) ** 2 + ((ys - cy) / sy) ** 2))
    outside = np.ones((height, width), bool)
    outside[y0:y1, x0:x1] = False
    heat[outside] = 0.0
    return heat


def pointing_hit(heat: np.ndarray, mask: np.ndarray) -> bool:
    """Whether the (first) maximum of ``heat`` (H, W) lies inside the boolean ``mask`` (H, W)."""
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return bool(mask[y, x])


def mass_inside(heat: np.ndarray, mask: np.ndarray) -> float:
    """Share of ``heat``'s total inside ``mask`` (0 for an all-zero map)."""
    total = float(np.sum(heat))
    return float(np.sum(heat * mask) / total) if total > 0 else 0.0


def localisation_scores(heats: list[np.ndarray], masks: list[np.ndarray], boxes: list) -> dict:
    """Pointing game and mass inside for the model's maps and for the centred baseline.

    ``heats`` and ``masks`` are per image (H, W) at the image's own size; ``boxes`` its brain box.
    """
    if not heats:
        raise ValueError("no images with a tumor mask to score.")
    base = [centred_baseline(m.shape, b) for m, b in zip(masks, boxes)]
    per_image = [{"gradcam_hit": pointing_hit(h, m), "gradcam_mass_inside": mass_inside(h, m),
                  "baseline_hit": pointing_hit(c, m), "baseline_mass_inside": mass_inside(c, m)}
                 for h, c, m in zip(heats, base, masks)]

    def score(name):
        return {"pointing_game": float(np.mean([r[f"{name}_hit"] for r in per_image])),
                "mass_inside": float(np.mean([r[f"{name}_mass_inside"] for r in per_image]))}

    return {"images": len(heats), "gradcam": score("gradcam"), "centred_baseline": score("baseline"),
            "mask_area": float(np.mean([m.mean() for m in masks])), "per_image": per_image}
