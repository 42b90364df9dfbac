"""Write a synthetic ``imagefolder:`` of real JPEGs (varied content, one file per image) and a
random-init ResNet-18 checkpoint, for the streaming benchmark (eval/streaming.yaml).

Every image is drawn on its own: a two-colour gradient, random ellipses, rectangles and lines, and
pixel noise, with a class-dependent dominant hue, then saved as a JPEG (quality 85). Nothing is a
copy of another file, so the decoder does real work for each sample.

    python eval/make_imagefolder.py --out /tmp/stream-data --images 20000 --size 224
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def draw(rng: np.random.Generator, size: int, label: int, n_classes: int):
    from PIL import Image, ImageDraw

    hue = label / n_classes
    base = np.array([np.cos(2 * np.pi * (hue + k / 3)) for k in range(3)]) * 90 + 128
    a, b = base + rng.normal(0, 30, 3), base[::-1] + rng.normal(0, 30, 3)
    t = np.linspace(0, 1, size)[None, :, None]
    if rng.random() < 0.5:
        t = t.transpose(1, 0, 2)
    img = (a * (1 - t) + b * t) * np.ones((size, size, 1))
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(4, 12))):
        x0, y0 = rng.integers(0, size, 2)
        w, h = rng.integers(8, size // 2, 2)
        colour = tuple(int(c) for c in np.clip(base + rng.normal(0, 60, 3), 0, 255))
        shape = rng.integers(0, 3)
        if shape == 0:
            d.ellipse([x0, y0, x0 + w, y0 + h], fill=colour)
        elif shape == 1:
            d.rectangle([x0, y0, x0 + w, y0 + h], fill=colour)
        else:
            d.line([x0, y0, x0 + w, y0 + h], fill=colour, width=int(rng.integers(1, 8)))
    px = np.asarray(im, dtype=np.int16) + rng.integers(-12, 13, (size, size, 3))
    return Image.fromarray(np.clip(px, 0, 255).astype(np.uint8), "RGB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="the folder to create (DIR/<class>/<image>.jpg)")
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint", type=Path, default=None,
                    help="also save a random-init torchvision resnet18(num_classes=CLASSES) state_dict here")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    for c in range(args.classes):
        (args.out / f"class{c:02d}").mkdir(parents=True, exist_ok=True)
    for i in range(args.images):
        label = i % args.classes
        draw(rng, args.size, label, args.classes).save(
            args.out / f"class{label:02d}" / f"{i:06d}.jpg", quality=85)
        if (i + 1) % 2000 == 0:
            print(f"{i + 1} images, {time.perf_counter() - t0:.0f} s", flush=True)
    if args.checkpoint is not None:
        import torch
        import torchvision

        torch.manual_seed(args.seed)
        torch.save(torchvision.models.resnet18(num_classes=args.classes).state_dict(), args.checkpoint)
    size = sum(f.stat().st_size for f in args.out.rglob("*.jpg"))
    print(f"wrote {args.images} JPEGs ({size / 1e6:.0f} MB) to {args.out} in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
