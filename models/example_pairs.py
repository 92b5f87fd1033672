"""Write a small demonstration dataset for `python -m models.train_fusion`.

    python -m models.example_pairs runs/example     # -> runs/example/pairs.csv and 40 PNG crops

Crops and mirror images of four scikit-image photos (a cat, an espresso, a rocket, an astronaut), each
paired with its own description (label 1) and the other three (label 0): 160 rows. It shows the data
format and lets the training command run end to end; a useful head needs your own pairs.
"""

from __future__ import annotations

import csv
import os
import sys

SUBJECTS = {
    "chelsea.png": "a photo of a cat",
    "coffee.png": "a cup of espresso",
    "rocket.jpg": "a rocket on its launch pad",
    "astronaut.png": "an astronaut in a space suit",
}


def write_example_pairs(out_dir: str) -> str:
    """Write the crops and pairs.csv into out_dir; returns the CSV's path."""
    import skimage
    from PIL import Image, ImageOps

    os.makedirs(out_dir, exist_ok=True)
    folder = os.path.join(os.path.dirname(skimage.__file__), "data")
    rows = []
    for photo, own_text in SUBJECTS.items():
        with Image.open(os.path.join(folder, photo)) as image:
            image = image.convert("RGB")
        w, h = image.size
        boxes = [(0, 0, w, h), (0, 0, w * 3 // 4, h * 3 // 4), (w // 4, h // 4, w, h),
                 (w // 8, 0, w * 7 // 8, h), (0, h // 8, w, h * 7 // 8)]
        for k, box in enumerate(boxes):
            for flip in (False, True):
                crop = image.crop(box)
                name = f"{os.path.splitext(photo)[0]}_{k}_{int(flip)}.png"
                (ImageOps.mirror(crop) if flip else crop).save(os.path.join(out_dir, name))
                rows += [{"image": name, "text": text, "label": int(text == own_text)} for text in SUBJECTS.values()]
    path = os.path.join(out_dir, "pairs.csv")
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["image", "text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m models.example_pairs OUT_DIR")
    print(f"wrote {write_example_pairs(sys.argv[1])}")
