"""Writes imagenet_classes.txt: the 1000 ImageNet-1k class names, one per line, in class-index order.

The names are torchvision's own (the `categories` metadata that ships with its ImageNet weights),
so line i + 1 is the name of logit i of every torchvision ImageNet classifier: line 1 "tench",
line 282 (index 281) "tabby". They are read by `resnet_wgpu::data::image::labels()`.

Run: python3 assets/make_imagenet_classes.py  (torchvision; downloads nothing)
"""
import os

from torchvision.models import ResNet50_Weights

categories = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
assert len(categories) == 1000, len(categories)
assert all(name and "\n" not in name and name == name.strip() for name in categories)

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "imagenet_classes.txt")
with open(out, "w", encoding="utf-8", newline="\n") as f:
    f.write("\n".join(categories) + "\n")
print(f"wrote {out}: {len(categories)} classes; 0 = {categories[0]!r}, 281 = {categories[281]!r}")
