#!/usr/bin/env python3
"""Click-to-labels speed of each bundled model on a typical input, through ``medseg segment`` itself, on the CPU.

    .venv/bin/python scripts/benchmark_speed.py [--repeats 3] [--threads 2] [--ct-model PATH]
        [--out scripts/results/speed.md] [--json FILE] [--max-gib 12]

One row per (model, input): the wall time of a whole ``medseg segment INPUT --model M --output labels.seg.nrrd
--device cpu`` run in process (checkpoint load, read, checks, normalisation, resampling to the model's spacing,
sliding window, resampling back, arg-max, post-processing as the card says, measurements, the .seg.nrrd written
through the run's OutputSet), median and range of ``--repeats`` runs after one warm-up run, and the peak resident
memory of the process during the timed runs (each row in its own child process; sampled every 5 ms; it includes
Python and torch: the resident memory before the first run is given, so the difference is the run's own). The
engine's own stage times come from the warm-up run, the only one with ``--report`` (which also computes the review
list): preprocess = normalise + resample to the model's grid, inference = sliding window + resampling back +
arg-max, postprocess, measure, review. Default options (no TTA, no uncertainty); ``--threads`` as ``medseg segment
--threads``.

Inputs:
- hippocampus crop: Resources/Samples/hippocampus_001_T1w.nii.gz (the demo's sample), for every hippocampus model;
- left-atrium crop: the first case of ../shared/data/left_atrium/imagesTr, for the left-atrium model;
- abdominal CT 512 x 512 x 300: TotalSegmentator's example CT (raw HU) resampled (linear) over its own field of view
  onto a 512 x 512 x 300 grid (0.71 x 0.59 x 1.12 mm), for the abdominal CT model: the bundled one when there is
  one, else ``--ct-model`` (e.g. runs/abdominal-ct-organs/best.safetensors), else a randomly initialised network of
  the same card as the newest checkpoint in runs/abdominal-ct-organs/ (said in the table: its time is the same, its
  labels are noise, which can make post-processing slower or faster).
A child is stopped by an address-space limit of ``--max-gib`` (so a run that needs more memory than the machine can
spare fails alone, and says so) instead of pushing the machine into swap or the OOM killer.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
CT_SHAPE = (512, 512, 300)  # x, y, z


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _Peak:
    """The highest resident memory seen by a thread sampling every 5 ms while active."""

    def __init__(self):
        self.peak, self.active, self._stop = 0.0, False, False
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self):
        while not self._stop:
            if self.active:
                self.peak = max(self.peak, _rss_mib())
            time.sleep(0.005)

    def close(self):
        self._stop = True
        self._thread.join()


def child(model: str, image: str, repeats: int, threads: int) -> dict:
    """In a fresh process: a warm-up run, then `repeats` timed runs of ``medseg segment``."""
    import contextlib
    import io

    from medseg.cli import main

    base = _rss_mib()
    times, errors, stages = [], [], {}
    sampler = _Peak()
    with tempfile.TemporaryDirectory(prefix="speed-") as tmp:
        report = Path(tmp) / "report.json"
        argv = ["segment", image, "--model", model, "--output", str(Path(tmp) / "labels.seg.nrrd"), "--device",
                "cpu", "--no-progress"] + (["--threads", str(threads)] if threads else [])
        for n in range(repeats + 1):
            stderr = io.StringIO()
            sampler.active = n > 0  # the timed runs only (the warm-up also computes the review list)
            t = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
                # the warm-up run writes the JSON report for the engine's stage times (--report also computes the
                # review list); the timed runs write the labels only
                code = main(argv + ([] if n else ["--report", str(report)]))
            if code:
                errors.append(stderr.getvalue().strip().splitlines()[-1] if stderr.getvalue().strip() else str(code))
                break
            if n:
                times.append(time.perf_counter() - t)
            else:
                run = json.loads(report.read_text()).get("run", {})
                stages = {"seconds": run.get("seconds"), "network_grid_kji": run.get("network_grid_kji"),
                          "windows": run.get("windows"), "warm_up_s": round(time.perf_counter() - t, 2)}
    sampler.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"times_s": times, "base_rss_mib": round(base), "peak_rss_mib": round(sampler.peak),
            "peak_rss_with_warm_up_mib": round(peak), "error": errors[0] if errors else None, "warm_up": stages}


def _run_child(model: str, image: Path, args, repeats: int) -> dict:
    limit = int(args.max_gib * 2**30)
    code = (f"import resource, json, sys; resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit})); "
            f"sys.path.insert(0, {str(REPO / 'scripts')!r}); import benchmark_speed as b; "
            f"print(json.dumps(b.child({model!r}, {str(image)!r}, {repeats}, {args.threads})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode:
        tail = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"times_s": [], "error": f"child exited {done.returncode}: {tail[:200]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def ct_volume(folder: Path) -> Path:
    """TotalSegmentator's example CT resampled onto 512 x 512 x 300 over its own field of view (int16 HU)."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(SHARED / "examples" / "totalsegmentator" / "example_ct.nii.gz"))
    extent = [n * s for n, s in zip(image.GetSize(), image.GetSpacing(), strict=True)]
    spacing = [e / n for e, n in zip(extent, CT_SHAPE, strict=True)]
    direction = image.GetDirection()
    # the new grid's first voxel centre: half a new voxel in from the old field of view's corner
    corner = image.TransformContinuousIndexToPhysicalPoint([-0.5, -0.5, -0.5])
    origin = [c + sum(direction[3 * r + a] * spacing[a] / 2 for a in range(3)) for r, c in enumerate(corner)]
    out = sitk.Resample(image, list(CT_SHAPE), sitk.Transform(), sitk.sitkLinear, origin, spacing, direction, -1024,
                        sitk.sitkInt16)
    path = folder / "ct_512x512x300.nii.gz"
    sitk.WriteImage(out, str(path))
    return path


