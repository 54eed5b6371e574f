#!/usr/bin/env python3
"""Inference benchmark: MedSeg's sliding window against MONAI's, same weights, same volumes, same overlap.

Prints one JSON document. Every measurement runs in its own child process (so that peak RSS is that
measurement's own), on a network built from the same seed (identical weights), with torch's default
threads. Times drift by about 10 % between runs on a shared machine: compare ratios within one run.

    .venv/bin/python scripts/benchmark_inference.py                     # the CPU table
    .venv/bin/python scripts/benchmark_inference.py --device cuda       # on a GPU
    .venv/bin/python scripts/benchmark_inference.py --sizes 160x160x160 --classes 2 --overlap 0.25
    .venv/bin/python scripts/benchmark_inference.py --sizes 160x160x160 256x256x128 --repeats 2  # shared machine

Rows:
  forward  3D U-Net (16-256 channels, instance norm), ROI 96^3: MONAI sliding_window_inference (sw_batch_size
           1, blending the logits with the same Gaussian map as MedSeg) vs MedSeg, each in fp32 and in the fast
           precision (bf16 autocast on CPU / fp16 on CUDA; MONAI inside the same `torch.autocast` MedSeg uses),
           labels compared voxel by voxel. Two ratios per row, at equal precision: `speedup_vs_monai_same_precision`
           (MedSeg fast / MONAI fast, MedSeg fp32 / MONAI fp32) and, for the fast row, `speedup_vs_monai_fp32`
           (MedSeg's default against MONAI's default, which mixes a precision gain into the ratio).
  stitch   the blending alone with many classes (the network replaced by a fixed probability window),
           time and peak memory.
  peak     conv3d 64->64 3^3 on 64^3 (fp32 and the fast precision): the GFLOP/s a forward can reach.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import torch

ROI = (96, 96, 96)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Samples the resident set size every 5 ms; ``peak - base`` is the run's own memory."""

    def __enter__(self):
        self.base = self.peak = _rss()
        self._stop = False
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop:
            self.peak = max(self.peak, _rss())
            time.sleep(0.005)

    def __exit__(self, *exc):
        self._stop = True
        self._thread.join()
        self.peak = max(self.peak, _rss())

    @property
    def gib(self) -> float:
        return round((self.peak - self.base) / 2**30, 3)


def _network(classes: int, device: str):
    from medseg.models import build_model

    torch.manual_seed(0)
    return build_model("unet", spatial_dims=3, in_channels=1, num_classes=classes, width=0.25,
                       norm="instance").eval().to(device)


def _volume(shape, device):
    torch.manual_seed(1)
    return torch.randn(1, 1, *shape, device=device)


def _weights(device: str) -> torch.Tensor:
    """The Gaussian map both sides blend with (MedSeg's, sigma = 1/8 of the window, given to MONAI too)."""
    from medseg.sliding_window import gaussian_importance

    return gaussian_importance(ROI, 0.125, device)


def _fast_precision(device: str) -> str:
    return "fp16" if device.startswith("cuda") else "bf16"


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _segmenter(classes: int, device: str):
    from pathlib import Path

    from medseg.card import ModelCard
    from medseg.checkpoint import LoadedModel
    from medseg.inference import Segmenter

    net = _network(classes, device)
    card = ModelCard.from_dict({
        "name": "benchmark-unet", "summary": "random weights", "architecture": "unet",
        "architecture_args": net.config, "patch_size": list(ROI), "training": {"dataset": "none", "license": "none"},
        "inputs": [{"name": "CT", "modality": "CT", "normalization": {"kind": "none"}}],
        "labels": [{"id": i, "name": f"class {i}", "color": [i % 256, 0, 0]} for i in range(classes)]})
    return Segmenter(LoadedModel(net, card, Path("benchmark")), device=device)


