"""Loads a checkpoint of `resnet-wgpu train folder` into torchvision's resnetNN(num_classes=K) with
load_state_dict(strict=True), and compares its logits on photos with `resnet-wgpu infer --json`'s.

    python3 tests/torchvision_load.py runs/photos-resnet18/best.safetensors a.jpg b.png ...

The checkpoint's metadata gives the model, the class names and the evaluation transform; keys that
start with `optimizer.` are the run's training state, not the model's, and are left out. Needs
torch, torchvision, safetensors and Pillow, and the release binary (`cargo build --release`, or
$RESNET_WGPU). Exits non-zero when a key is missing or unexpected or a logit differs from ours by
more than 1e-3 of the largest. Use PNGs or photos without an EXIF rotation: `infer` turns photos
upright, PIL.Image.open does not.
"""

import json
import os
import subprocess
import sys

import torch
import torchvision
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from torchvision import transforms


def main():
    weights, photos = sys.argv[1], sys.argv[2:]
    if not photos:
        sys.exit(__doc__)
    with safe_open(weights, "pt") as f:
        meta = f.metadata()
    classes, t = json.loads(meta["classes"]), json.loads(meta["transform"])
    state = {k: v for k, v in load_file(weights).items() if not k.startswith("optimizer.")}
    model = getattr(torchvision.models, meta["arch"])(num_classes=len(classes))
    model.load_state_dict(state, strict=True)
    model.eval()
    prepare = transforms.Compose([
        transforms.Resize(t["resize"]),
        transforms.CenterCrop(t["crop"]),
        transforms.ToTensor(),
        transforms.Normalize(t["mean"], t["std"]),
    ])
    with torch.no_grad():
        theirs = model(torch.stack([prepare(Image.open(p).convert("RGB")) for p in photos]))

    binary = os.environ.get("RESNET_WGPU", "target/release/resnet-wgpu")
    out = subprocess.run([binary, "infer", *photos, "--weights", weights, "--json"],
                         check=True, capture_output=True, text=True)
    ours = torch.tensor([r["logits"] for r in json.loads(out.stdout)["results"]])
    worst = (ours - theirs).abs().max().item()
    scale = theirs.abs().max().item()
    print(f"{meta['arch']} ({len(classes)} classes) loads with strict=True; "
          f"largest logit difference {worst:.2e} (largest logit {scale:.2f})")
    for path, a, b in zip(photos, ours, theirs):
        print(f"  {path}: ours {classes[a.argmax()]}, torchvision {classes[b.argmax()]}")
    if worst > 1e-3 * max(scale, 1.0):
        sys.exit("the logits differ")


if __name__ == "__main__":
    main()