def ct_model(args, folder: Path) -> tuple[str | None, str]:
    """The abdominal CT model to time and what it is."""
    from medseg.catalog import bundled_models

    bundled = [e.name for e in bundled_models() if any(c.modality == "CT" for c in e.card.inputs)]
    if bundled:
        return bundled[0], f"bundled {bundled[0]}"
    if args.ct_model:
        return str(args.ct_model), f"{args.ct_model} (not bundled yet)"
    runs = sorted((REPO / "runs" / "abdominal-ct-organs").glob("*.safetensors"), key=lambda p: p.stat().st_mtime)
    runs = [p for p in runs if "state" not in p.name]
    if not runs:
        return None, "no abdominal CT model"
    import torch

    from medseg.checkpoint import load_checkpoint, save_checkpoint

    loaded = load_checkpoint(runs[-1])
    torch.manual_seed(0)
    for module in loaded.model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    path = save_checkpoint(folder / "random-ct.safetensors", loaded.model, loaded.card)
    return str(path), f"randomly initialised network of {runs[-1].name}'s card (same architecture and card)"


def _shape(path: Path) -> str:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    size, spacing = reader.GetSize(), reader.GetSpacing()
    return f"{' x '.join(map(str, size))} @ {' x '.join(f'{s:.2f}' for s in spacing)} mm"


def markdown(result: dict) -> str:
    lines = ["# Click-to-labels speed on the CPU", "",
             f"`scripts/benchmark_speed.py`, {result['date']}: `medseg segment INPUT --model M --output "
             f"labels.seg.nrrd --device cpu` in process, default options (no TTA), {result['threads']}, median "
             f"(min-max) of {result['repeats']} runs after a warm-up run; peak RSS of the process during the timed "
             f"runs (sampled every 5 ms; Python + torch included; in brackets before the first run). Machine: "
             f"{result['machine']}. The times include loading the checkpoint (the Slicer module keeps it loaded "
             "between runs).", "",
             "| model | input | size | median s | min-max s | warm-up run with --report: total, engine stages s | "
             "peak RSS MiB (base) | note |", "|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        times = row["times_s"]
        if times:
            median = f"{statistics.median(times):.2f}"
            median += f" (n={len(times)})" if len(times) != result["repeats"] else ""
            spread = f"{min(times):.2f}-{max(times):.2f}"
            memory = f"{row['peak_rss_mib']} ({row['base_rss_mib']})"
        else:
            median = spread = memory = "n/a"
        note = row.get("note", "") + (f" error: {row['error']}" if row.get("error") else "")
        warm = row.get("warm_up") or {}
        stage_text = ", ".join([f"total {warm['warm_up_s']:.2f}"] * ("warm_up_s" in warm) + [
            f"{k} {v:.2f}" for k, v in (warm.get("seconds") or {}).items() if v >= 0.005]) or "n/a"
        lines.append(f"| {row['model']} | {row['input']} | {row['size']} | {median} | {spread} | {stage_text} | "
                     f"{memory} | {note.strip()} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ct-repeats", type=int, default=0, help="timed runs of the CT row (default: --repeats)")
    p.add_argument("--threads", type=int, default=0, help="medseg segment --threads (0: its default)")
    p.add_argument("--ct-model", type=Path, help="abdominal CT checkpoint when none is bundled")
    p.add_argument("--only", nargs="*", default=None, help="only these models (names or paths as listed)")
    p.add_argument("--max-gib", type=float, default=12.0, help="address-space limit of each child (GiB)")
    p.add_argument("--machine", default="2 CPU cores shared with a running training")
    p.add_argument("--out", type=Path, default=REPO / "scripts" / "results" / "speed.md")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    from medseg.catalog import bundled_models, resources_dir

    hippocampus = resources_dir() / "Samples" / "hippocampus_001_T1w.nii.gz"
    atrium = sorted((SHARED / "left_atrium" / "imagesTr").glob("*.nii.gz"))[0]
    result = {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"), "repeats": args.repeats,
              "threads": f"--threads {args.threads}" if args.threads else "torch's default threads",
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
                         f"{args.machine}", "rows": []}
    with tempfile.TemporaryDirectory(prefix="speed-inputs-") as tmp:
        names = [e.name for e in bundled_models()]
        plan = [(name, hippocampus, "hippocampus crop (sample)", "") for name in names
                if name.startswith("hippocampus")]
        plan += [(name, atrium, f"left-atrium crop ({atrium.name.split('.')[0]})", "") for name in names
                 if name.startswith("left-atrium")]
        model, what = ct_model(args, Path(tmp))
        if model:
            plan.append((model, ct_volume(Path(tmp)), "abdominal CT (TotalSegmentator example resampled)", what))
        for name, image, label, note in plan:
            if args.only and name not in args.only:
                continue
            print(f"{name} on {image.name} ...", flush=True)
            repeats = args.ct_repeats if image.name.startswith("ct_") and args.ct_repeats else args.repeats
            row = _run_child(name, image, args, repeats)
            row.update(repeats=repeats, model=Path(name).stem if "/" in name else name, input=label,
                       size=_shape(image), note=note)
            print(f"  {row}", flush=True)
            result["rows"].append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(result))
    print(f"wrote {args.out}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