def run_forward(method: str, shape, classes: int, overlap: float, device: str, labels_out: str) -> dict:
    """One sliding-window segmentation of a random volume; labels saved for the comparison."""
    x = _volume(shape, "cpu")
    if method.startswith("monai"):
        from monai.inferers import sliding_window_inference

        from medseg.device import autocast

        net = _network(classes, device)
        xd = x.to(device)
        precision = "fp32" if method == "monai" else _fast_precision(device)
        _sync(device)
        with PeakRSS() as mem, torch.no_grad(), autocast(torch.device(device), precision):
            t = time.perf_counter()
            logits = sliding_window_inference(xd, ROI, 1, net, overlap=overlap, roi_weight_map=_weights(device))
            labels = logits.argmax(1)[0].to(torch.uint8).cpu().numpy()
            _sync(device)
            seconds = time.perf_counter() - t
        windows = None
    else:
        from medseg.inference import SegmentOptions

        seg = _segmenter(classes, device)
        precision = "fp32" if method == "medseg-fp32" else _fast_precision(device)
        options = SegmentOptions(overlap=overlap, precision=precision, measure=False)
        with PeakRSS() as mem:
            t = time.perf_counter()
            result = seg.segment(x[0, 0].numpy(), _geometry(), options)
            _sync(device)
            seconds = time.perf_counter() - t
        labels, windows = result.labels, result.info["windows"]
    np.save(labels_out, labels)
    out = {"seconds": round(seconds, 3), "peak_rss_gib": mem.gib, "windows": windows}
    if device.startswith("cuda"):
        out["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return out


def _geometry():
    from medseg.geometry import Geometry

    return Geometry()


def run_stitch(method: str, shape, classes: int, overlap: float, device: str, labels_out: str) -> dict:
    """Blending alone: every window is a fresh copy of one fixed output of a network with 16 features and a
    1x1 head (a copy, as a network returns a new tensor, and because MONAI scales the returned tensor in place).

    MONAI blends the head's `classes` logits; MedSeg, as its Segmenter does, blends the 16 features and
    applies the head once per voxel (the head is linear, so the logits are the same).
    """
    torch.manual_seed(2)
    features = torch.randn(1, 16, *ROI, device=device)
    head = torch.nn.Conv3d(16, classes, 1).to(device)
    with torch.no_grad():
        logits = head(features)
    x = _volume(shape, device)
    del_after = logits if method == "monai" else None
    del logits
    with PeakRSS() as mem, torch.no_grad():
        t = time.perf_counter()
        if method == "monai":
            from monai.inferers import sliding_window_inference

            out = sliding_window_inference(x, ROI, 1, lambda w: del_after.expand(w.shape[0], -1, -1, -1, -1).clone(),
                                           overlap=overlap, roi_weight_map=_weights(device))
            labels = out.argmax(1)[0].to(torch.uint8).cpu().numpy()
        else:
            from medseg.inference import _apply_head
            from medseg.sliding_window import WindowOptions, sliding_window

            out = sliding_window(x[0], lambda w: features[:, None].expand(w.shape[0], 1, -1, -1, -1, -1).clone(), 16,
                                 WindowOptions(ROI, overlap), head=_apply_head(head, torch.device(device)),
                                 classes=classes)
            labels = out.labels
        _sync(device)
        seconds = time.perf_counter() - t
    np.save(labels_out, labels)
    return {"seconds": round(seconds, 3), "peak_rss_gib": mem.gib}


def run_peak(device: str) -> dict:
    """conv3d 64->64 3^3 on 64^3: the best GFLOP/s this machine reaches, fp32 and fast precision."""
    from medseg.device import autocast

    conv = torch.nn.Conv3d(64, 64, 3, padding=1).to(device)
    x = torch.randn(1, 64, 64, 64, 64, device=device)
    flops = 2 * 64 * 64 * 27 * 64**3
    out = {}
    for precision in ("fp32", _fast_precision(device)):
        with torch.no_grad(), autocast(torch.device(device), precision):
            conv(x)
            _sync(device)
            t = time.perf_counter()
            for _ in range(5):
                conv(x)
            _sync(device)
        out[precision] = round(flops * 5 / (time.perf_counter() - t) / 1e9, 1)
    return out


def run_forward_flops(classes: int, device: str) -> dict:
    """FLOPs of one ROI forward and the GFLOP/s of that forward alone, fp32 and fast precision."""
    from torch.utils.flop_counter import FlopCounterMode

    from medseg.device import autocast

    net = _network(classes, device)
    x = torch.randn(1, 1, *ROI, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x)
    flops = counter.get_total_flops()
    out = {"gflop_per_window": round(flops / 1e9, 2)}
    for precision in ("fp32", _fast_precision(device)):
        with torch.no_grad(), autocast(torch.device(device), precision):
            net(x)
            _sync(device)
            t = time.perf_counter()
            for _ in range(3):
                net(x)
            _sync(device)
        seconds = (time.perf_counter() - t) / 3
        out[precision] = {"seconds": round(seconds, 3), "gflops": round(flops / seconds / 1e9, 1)}
    return out


def _child(job: dict) -> dict:
    """Run one measurement in a fresh process of this script and return its JSON."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(job)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _do_child(job: dict) -> dict:
    kind = job.pop("kind")
    if "shape" in job:
        job["shape"] = tuple(job["shape"])
    return {"forward": run_forward, "stitch": run_stitch, "peak": run_peak, "flops": run_forward_flops}[kind](**job)


def _agreement(a: str, b: str) -> float | None:
    if not (os.path.exists(a) and os.path.exists(b)):
        return None
    return round(float((np.load(a) == np.load(b)).mean()), 6)


def _ratio(a: dict, b: dict, key: str) -> float | None:
    if key in a and key in b and b[key]:
        return round(a[key] / b[key], 2)
    return None


def forward_rows(args, tmp: str) -> list[dict]:
    rows = []
    for shape in args.sizes:
        for classes in args.classes:
            row = {"volume": "x".join(map(str, shape)), "classes": classes, "overlap": args.overlap}
            voxels = int(np.prod(shape))
            # fp32 MedSeg is the reference for MONAI's equality; both are skipped above --monai-max-voxels
            methods = ["medseg-fast"] + (["medseg-fp32", "monai", "monai-fast"]
                                         if voxels <= args.monai_max_voxels else [])
            # each repeat runs every method, in reversed order every other time; a method keeps its fastest run,
            # which is the least disturbed by other load on a shared machine
            for repeat in range(args.repeats):
                for method in methods if repeat % 2 == 0 else methods[::-1]:
                    path = os.path.join(tmp, f"{method}-{row['volume']}-{classes}.npy")
                    run = _child({"kind": "forward", "method": method, "shape": list(shape), "classes": classes,
                                  "overlap": args.overlap, "device": args.device, "labels_out": path})
                    run["load_1min_after"] = round(os.getloadavg()[0], 2)  # this run's 2 threads included
                    row[method] = _fastest(row.get(method), run)
            if "monai" in row:
                _compare_with_monai(row, tmp, classes)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    return rows


def _fastest(best: dict | None, run: dict) -> dict:
    """The faster of two runs of one method, with every run's seconds in `runs_seconds`."""
    runs = [*(best or {}).get("runs_seconds", []), run.get("seconds")]
    if best is None or "error" in best or ("seconds" in run and run["seconds"] < best["seconds"]):
        best = run
    return {**best, "runs_seconds": runs}


def _compare_with_monai(row: dict, tmp: str, classes: int) -> None:
    """Labels and time of each MedSeg run against MONAI at the same precision (and the fast one against fp32)."""
    def path(method: str) -> str:
        return os.path.join(tmp, f"{method}-{row['volume']}-{classes}.npy")

    for method, peer in (("medseg-fast", "monai-fast"), ("medseg-fp32", "monai")):
        row[method]["label_agreement_with_monai"] = _agreement(path(method), path(peer))
        row[method]["speedup_vs_monai_same_precision"] = _ratio(row[peer], row[method], "seconds")
    row["medseg-fast"]["speedup_vs_monai_fp32"] = _ratio(row["monai"], row["medseg-fast"], "seconds")
    row["monai-fast"]["label_agreement_with_monai_fp32"] = _agreement(path("monai-fast"), path("monai"))


def stitch_rows(args, tmp: str) -> list[dict]:
    rows = []
    for shape in args.stitch_sizes:
        row = {"volume": "x".join(map(str, shape)), "classes": args.stitch_classes, "overlap": args.overlap}
        for method in ("medseg", "monai"):
            row[method] = _child({"kind": "stitch", "method": method, "shape": list(shape),
                                  "classes": args.stitch_classes, "overlap": args.overlap, "device": args.device,
                                  "labels_out": os.path.join(tmp, f"stitch-{method}.npy")})
        row["label_agreement"] = _agreement(os.path.join(tmp, "stitch-medseg.npy"),
                                            os.path.join(tmp, "stitch-monai.npy"))
        row["time_fraction_of_monai"] = _ratio(row["medseg"], row["monai"], "seconds")
        row["memory_fraction_of_monai"] = _ratio(row["medseg"], row["monai"], "peak_rss_gib")
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    return rows


def _shape(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.lower().split("x"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--device", default="cpu")
    p.add_argument("--sizes", nargs="+", type=_shape, default=[(160, 160, 160), (256, 256, 128), (512, 512, 300)],
                   help="volumes, array order Z x Y x X")
    p.add_argument("--classes", nargs="+", type=int, default=[2, 105])
    p.add_argument("--overlap", type=float, default=0.5)
    p.add_argument("--repeats", type=int, default=1,
                   help="runs of each forward measurement, interleaved; the fastest is reported (shared machines)")
    p.add_argument("--monai-max-voxels", type=int, default=256 * 256 * 128,
                   help="skip MONAI above this many voxels (its CPU run of 512x512x300 takes tens of minutes)")
    p.add_argument("--stitch-sizes", nargs="*", type=_shape, default=[(256, 256, 128)])
    p.add_argument("--stitch-classes", type=int, default=105)
    p.add_argument("--skip-forward", action="store_true")
    args = p.parse_args()
    if args.child:
        print(json.dumps(_do_child(json.loads(args.child))))
        return
    import tempfile

    report = {"device": args.device, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "cpu": _cpu_name(), "roi": list(ROI), "network": "unet 3D width 0.25 (16-256), instance norm",
              "conv3d_peak_gflops": _child({"kind": "peak", "device": args.device}),
              "forward_flops": {c: _child({"kind": "flops", "classes": c, "device": args.device})
                                for c in args.classes}}
    with tempfile.TemporaryDirectory() as tmp:
        report["forward"] = [] if args.skip_forward else forward_rows(args, tmp)
        report["stitch"] = stitch_rows(args, tmp)
    print(json.dumps(report, indent=2))


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


if __name__ == "__main__":
    main()
