"""Width-reduced VGG-11 and ResNet-18 for 20x20 digits, and BatchNorm folding before quantization."""

from __future__ import annotations


import torch.nn.functional as F
from torch import nn

from benchmarks.accuracy.tasks.digits_png import Block  # ResNet's basic block, as in the digits task

# VGG-11's configuration (Simonyan & Zisserman, config A) in units of the base width; "M" is a
# 2x2 max pool. On 20x20 inputs the fifth pool is dropped (20 -> 10 -> 5 -> 2 -> 1).
VGG11_CFG = (1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8)


class VGG11(nn.Module):
    """VGG-11 (8 conv3x3-BN-ReLU, 4 pools) with a single linear classifier (CIFAR-style)."""

    def __init__(self, width: int = 8, classes: int = 10):
        super().__init__()
        layers, cin = [], 1
        for item in VGG11_CFG:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            layers += [nn.Conv2d(cin, item * width, 3, padding=1, bias=False),
                       nn.BatchNorm2d(item * width), nn.ReLU()]
            cin = item * width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))

    def conv_bn_pairs(self):
        mods = list(self.features.named_children())
        return [(f"features.{a}", f"features.{b}") for (a, m), (b, _) in zip(mods, mods[1:])
                if isinstance(m, nn.Conv2d)]


class ResNet18(nn.Module):
    """ResNet-18 (stem conv3x3, 4 stages x 2 basic ``Block``s, strides 1/2/2/2, GAP, linear)."""

    def __init__(self, width: int = 8, classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(width)
        blocks, cin = [], width
        for stage, stride in enumerate((1, 2, 2, 2)):
            cout = width * 2 ** stage
            blocks += [Block(cin, cout, stride), Block(cout, cout, 1)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        h = self.blocks(F.relu(self.stem_bn(self.stem(x))))
        return self.fc(h.mean((2, 3)))

    def conv_bn_pairs(self):
        pairs = [("stem", "stem_bn")]
        for index, block in enumerate(self.blocks):
            name = f"blocks.{index}"
            pairs += [(f"{name}.conv1", f"{name}.bn1"), (f"{name}.conv2", f"{name}.bn2")]
            if block.shortcut is not None:
                pairs.append((f"{name}.shortcut.0", f"{name}.shortcut.1"))
        return pairs


ARCHS = {"vgg11": VGG11, "resnet18": ResNet18}
