"""The kernel shapes of the speed table: MiniLM's Linears, the digits CNN's convs, ResNet-18's convs.

Each ``KernelCase`` is one layer as a one-layer torch model (``build``), so that it compiles
through ``lut_tvm.compile`` like any model: the LUT time then includes the encode.

* all-MiniLM-L6-v2 at sequence 128 (batch 1, M = 128 rows): 384x384 (q, k, v, attention
  output), 384x1536 (intermediate), 1536x384 (output), as ``[M, D] x [D, N]``;
* the digits CNN of the accuracy table (``benchmarks.accuracy.tasks.digits_png.ResNetDigits``,
  20x20 input, batch ``DIGITS_BATCH``): its convs, read from the model itself with forward hooks;
* ResNet-18 on 32x32 input with the CIFAR-style stem (3x3 stride-1 conv, no max-pool; batch 1),
  written out here since torchvision is not installed: stem, then per stage the first block's
  3x3 convs and 1x1 shortcut (stride 2 from stage 2 on) and the 3x3 conv repeated in the rest.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import torch
from torch import nn

DIGITS_BATCH = 16
MINILM_ROWS = 128


@dataclass(frozen=True)
class KernelCase:
    """One dense (``kernel == 0``) or conv2d layer and the input it runs on."""

    group: str
    name: str
    batch: int  # dense: the rows M; conv: images
    in_ch: int  # dense: D
    out_ch: int  # dense: N
    kernel: int = 0
    stride: int = 1
    padding: int = 0
    size: int = 0  # input height = width (conv)
    count: int = 1  # how many layers of the model have this shape

    @property
    def is_conv(self) -> bool:
        return self.kernel > 0

    @property
    def out_size(self) -> int:
        return (self.size + 2 * self.padding - self.kernel) // self.stride + 1

    @property
    def rows(self) -> int:
        """M: input rows (dense) or output positions (conv, after im2col)."""
        return self.batch * self.out_size ** 2 if self.is_conv else self.batch

    @property
    def depth(self) -> int:
        """D: the reduction length (``C_in * kh * kw`` for a conv)."""
        return self.in_ch * self.kernel ** 2 if self.is_conv else self.in_ch

    @property
    def flops(self) -> int:
        return 2 * self.rows * self.depth * self.out_ch

    @property
    def key(self) -> str:
        """A file-name-safe identifier."""
        return re.sub(r"[^A-Za-z0-9-]+", "_", f"{self.group}-{self.name}").strip("_")

    @property
    def input_shape(self) -> tuple[int, ...]:
        if self.is_conv:
            return (self.batch, self.in_ch, self.size, self.size)
        return (self.batch, self.in_ch)

    def describe(self) -> str:
        if self.is_conv:
            return (f"{self.in_ch}->{self.out_ch} {self.kernel}x{self.kernel}/s{self.stride} "
                    f"@{self.size}x{self.size}")
        return f"{self.in_ch}x{self.out_ch}"

    def build(self):
        """The one-layer torch model (seeded weights, eval mode), its layer named ``layer``."""
        torch.manual_seed(0)
        layer = (nn.Conv2d(self.in_ch, self.out_ch, self.kernel, self.stride, self.padding)
                 if self.is_conv else nn.Linear(self.in_ch, self.out_ch))
        return OneLayer(layer).eval()

    def to_dict(self) -> dict:
        return {**asdict(self), "rows": self.rows, "depth": self.depth, "flops": self.flops,
                "shape": self.describe()}


class OneLayer(nn.Module):
    """A model of one layer, named ``layer`` (so its plan layer is called ``layer``)."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer(x)


def minilm_cases() -> list[KernelCase]:
    group = "MiniLM linear"
    return [KernelCase(group, "384x384 (q/k/v/attn out)", MINILM_ROWS, 384, 384, count=24),
            KernelCase(group, "384x1536 (intermediate)", MINILM_ROWS, 384, 1536, count=6),
            KernelCase(group, "1536x384 (output)", MINILM_ROWS, 1536, 384, count=6)]


def digits_cases() -> list[KernelCase]:
    """The convs of the accuracy table's digits CNN, from the model (distinct shapes, with counts)."""
    from benchmarks.accuracy.tasks.digits_png import ResNetDigits  # pylint: disable=import-outside-toplevel

    model = ResNetDigits().eval()
    found: dict = {}

    def hook(module, args, _output, name):
        conv = KernelCase("digits CNN conv", name, DIGITS_BATCH, module.in_channels, module.out_channels,
                          module.kernel_size[0], module.stride[0], module.padding[0], args[0].shape[-1])
        shape = conv.describe()
        if shape in found:
            previous = found[shape]
            found[shape] = KernelCase(**{**asdict(previous), "name": f"{previous.name}+{name}",
                                         "count": previous.count + 1})
        else:
            found[shape] = conv

    handles = [m.register_forward_hook(lambda mod, a, o, n=name: hook(mod, a, o, n))
               for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(torch.zeros(1, 1, 20, 20))
    for handle in handles:
        handle.remove()
    return list(found.values())


def resnet18_cases() -> list[KernelCase]:
    """ResNet-18's distinct conv shapes on a 32x32 input (CIFAR-style stem), batch 1."""
    group = "ResNet-18 conv"
    cases = [KernelCase(group, "stem", 1, 3, 64, 3, 1, 1, 32)]
    size, cin = 32, 64
    for stage, cout in enumerate((64, 128, 256, 512), 1):
        stride = 1 if stage == 1 else 2
        out = size // stride
        if stride == 1:
            cases.append(KernelCase(group, f"layer{stage} 3x3", 1, cin, cout, 3, 1, 1, size, count=4))
        else:
            cases += [KernelCase(group, f"layer{stage}.0.conv1", 1, cin, cout, 3, 2, 1, size),
                      KernelCase(group, f"layer{stage}.0.downsample", 1, cin, cout, 1, 2, 0, size),
                      KernelCase(group, f"layer{stage} 3x3", 1, cout, cout, 3, 1, 1, out, count=3)]
        size, cin = out, cout
    return cases


def kernel_cases() -> list[KernelCase]:
    return minilm_cases() + digits_cases() + resnet18_cases()
