"""OpenCV's optical-flow estimators on the transfer fixtures: the outside reference for
`face::flow` (ARCHITECTURE.md, "Moving the photo's own pixels").

Each case's BEFORE and AFTER (tests/fixtures/golden/transfer) are area-reduced to the side the
edit renders at, and the backward flow (after(p) ≈ before(p + d(p))) is compared with the known
field where it moves a 1024² frame pixel by more than 0.5 px: mean and largest end-point error,
in 1024² pixels, and the time of one flow. Needs numpy, Pillow and opencv-python-headless (not
the project's: a test-only reference).

    python benches/flow_reference.py [--side 256]
"""

import argparse
import json
import os
import time

import cv2
import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "tests", "fixtures", "golden", "transfer")
CASES = ("astronaut_bignose", "astronaut_top_smallnose")


def frame(path, side):
    """A 1024² RGB frame area-reduced to side² (8-bit)."""
    img = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
    k = 1024 // side
    return np.round(img.reshape(side, k, side, k, 3).mean(axis=(1, 3))).astype(np.uint8)


def true_field(meta, side):
    """The fixture's field on a side² grid, in that grid's pixels: (side, side, 2)."""
    scale = 1024.0 / side
    centres = (np.arange(side) + 0.5) * scale
    fx, fy = np.meshgrid(centres, centres)
    dx, dy = fx - meta["center"][0], fy - meta["center"][1]
    g = np.exp(-(dx * dx + dy * dy) / (2 * meta["sigma"] ** 2))
    return np.stack([-meta["strength"] * dx * g, -meta["strength"] * dy * g], -1) / scale


def estimators():
    """name → flow(prev, next) on 8-bit grey pictures."""
    out = {}
    for name, preset in (("DIS ultrafast", cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST),
                         ("DIS fast", cv2.DISOPTICAL_FLOW_PRESET_FAST),
                         ("DIS medium", cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)):
        dis = cv2.DISOpticalFlow_create(preset)
        out[name] = lambda a, b, dis=dis: dis.calc(a, b, None)
    out["Farneback"] = lambda a, b: cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 5, 15, 5, 7, 1.5, 0)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", type=int, default=256)
    args = ap.parse_args()
    cv2.setNumThreads(2)
    side = args.side
    print("| estimator | case | mean EPE where it moves (1024² px) | largest EPE | ms |")
    print("|---|---|---:|---:|---:|")
    for name, flow in estimators().items():
        for case in CASES:
            with open(os.path.join(FIXTURES, case + ".json")) as f:
                meta = json.load(f)
            before = frame(os.path.join(FIXTURES, case + "_before.png"), side)
            after = frame(os.path.join(FIXTURES, case + "_after.png"), side)
            grey = lambda x: cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)  # noqa: E731
            start = time.perf_counter()
            # OpenCV's flow(prev, next) says where each pixel of prev is in next: prev = AFTER.
            d = flow(grey(after), grey(before))
            ms = (time.perf_counter() - start) * 1e3
            truth = true_field(meta, side)
            scale = 1024.0 / side
            moved = np.linalg.norm(truth, axis=-1) > 0.5 / scale
            epe = np.linalg.norm(d - truth, axis=-1) * scale
            print("| %s | %s | %.3f | %.2f | %.1f |" % (name, case, epe[moved].mean(), epe.max(), ms))


if __name__ == "__main__":
    main()
