#!/usr/bin/env python3
"""MedSeg against nnU-Net's own predictor on a real nnU-Net v2 model trained here.

Runs in its own git-ignored environment (nnunetv2 pins its own torch/torchvision pair):

    python3.11 -m venv .venv-nnunet
    .venv-nnunet/bin/pip install "torch==2.13.0" "torchvision==0.28.*" nnunetv2==2.8.1
    .venv-nnunet/bin/pip install -e .              # MedSeg's engine, for the import and MedSeg's side
    .venv-nnunet/bin/python scripts/verify_nnunet.py train      # hippocampus -> nnU-Net raw, plan, train fold 0
    .venv-nnunet/bin/python scripts/verify_nnunet.py compare    # import, predict both ways, write the table

``train`` converts ``--cases`` hippocampus cases to nnU-Net's raw layout under ``--work`` (default
``out/nnunet``), runs ``nnUNetv2_plan_and_preprocess -c 3d_fullres`` and trains fold 0 on the CPU with a
trainer subclass of few epochs (written into nnunetv2's trainer folder, where nnU-Net looks for trainers).
An existing trained model folder (``checkpoint_final.pth``) is reused.

``compare`` imports the results folder with ``medseg.nnunet`` and segments the fold's validation cases with
MedSeg (``Segmenter``, fp32) and with ``nnUNetPredictor`` (step 0.5, Gaussian), with and without mirroring;
per setting: voxel agreement, Dice between the two per label, Dice of each against the expert labels, and
both runtimes. The table goes to ``scripts/results/verify_nnunet.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "hippocampus"
DATASET_ID = 501
DATASET_NAME = f"Dataset{DATASET_ID:03d}_MedSegHippocampus"
TRAINER = "nnUNetTrainer_MedSegVerify"
TRAINER_CODE = '''\
"""Written by MedSeg's scripts/verify_nnunet.py: nnUNetTrainer with few epochs, for a CPU check."""
import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class {name}(nnUNetTrainer):
    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cpu")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = {epochs}
        self.num_iterations_per_epoch = {iterations}
        self.num_val_iterations_per_epoch = 4

    def perform_actual_validation(self, save_probabilities=False):
        pass  # verify_nnunet.py predicts the validation cases itself
