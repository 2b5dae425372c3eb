"""PyTorch's figures for the configurations `resnet-wgpu bench` times, to put side by side with ours.

The same networks (torchvision's ImageNet ResNets on 224x224 images; the paper's CIFAR ResNets on
32x32 with option-A or option-B shortcuts), the same step (training: forward, mean cross-entropy,
backward and an SGD step with momentum 0.9 and weight decay 1e-4; inference: the forward in eval
mode under no_grad, where PyTorch keeps batch norm as a layer and ours folds it into the convs),
random inputs and labels made once on the device, fp32 with TF32 off (issue 6 compares fp32
against fp32), cuDNN's autotune on (ours autotunes too), NCHW. Each step is timed on
the wall clock between device synchronisations, after the warm-up steps; medians, p10 and p90.

Run (PyTorch 2.x, torchvision, safetensors for the fixture script it takes the CIFAR block from):
  python3 benches/pytorch/bench.py --model resnet50 --batch 64 --mode both --iters 20 --json torch.json
  python3 benches/pytorch/bench.py --model resnet20 --shortcut b --batch 32,128 --device cpu
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

# The paper's CIFAR block (option A or B), as the PyTorch goldens of the tests define it.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures"))
from make_resnet8_golden import BasicBlock  # noqa: E402

IMAGENET = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
CIFAR = {"resnet20": 3, "resnet32": 5, "resnet44": 7, "resnet56": 9, "resnet110": 18}


class CifarResNet(nn.Module):
    def __init__(self, blocks, shortcut):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, inp = [], 16
        for out, stride in [(16, 1), (32, 2), (64, 2)]:
            layers.append(nn.Sequential(*[BasicBlock(inp if i == 0 else out, out, stride if i == 0 else 1, shortcut)
                                          for i in range(blocks)]))
            inp = out
        self.layer1, self.layer2, self.layer3 = layers
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(F.relu(self.bn1(self.conv1(x))))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def build(name, shortcut):
    if name in CIFAR:
        return CifarResNet(CIFAR[name], shortcut), 32, 10
    if name in IMAGENET:
        return getattr(torchvision.models, name)(weights=None), 224, 1000
    raise SystemExit(f"--model {name}: expected one of {', '.join(IMAGENET + list(CIFAR))}")


def time_steps(step, sync, warmup, iters):
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        step()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def percentile(times, p):
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50", help="comma-separated list")
    parser.add_argument("--shortcut", default="a", choices=["a", "b"], help="CIFAR ResNets' shortcut option")
    parser.add_argument("--batch", default="64", help="comma-separated list")
    parser.add_argument("--mode", default="both", choices=["train", "infer", "both"])
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"PyTorch {torch.__version__} on {name}: fp32, TF32 off, cuDNN benchmark on, NCHW")

    results = []
    modes = ["train", "infer"] if args.mode == "both" else [args.mode]
    for model_name in args.model.split(","):
        for batch in [int(b) for b in args.batch.split(",")]:
            for mode in modes:
                torch.manual_seed(0)
                model, size, classes = build(model_name, args.shortcut)
                model = model.to(device)
                x = torch.randn(batch, 3, size, size, device=device)
                y = torch.randint(0, classes, (batch,), device=device)
                if mode == "train":
                    model.train()
                    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

                    def step():
                        opt.zero_grad(set_to_none=True)
                        F.cross_entropy(model(x), y).backward()
                        opt.step()
                else:
                    model.eval()

                    def step():
                        with torch.no_grad():
                            model(x)

                times = time_steps(step, sync, args.warmup, args.iters)
                median = statistics.median(times)
                result = {
                    "model": model_name,
                    "shortcut": args.shortcut if model_name in CIFAR else None,
                    "mode": mode,
                    "batch": batch,
                    "median_ms": median,
                    "p10_ms": percentile(times, 0.1),
                    "p90_ms": percentile(times, 0.9),
                    "images_per_s": batch / median * 1e3,
                }
                results.append(result)
                print(f"{model_name} {mode} batch {batch}: {median:.2f} ms per step (p10 {result['p10_ms']:.2f}, "
                      f"p90 {result['p90_ms']:.2f}), {result['images_per_s']:.1f} images/s")
                del model, x, y
                if device.type == "cuda":
                    torch.cuda.empty_cache()

    if args.json:
        doc = {"tool": f"pytorch {torch.__version__}", "device": name, "precision": "fp32, tf32 off",
               "warmup": args.warmup, "iters": args.iters, "results": results}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)


if __name__ == "__main__":
    main()
