"""Devices, precision and the out-of-memory fallback shared by inference and benchmarks."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

__all__ = ["DEVICES", "PRECISIONS", "FallbackRunner", "autocast", "available_devices", "cpu_has_bf16", "resolve_device",
           "resolve_precision"]

log = logging.getLogger(__name__)
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def available_devices() -> list[str]:
    """Devices this machine can run on, best first (for the Slicer device picker)."""
    found = []
    if torch.cuda.is_available():
        found += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return [*found, "cpu"]


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` -> cuda, then mps, then cpu; an explicit device that is absent or malformed is a clear error.

    Args:
        name: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` (N an index of a GPU this PyTorch sees) or ``mps``.

    Raises:
        ValueError: an unknown or malformed name (``cpu:abc``, ``foo``), or a device this machine lacks
            (``cuda:7`` with fewer GPUs); the message lists the devices available here.
    """
    text = str(name).strip()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    match = re.fullmatch(r"(cpu|cuda|mps)(?::(\d+))?", text)
    here = ", ".join(d.split(" ")[0] for d in available_devices())
    if match is None:
        raise ValueError(f"unknown device {text!r}; use auto, cpu, cuda, cuda:N (N a GPU index) or mps (available "
                         f"here: {here})")
    kind, index = match.group(1), None if match.group(2) is None else int(match.group(2))
    if kind == "cuda":
        return _cuda_device(text, index)
    if index not in (None, 0):
        raise ValueError(f"device {text!r}: {kind} has no device {index}; use --device {kind} (available here: {here})")
    if kind == "mps" and not _mps_available():
        raise ValueError("device 'mps' asked for but Apple's Metal backend is not available; use --device cpu")
    return torch.device(kind)


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def _cuda_device(text: str, index: int | None) -> torch.device:
    if not torch.cuda.is_available():
        raise ValueError(f"device {text!r} asked for but this PyTorch sees no CUDA GPU ({torch.__version__}); use "
                         f"--device cpu, or install a CUDA build of torch (README, GPU)")
    count = torch.cuda.device_count()
    if index is not None and index >= count:
        raise ValueError(f"device {text!r} asked for but this machine has {count} CUDA GPU(s) (cuda:0"
                         f"{f' to cuda:{count - 1}' if count > 1 else ''}); pick one of them, or set "
                         f"CUDA_VISIBLE_DEVICES to show the GPU you mean")
    return torch.device(text)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), where bf16 autocast pays."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: fp16 autocast on CUDA; bf16 autocast on CPUs with native bfloat16; fp32 elsewhere.

    bf16 on the CPU ran the 3D U-Net forward 2.4-2.9x faster and left the hippocampus validation Dice
    unchanged (0.8794 / 0.8687 vs 0.8796 / 0.8687 in fp32; scripts/benchmark_precision.py).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type == "cuda":
            return "fp16"
        return "bf16" if device.type == "cpu" and cpu_has_bf16() else "fp32"
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("fp16 autocast is for GPUs; on the CPU use precision bf16 or fp32")
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


class FallbackRunner:
    """Runs `fn` on batches; on out-of-memory halves the batch, and at one window moves to the CPU.

    Args:
        fn: ``fn(batch_on_device, device) -> Tensor``.
        device: where to start.
        batch_size: windows per call to start with.
        on_cpu_fallback: called once when the work moves to the CPU (to move the model).
    """

    def __init__(self, fn: Callable[[Tensor, torch.device], Tensor], device: torch.device, batch_size: int,
                 on_cpu_fallback: Callable[[], None] | None = None):
        self.fn, self.device, self.batch_size, self.on_cpu_fallback = fn, device, batch_size, on_cpu_fallback

    def _chunks(self, x: Tensor) -> Iterator[Tensor]:
        for i in range(0, x.shape[0], self.batch_size):
            yield x[i: i + self.batch_size]

    def __call__(self, x: Tensor) -> Tensor:
        while True:
            try:
                return torch.cat([self.fn(chunk.to(self.device), self.device) for chunk in self._chunks(x)])
            except torch.OutOfMemoryError:
                self._shrink()

    def _shrink(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if self.batch_size > 1:
            self.batch_size //= 2
            log.warning("out of memory on %s: retrying with %d window(s) per batch", self.device, self.batch_size)
            return
        if self.device.type == "cpu":
            raise MemoryError("out of memory on the CPU even with one window per batch; crop the volume to a "
                              "region of interest (--roi) or use a machine with more memory")
        log.warning("out of memory on %s with one window: continuing on the CPU (slower)", self.device)
        self.device = torch.device("cpu")
        if self.on_cpu_fallback is not None:
            self.on_cpu_fallback()