'''


def torchvision_workaround() -> None:
    """Let nnunetv2 import torchvision (through timm) next to the CPU torch wheel.

    PyPI's torchvision wheels are built against CUDA torch; with the CPU wheel their operator library does not
    load and ``import torchvision`` fails with "operator torchvision::nms does not exist" (its fake-tensor
    registrations need the operators' schemas). nnU-Net's networks use no torchvision operator, so the two
    schemas are declared here (never called) when the library is missing.
    """
    import torch

    try:
        import torchvision
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
        for name in list(sys.modules):
            if name.startswith("torchvision"):
                del sys.modules[name]
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
        torchvision_workaround.library = lib  # kept alive
        import torchvision  # noqa: F401


def run_nnunet(entry: str, argv: list[str], env: dict[str, str]) -> None:
    """An nnU-Net command line (``plan`` or ``train``) in a child process with :func:`torchvision_workaround`."""
    code = ("import sys; sys.path.insert(0, {here!r}); import verify_nnunet as v; v.torchvision_workaround(); "
            "sys.argv = {argv!r}; from {module} import {fn}; {fn}()")
    module, fn = {"plan": ("nnunetv2.experiment_planning.plan_and_preprocess_entrypoints",
                           "plan_and_preprocess_entry"),
                  "train": ("nnunetv2.run.run_training", "run_training_entry")}[entry]
    src = code.format(here=str(Path(__file__).parent), argv=[entry, *argv], module=module, fn=fn)
    subprocess.run([sys.executable, "-c", src], env=env, check=True)


def _env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(nnUNet_raw=str(work / "raw"), nnUNet_preprocessed=str(work / "preprocessed"),
               nnUNet_results=str(work / "results"), nnUNet_n_proc_DA=env.get("nnUNet_n_proc_DA", "1"),
               nnUNet_compile="false")
    return env


def results_folder(work: Path) -> Path:
    return work / "results" / DATASET_NAME / f"{TRAINER}__nnUNetPlans__3d_fullres"


def prepare_raw(work: Path, cases: int) -> Path:
    """The first `cases` hippocampus cases in nnU-Net's raw layout (symlinks to the shared files)."""
    raw = work / "raw" / DATASET_NAME
    (raw / "imagesTr").mkdir(parents=True, exist_ok=True)
    (raw / "labelsTr").mkdir(parents=True, exist_ok=True)
    names = sorted(p.name for p in (DATA / "imagesTr").glob("*.nii.gz"))[:cases]
    for name in names:
        case = name.removesuffix(".nii.gz")
        for src, dst in ((DATA / "imagesTr" / name, raw / "imagesTr" / f"{case}_0000.nii.gz"),
                         (DATA / "labelsTr" / name, raw / "labelsTr" / name)):
            if not dst.exists():
                dst.symlink_to(src)
    meta = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "anterior": 1, "posterior": 2},
            "numTraining": len(names), "file_ending": ".nii.gz", "name": "MedSeg hippocampus check",
            "licence": "CC-BY-SA 4.0 (Medical Segmentation Decathlon)"}
    (raw / "dataset.json").write_text(json.dumps(meta, indent=2))
    return raw


def write_trainer(epochs: int, iterations: int) -> Path:
    import nnunetv2

    path = Path(nnunetv2.__file__).parent / "training" / "nnUNetTrainer" / f"{TRAINER}.py"
    path.write_text(TRAINER_CODE.format(name=TRAINER, epochs=epochs, iterations=iterations))
    return path


def train(args: argparse.Namespace) -> None:
    work = args.work
    folder = results_folder(work)
    if (folder / "fold_0" / "checkpoint_final.pth").is_file():
        print(f"reusing the trained model in {folder}")
        return
    env = _env(work)
    prepare_raw(work, args.cases)
    write_trainer(args.epochs, args.iterations)
    t = time.time()
    if not (work / "preprocessed" / DATASET_NAME / "nnUNetPlans.json").is_file():
        run_nnunet("plan", ["-d", str(DATASET_ID), "-c", "3d_fullres", "-np", "2", "--verify_dataset_integrity"], env)
    print(f"plan and preprocess: {time.time() - t:.0f} s", flush=True)
    t = time.time()
    run_nnunet("train", [str(DATASET_ID), "3d_fullres", "0", "-tr", TRAINER, "-device", "cpu"], env)
    print(f"training: {time.time() - t:.0f} s", flush=True)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def fp32_reference(predictor, image: np.ndarray, props: dict) -> tuple[np.ndarray, list]:
    """nnU-Net's own steps (its preprocessor, padding, window slicers, Gaussian and mirroring function, on its own
    network object) with the logits accumulated in float32 instead of its float16; returns the soft-max inside
    the non-zero box and that box. Only for cases that need no resampling (the hippocampus)."""
    import torch
    from acvl_utils.cropping_and_padding.padding import pad_nd_image
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor

    data, _, props2 = DefaultPreprocessor(verbose=False).run_case_npy(
        image, None, props, predictor.plans_manager, predictor.configuration_manager, predictor.dataset_json)
    patch = tuple(predictor.configuration_manager.patch_size)
    padded, unpad = pad_nd_image(torch.from_numpy(data), patch, "constant", {"value": 0}, True, None)
    gaussian = compute_gaussian(patch, 1.0 / 8, 10, torch.float16, torch.device("cpu")).float()
    sums = torch.zeros((predictor.label_manager.num_segmentation_heads, *padded.shape[1:]))
    weights = torch.zeros(padded.shape[1:])
    predictor.network.load_state_dict(predictor.list_of_parameters[0])
    predictor.network.eval()
    with torch.inference_mode():
        for sl in predictor._internal_get_sliding_window_slicers(padded.shape[1:]):
            sums[sl] += predictor._internal_maybe_mirror_and_predict(padded[sl][None])[0].float() * gaussian
            weights[sl[1:]] += gaussian
    logits = (sums / weights)[(slice(None), *unpad[1:])]
    return torch.softmax(logits, 0).numpy(), props2["bbox_used_for_cropping"]


NETWORK_CASES = {
    "PlainConvUNet 3D, anisotropic, instance norm, LeakyReLU": ("PlainConvUNet", {
        "n_stages": 4, "features_per_stage": [8, 16, 32, 64], "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3]],
        "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]], "n_conv_per_stage": [2, 2, 2, 2],
        "n_conv_per_stage_decoder": [2, 2, 2], "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None, "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}, (1, 2, 16, 64, 48)),
    "PlainConvUNet 2D, batch norm, ReLU": ("PlainConvUNet", {
        "n_stages": 5, "features_per_stage": [8, 16, 32, 64, 64], "conv_op": "torch.nn.modules.conv.Conv2d",
        "kernel_sizes": [[3, 3]] * 5, "strides": [[1, 1], [2, 2], [2, 2], [2, 2], [2, 2]],
        "n_conv_per_stage": [2, 2, 2, 2, 2], "n_conv_per_stage_decoder": [2, 2, 2, 2], "conv_bias": True,
        "norm_op": "torch.nn.modules.batchnorm.BatchNorm2d", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.ReLU", "nonlin_kwargs": {"inplace": True}},
        (2, 1, 64, 80)),
    "ResidualEncoderUNet 3D (ResEnc-style: 1-3-4-6 blocks), anisotropic": ("ResidualEncoderUNet", {
        "n_stages": 4, "features_per_stage": [8, 16, 32, 64], "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
        "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]], "n_blocks_per_stage": [1, 3, 4, 6],
        "n_conv_per_stage_decoder": [1, 1, 1], "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None, "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}, (1, 1, 16, 48, 48)),
}


def networks(args: argparse.Namespace) -> list[str]:
    """nnU-Net's own networks (dynamic-network-architectures, as nnU-Net builds them from plans) against MedSeg's:
    random weights (norm statistics too), ``network_weights`` mapped by the importer, strict load, same input."""
    sys.path.insert(0, str(ROOT / "MedSegExtension"))
    torchvision_workaround()
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    from medseg.checkpoint import _load_weights
    from medseg.models import build_model
    from medseg.nnunet import architecture_args, network_state

    lines = ["", "## MedSeg's networks against nnU-Net's (dynamic-network-architectures)", "",
             "| network | input | nnU-Net keys -> MedSeg keys | max abs. logit difference | max abs. logit |",
             "|---|---|---|---|---|"]
    for title, (cls, kwargs, shape) in NETWORK_CASES.items():
        torch.manual_seed(0)
        theirs = get_network_from_plans(f"dynamic_network_architectures.architectures.unet.{cls}", kwargs,
                                        ["conv_op", "norm_op", "dropout_op", "nonlin"], shape[1], 3,
                                        allow_init=True, deep_supervision=True)
        with torch.no_grad():
            for name, value in theirs.state_dict().items():
                if value.is_floating_point():
                    value.copy_(torch.randn_like(value) * 0.2 + (1.0 if name.endswith("norm.weight") else 0.0))
                    if name.endswith("running_var"):
                        value.abs_().add_(0.5)
        theirs.eval()
        theirs.decoder.deep_supervision = False
        config = {"architecture": {"network_class_name": cls, "arch_kwargs": kwargs}}
        name, margs = architecture_args(config, shape[1], 3, Path("."))
        ours = build_model(name, **margs).eval()
        weights = theirs.state_dict()
        state = network_state(weights, len(kwargs["features_per_stage"]))
        _load_weights(ours, state, title)
        x = torch.randn(*shape)
        with torch.no_grad():
            a, b = theirs(x), ours(x)
        lines.append(f"| {title} | {list(shape)} | {len(weights)} -> {len(state)} | "
                     f"{float((a - b).abs().max()):.2e} | {float(a.abs().max()):.2f} |")
        print(lines[-1], flush=True)
    return lines


def validation_cases(work: Path, count: int) -> list[str]:
    splits = json.loads((work / "preprocessed" / DATASET_NAME / "splits_final.json").read_text())
    return sorted(splits[0]["val"])[:count]


def untrained_folder(args: argparse.Namespace) -> Path:
    """A copy of the trained results folder whose fold 0 holds nnU-Net's own network freshly initialised (its
    He initialisation, seed 0) in the trained checkpoint's format: non-trivial labels from an untrained model."""
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    sys.path.insert(0, str(ROOT / "MedSegExtension"))
    from medseg.nnunet import read_nnunet_checkpoint

    src = results_folder(args.work)
    dst = args.work / "results_untrained" / src.name
    (dst / "fold_0").mkdir(parents=True, exist_ok=True)
    for name in ("plans.json", "dataset.json"):
        shutil.copy(src / name, dst / name)
    name = f"checkpoint_{args.checkpoint}.pth"
    ckpt = read_nnunet_checkpoint(src / "fold_0" / name)  # weights_only, numpy safe globals only
    arch = json.loads((src / "plans.json").read_text())["configurations"]["3d_fullres"]["architecture"]
    torch.manual_seed(0)
    net = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"], 1, 3,
                                 allow_init=True, deep_supervision=True)
    ckpt["network_weights"] = net.state_dict()
    torch.save(ckpt, dst / "fold_0" / name)
    return dst


def compare(args: argparse.Namespace) -> None:
    """Import fold 0, then segment the validation cases with MedSeg and nnUNetPredictor; write the table."""
    sys.path.insert(0, str(ROOT / "MedSegExtension"))
    torchvision_workaround()
    import torch
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from medseg.inference import Segmenter, SegmentOptions
    from medseg.io import read_image
    from medseg.nnunet import import_nnunet
    from medseg.postprocess import PostprocessOptions

    torch.set_num_threads(args.threads)
    folder = untrained_folder(args) if args.untrained else results_folder(args.work)
    model = args.work / f"medseg-hippocampus-nnunet{'-untrained' if args.untrained else ''}.safetensors"
    t = time.perf_counter()
    imported = import_nnunet(folder, model, folds=[0], checkpoint=args.checkpoint)
    import_s = time.perf_counter() - t
    segmenter = Segmenter(model, device="cpu", threads=args.threads)
    raw = args.work / "raw" / DATASET_NAME
    cases = validation_cases(args.work, args.max_cases)
    rows, per_case = [], []
    for mirror in (False, True):
        predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirror,
                                    perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                                    verbose_preprocessing=False, allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(str(folder), use_folds=(0,),
                                                       checkpoint_name=f"checkpoint_{args.checkpoint}.pth")
        totals = {"voxels": 0, "agree": 0, "nnunet_s": 0.0, "medseg_s": 0.0, "max_dp": 0.0, "max_dp32": 0.0}
        dice_pair: dict[int, list[float]] = {1: [], 2: []}
        dice_gt: dict[str, dict[int, list[float]]] = {"nnunet": {1: [], 2: []}, "medseg": {1: [], 2: []}}
        for case in cases:
            path = raw / "imagesTr" / f"{case}_0000.nii.gz"
            truth = read_image(raw / "labelsTr" / f"{case}.nii.gz")[0].astype(np.uint8)
            image, props = SimpleITKIO().read_images([str(path)])
            t = time.perf_counter()
            ref, ref_probs = predictor.predict_single_npy_array(image, props, None, None, True)
            ref = np.asarray(ref).astype(np.uint8)
            totals["nnunet_s"] += time.perf_counter() - t
            volume, geometry = read_image(path)
            t = time.perf_counter()
            ours = segmenter.segment(volume, geometry, SegmentOptions(tta=mirror, precision="fp32", measure=False,
                                                                      probabilities=True,
                                                                      postprocess=PostprocessOptions()))
            totals["medseg_s"] += time.perf_counter() - t
            mine = ours.labels.astype(np.uint8)
            if mine.shape != ref.shape:
                raise SystemExit(f"{case}: MedSeg's labels {mine.shape} vs nnU-Net's {ref.shape}")
            totals["voxels"] += mine.size
            ref32, bbox = fp32_reference(predictor, image, props)
            inner = ours.probabilities[(slice(None), *(slice(a, b) for a, b in bbox))]
            totals["max_dp32"] = max(totals["max_dp32"], float(np.abs(inner - ref32).max()))
            totals["max_dp"] = max(totals["max_dp"], float(np.abs(ours.probabilities - np.asarray(ref_probs)).max()))
            totals["agree"] += int((mine == ref).sum())
            for k in (1, 2):
                dice_pair[k].append(_dice(mine == k, ref == k))
                dice_gt["nnunet"][k].append(_dice(ref == k, truth == k))
                dice_gt["medseg"][k].append(_dice(mine == k, truth == k))
            per_case.append((case, mirror, int((mine != ref).sum()), mine.size))
        rows.append((mirror, totals, dice_pair, dice_gt))
        print(f"mirroring={mirror}: agreement {totals['agree'] / totals['voxels']:.6f}", flush=True)
    write_table(args, imported, cases, rows, per_case, import_s, networks(args))


def write_table(args, imported, cases, rows, per_case, import_s, network_lines) -> None:
    nn = imported.card.training["nnunet"]
    lines = [
        "# MedSeg vs nnU-Net's own predictor on a real nnU-Net v2 model"
        + (" (untrained: nnU-Net's initialisation, same plans)" if args.untrained else ""),
        "",
        f"Written by `scripts/verify_nnunet.py compare` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).",
        f"Model: nnU-Net v2 `3d_fullres` {imported.card.architecture_args['features']} PlainConvUNet, trainer "
        f"`{nn['trainer']}` (checkpoint_{args.checkpoint}, its current_epoch {nn['epochs'][0]}; {args.iterations} "
        f"iterations per epoch, batch 2; fold 0 of {args.cases} MSD hippocampus cases), imported with "
        f"`medseg import-nnunet` in {import_s:.1f} s.",
        f"Cases: the {len(cases)} first validation cases of fold 0 ({', '.join(cases)}). Both on the CPU, fp32, "
        f"{args.threads} threads, step 0.5, Gaussian; machine shared with other jobs (2 cores), so runtimes are "
        f"indicative and measured in the same run. Runtimes include each side's preprocessing and export to a label "
        f"array (MedSeg's also its probability maps, nnU-Net's its probabilities, both asked for the probability "
        f"column). Dice between two empty masks counts as 1.",
        "",
        "nnU-Net 2.8.1 accumulates the blended logits and Gaussian weights in float16 (`predicted_logits` is "
        "`torch.half`), MedSeg in float32. The column 'vs nnU-Net's steps in fp32' reruns nnU-Net's own "
        "preprocessor, padding, window slicers, Gaussian and mirroring function on its own network with float32 "
        "sums (`fp32_reference` in the script): it isolates what MedSeg computes differently from nnU-Net's "
        "rounding. Runtimes exclude that rerun.",
        "",
        "| mirroring | voxels | label agreement | Dice MedSeg vs nnU-Net (anterior / posterior, min over cases) "
        "| max abs. probability difference | same, vs nnU-Net's steps in fp32 | Dice vs expert: nnU-Net "
        "| Dice vs expert: MedSeg | nnU-Net s | MedSeg s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mirror, totals, pair, gt in rows:
        mean = {k: float(np.mean(v)) for k, v in pair.items()}
        low = {k: float(np.min(v)) for k, v in pair.items()}
        expert = {w: " / ".join(f"{np.mean(gt[w][k]):.4f}" for k in (1, 2)) for w in gt}
        lines.append(f"| {'yes (axes 0, 1, 2)' if mirror else 'no'} | {totals['voxels']:,} | "
                     f"{100 * totals['agree'] / totals['voxels']:.4f} % | {mean[1]:.4f} / {mean[2]:.4f} "
                     f"(min {low[1]:.4f} / {low[2]:.4f}) | {totals['max_dp']:.2e} | {totals['max_dp32']:.2e} | "
                     f"{expert['nnunet']} | "
                     f"{expert['medseg']} | "
                     f"{totals['nnunet_s']:.1f} | {totals['medseg_s']:.1f} |")
    lines += ["", "Voxels whose label differs, per case:", "",
              "| case | mirroring | differing voxels | voxels |", "|---|---|---|---|"]
    lines += [f"| {c} | {'yes' if m else 'no'} | {d} | {n:,} |" for c, m, d, n in per_case]
    lines += network_lines
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=("train", "compare", "networks", "all"))
    p.add_argument("--work", type=Path, default=ROOT / "out" / "nnunet")
    p.add_argument("--cases", type=int, default=40, help="hippocampus cases converted (fold 0 validates 1/5)")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--iterations", type=int, default=50, help="iterations per epoch")
    p.add_argument("--max-cases", type=int, default=8, help="validation cases compared")
    p.add_argument("--checkpoint", choices=("final", "best"), default="final",
                   help="the fold's checkpoint compared (best exists after the first epoch)")
    p.add_argument("--untrained", action="store_true",
                   help="compare on the same plans with nnU-Net's freshly initialised network (non-trivial labels)")
    p.add_argument("--threads", type=int, default=2, help="torch threads for both predictors")
    p.add_argument("--output", type=Path, default=ROOT / "scripts" / "results" / "verify_nnunet.md")
    args = p.parse_args()
    args.work = args.work.resolve()
    if args.stage in ("train", "all"):
        train(args)
    if args.stage == "networks":
        networks(args)
    if args.stage in ("compare", "all"):
        compare(args)


if __name__ == "__main__":
    main()
