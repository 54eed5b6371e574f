"""``medseg segment`` and ``evaluate`` under real faults: every failure is one line, a non-zero exit, and no new
or replaced output file (issue 9, all-or-nothing outputs)."""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from card_support import card_dict

from medseg.card import ModelCard
from medseg.checkpoint import save_checkpoint
from medseg.cli import EXIT_BUG, EXIT_ERROR, _error_message, main
from medseg.models import build_model
from medseg.outputs import TEMPORARY_PREFIX

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO / "MedSegExtension")}


def _checkpoint(path: Path, labels: list[str] | None = None, poison=None) -> Path:
    torch.manual_seed(0)
    model = build_model("unet", spatial_dims=3, in_channels=1, num_classes=3, width=0.0625, depth=3)
    d = card_dict(model)
    for label, name in zip(d["labels"][1:], labels or [], strict=False):
        label["name"] = name
    if poison is not None:
        with torch.no_grad():
            poison(model)
    return save_checkpoint(path, model, ModelCard.from_dict(d))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture
def sample(samples, tmp_path) -> Path:
    copy = tmp_path / "in" / "case.nii.gz"
    copy.parent.mkdir()
    shutil.copy(samples / "hippocampus_001_T1w.nii.gz", copy)
    return copy


def _segment(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medseg", "segment", *args, "--device", "cpu", "--no-progress"],
                          capture_output=True, text=True, timeout=120, env=ENV, **kwargs)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_error_line(stderr: str, pattern: str) -> None:
    """The run's only output besides logged warnings is one error line matching `pattern`."""
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("WARNING ")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert re.fullmatch(rf"medseg (segment|evaluate): error: {pattern}", lines[0]), lines[0]


# ---------------------------------------------------------------------------------------------- disk full


def _limit_file_size(limit: int):
    def apply() -> None:
        import resource
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_disk_full_after_some_outputs_were_complete_leaves_none_and_the_old_files(tmp_path, ckpt, sample):
    """RLIMIT_FSIZE (EFBIG, as a full disk): the small segmentation is complete, the probability map is cut short.
    Neither appears, the old segmentation of the same name is byte-identical, no temporary is left."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "seg.seg.nrrd").write_bytes(b"the old segmentation")
    (out / "report.json").write_text('{"old": true}')
    before = _snapshot(out)
    result = _segment(str(sample), "--model", str(ckpt), "--output", str(out / "seg.seg.nrrd"),
                      "--probabilities", str(out / "p.nii.gz"), "--report", str(out / "report.json"),
                      preexec_fn=_limit_file_size(20_000))
    assert result.returncode == EXIT_ERROR
    _one_error_line(result.stderr, r"cannot write \S+/out/p_anterior_hippocampus\.nii\.gz: File too large \(this "
                                   r"process may write at most 20000 bytes per file\); raise the limit \(ulimit -f\).*")
    assert _snapshot(out) == before


# ---------------------------------------------------------------------------------------------- unwritable folder


def _make_unwritable(folder: Path) -> str | None:
    """Make `folder` refuse new files for real: chmod for a normal user; for root (whom chmod does not stop) the
    immutable attribute. Returns why it cannot be done here, or None."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return None
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
        return None
    return "running as root on a file system without chattr +i: no way to make a folder unwritable for root"


def _make_writable(folder: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
    folder.chmod(0o755)


def test_a_read_only_folder_fails_before_any_work_and_writes_nothing(tmp_path, ckpt, sample):
    out, locked = tmp_path / "out", tmp_path / "locked"
    out.mkdir()
    locked.mkdir()
    reason = _make_unwritable(locked)
    if reason:
        pytest.skip(reason)
    try:
        start = time.perf_counter()
        result = _segment(str(sample), "--model", str(ckpt), "--output", str(out / "seg.nii.gz"),
                          "--overview", str(locked / "overview.png"))
        assert result.returncode == EXIT_ERROR
        _one_error_line(result.stderr, r"cannot write \S+/locked/overview\.png: (Permission denied|Operation not "
                                       r"permitted); make the folder writable or choose another folder")
        assert list(out.iterdir()) == [] and list(locked.iterdir()) == []
        assert time.perf_counter() - start < 60
    finally:
        _make_writable(locked)


# ---------------------------------------------------------------------------------------------- paths refused


def _path_cases(tmp_path: Path, sample: Path) -> dict[str, tuple[list[str], str]]:
    out = tmp_path / "out"
    (out / "dir.nii.gz").mkdir(parents=True)
    (out / "report.json").mkdir()
    linked = out / "linked.nii.gz"
    os.link(sample, linked)
    p, u = str(out / "p.nii.gz"), str(out / "u.nii.gz")
    return {
        "folder as --output": (["--output", str(out / "dir.nii.gz")],
                               r"--output \S+/dir\.nii\.gz is a folder; give a file name inside it .*"),
        "folder as --report": (["--output", str(out / "s.nii.gz"), "--report", str(out / "report.json")],
                               r"--report \S+/report\.json is a folder; give a file name inside it .*"),
        "output is the input": (["--output", str(sample)], r"--output \S+case\.nii\.gz is the input \S+: it would be "
                                                           r"overwritten; write the output to another file"),
        "output is the input, spelled another way": (
            ["--output", str(sample.parent / ".." / "in" / "case.nii.gz")], r"--output \S+ is the input \S+: .*"),
        "output is a hard link to the input": (["--output", str(linked)], r"--output \S+linked\.nii\.gz is the input "
                                                                         r"\S+case\.nii\.gz: .*"),
        "probabilities and uncertainty one file": (
            ["--output", str(out / "s.nii.gz"), "--probabilities", p, "--uncertainty", str(out / "p_posterior_"
                                                                                               "hippocampus.nii.gz")],
            r"--probabilities \(label 2 'posterior hippocampus'\) and --uncertainty both write \S+; give each output "
            r"its own file name"),
        "tta variance is the output": (["--output", str(out / "u_tta_variance.nii.gz"), "--uncertainty", u, "--tta"],
                                       r"--output and --uncertainty's TTA variance both write \S+u_tta_variance\.nii"
                                       r"\.gz; .*"),
        "activation is the uncertainty": (["--output", str(out / "s.nii.gz"), "--uncertainty", u, "--activation", u],
                                          r"--uncertainty and --activation both write .*"),
        "report is the output folder's input": (["--output", str(out / "s.nii.gz"), "--report", str(sample)],
                                                r"--report \S+ is the input \S+: .*"),
    }


def test_bad_output_paths_are_refused_before_any_work(tmp_path, ckpt, sample, capsys):
    cases = _path_cases(tmp_path, sample)
    before = _snapshot(tmp_path)
    for name, (extra, pattern) in cases.items():
        code = main(["segment", str(sample), "--model", str(ckpt), "--device", "cpu", "--no-progress", *extra])
        err = capsys.readouterr().err
        assert code == EXIT_ERROR, name
        _one_error_line(err, pattern)
        assert _snapshot(tmp_path) == before, name


def test_output_inside_a_dicom_folder_input_is_refused(tmp_path, ckpt, shared_data, capsys):
    dicom = shared_data / "examples" / "totalsegmentator" / "dicom"
    before = sorted(p.name for p in dicom.iterdir())
    code = main(["segment", str(dicom), "--model", str(ckpt), "--output", str(dicom / "seg.nii.gz"),
                 "--device", "cpu", "--no-progress"])
    assert code == EXIT_ERROR
    _one_error_line(capsys.readouterr().err, r"--output \S+/dicom/seg\.nii\.gz is inside the input folder \S+/dicom: "
                                             r".*write the output to another folder")
    assert sorted(p.name for p in dicom.iterdir()) == before


# ---------------------------------------------------------------------------------------------- hostile labels


def test_hostile_label_names_never_leave_the_output_folder(tmp_path, sample):
    ckpt = _checkpoint(tmp_path / "hostile.safetensors", labels=["../evil", "a/b"])
    out = tmp_path / "deep" / "out"
    out.mkdir(parents=True)
    outside = _snapshot(tmp_path)
    code = main(["segment", str(sample), "--model", str(ckpt), "--output", str(out / "seg.seg.nrrd"),
                 "--probabilities", str(out / "p.nii.gz"), "--device", "cpu", "--no-progress"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["p_a_b.nii.gz", "p_evil.nii.gz", "seg.seg.nrrd"]
    now = _snapshot(tmp_path)
    assert {k: v for k, v in now.items() if not k.startswith("deep/out/")} == outside


def test_colliding_label_slugs_get_the_label_id(tmp_path, sample):
    ckpt = _checkpoint(tmp_path / "twins.safetensors", labels=["a/b", "a b"])
    out = tmp_path / "out"
    out.mkdir()
    assert main(["segment", str(sample), "--model", str(ckpt), "--output", str(out / "seg.nii.gz"),
                 "--probabilities", str(out / "p.nii.gz"), "--device", "cpu", "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["p_a_b_1.nii.gz", "p_a_b_2.nii.gz", "seg.nii.gz"]


# ---------------------------------------------------------------------------------------------- model output


def _nan_head(model) -> None:
    model.head.bias[1] = math.nan


def _inf_head(model) -> None:
    model.head.bias[2] = math.inf


def _nan_inside(model) -> None:
    next(p for name, p in model.named_parameters() if name.endswith("weight") and p.dim() == 5).view(-1)[0] = math.nan


@pytest.mark.parametrize(("poison", "kind"), [(_nan_head, "NaN"), (_inf_head, "infinite"), (_nan_inside, "NaN")])
def test_a_model_that_outputs_nan_or_inf_is_reported_as_a_model_problem(tmp_path, sample, capsys, poison, kind):
    ckpt = _checkpoint(tmp_path / "broken.safetensors", poison=poison)
    out = tmp_path / "out"
    out.mkdir()
    code = main(["segment", str(sample), "--model", str(ckpt), "--output", str(out / "seg.seg.nrrd"),
                 "--report", str(out / "r.json"), "--probabilities", str(out / "p.nii.gz"), "--device", "cpu",
                 "--precision", "fp32", "--no-progress"])
    assert code == EXIT_ERROR
    _one_error_line(capsys.readouterr().err,
                    rf"model 'tiny-hippocampus' \(\S+broken\.safetensors\) produced {kind}\b.* outputs \(.*\); this is "
                    r"a problem of the model, not of the input: the checkpoint may be corrupt or run at a precision "
                    r"it does not support; try --precision fp32 .*")
    assert list(out.iterdir()) == []


def test_the_engine_raises_model_output_error_for_the_bridge(tmp_path, sample):
    """The bridge and scripts catch the dedicated type (a ValueError) with the counts; no result is returned."""
    from medseg.inference import ModelOutputError, Segmenter, SegmentOptions
    from medseg.io import read_channels

    segmenter = Segmenter(_checkpoint(tmp_path / "nan.safetensors", poison=_nan_head), device="cpu")
    image, geometry = read_channels([sample])
    with pytest.raises(ModelOutputError, match="produced NaN outputs") as caught:
        segmenter.segment(image, geometry, SegmentOptions(precision="fp32", tta=True))
    assert caught.value.nan > 0 and caught.value.inf == 0 and isinstance(caught.value, ValueError)


# ---------------------------------------------------------------------------------------------- devices


@pytest.mark.parametrize(("device", "pattern"), [
    ("cpu:abc", r"unknown device 'cpu:abc'; use auto, cpu, cuda, cuda:N \(N a GPU index\) or mps \(available here: "
                r".*cpu\)"),
    ("foo", r"unknown device 'foo'; .*"),
    ("cpu:1", r"device 'cpu:1': cpu has no device 1; use --device cpu .*"),
    ("cuda:7", r"device 'cuda:7' asked for but this (PyTorch sees no CUDA GPU|machine has \d CUDA GPU\(s\)).*"),
])
def test_a_bad_device_is_a_clear_error(tmp_path, ckpt, sample, capsys, device, pattern):
    out = tmp_path / "out"
    out.mkdir()
    code = main(["segment", str(sample), "--model", str(ckpt), "--output", str(out / "seg.nii.gz"),
                 "--device", device, "--no-progress"])
    assert code == EXIT_ERROR
    _one_error_line(capsys.readouterr().err, pattern)
    assert list(out.iterdir()) == []


# ---------------------------------------------------------------------------------------------- Ctrl-C


def test_ctrl_c_exits_130_without_traceback_or_files(tmp_path, ckpt):
    big = tmp_path / "big.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(0).normal(size=(96, 160, 160)).astype(np.float32)),
                    str(big))
    out = tmp_path / "out"
    out.mkdir()
    (out / "seg.seg.nrrd").write_bytes(b"old")
    cmd = [sys.executable, "-m", "medseg", "segment", str(big), "--model", str(ckpt), "--output",
           str(out / "seg.seg.nrrd"), "--probabilities", str(out / "p.nii.gz"), "--report", str(out / "r.json"),
           "--device", "cpu", "--threads", "1", "--overlap", "0.5"]
    # As in a terminal: a suite started in the background by a non-interactive shell inherits SIGINT ignored,
    # and a Python child keeps an ignored SIGINT ignored, so restore the default for the child.
    process = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, env=ENV,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = b""
    while b"window" not in seen:
        chunk = os.read(process.stderr.fileno(), 4096)
        assert chunk, f"the run ended before its first progress line: {seen.decode()}"
        seen += chunk
    assert list(out.glob(f"{TEMPORARY_PREFIX}*")), "the outputs' temporaries were not reserved up front"
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=60)
    stderr = (seen + rest).decode()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert stderr.rstrip().endswith("medseg segment: interrupted (Ctrl-C); outputs are only written when a run "
                                    "completes"), stderr
    assert [p.name for p in out.iterdir()] == ["seg.seg.nrrd"] and (out / "seg.seg.nrrd").read_bytes() == b"old"


# ---------------------------------------------------------------------------------------------- messages


def test_unexpected_errors_are_one_line_with_a_hint():
    message, code = _error_message(TypeError("unsupported operand type(s) for +: 'int' and 'str'\nmore"))
    assert code == EXIT_BUG and "\n" not in message
    assert message.startswith("unexpected TypeError: unsupported operand") and "run again with -v" in message
    message, code = _error_message(RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be ..."))
    assert code == EXIT_ERROR and "\n" not in message
    assert message.startswith("the run failed: CUDA error: out of memory; if it ran out of memory use --roi")
    message, code = _error_message(PermissionError(13, "Permission denied", "/data/x.nii.gz"))
    assert (code, message) == (EXIT_ERROR, "cannot access /data/x.nii.gz: Permission denied; check the path, its "
                                           "permissions and the free space")


# ---------------------------------------------------------------------------------------------- evaluate


def _evaluate_folders(tmp_path: Path, samples: Path) -> tuple[Path, Path]:
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    shutil.copy(samples / "hippocampus_001_T1w.nii.gz", images / "case1.nii.gz")
    shutil.copy(samples / "hippocampus_001_label.nii.gz", labels / "case1.nii.gz")
    return images, labels


def test_evaluate_writes_json_and_csv_together_or_neither(tmp_path, ckpt, samples, capsys):
    images, labels = _evaluate_folders(tmp_path, samples)
    out = tmp_path / "out"
    out.mkdir()
    base = ["evaluate", "--model", str(ckpt), "--images", str(images), "--labels", str(labels), "--device", "cpu"]
    assert main([*base, "--json", str(out / "e.json"), "--csv", str(out / "e.json")]) == EXIT_ERROR
    _one_error_line(capsys.readouterr().err, r"--json and --csv both write \S+e\.json; give each its own file name")
    assert main([*base, "--json", str(out), "--csv", str(out / "e.csv")]) == EXIT_ERROR
    _one_error_line(capsys.readouterr().err, r"--json \S+/out is a folder; give a file name inside it .*")
    (labels / "case1.nii.gz").write_bytes((samples / "hippocampus_003_label.nii.gz").read_bytes())  # another grid
    assert main([*base, "--json", str(out / "e.json"), "--csv", str(out / "e.csv")]) == EXIT_ERROR
    _one_error_line(capsys.readouterr().err, r"case 'case1': label map .* has shape .*")
    assert list(out.iterdir()) == []
    shutil.copy(samples / "hippocampus_001_label.nii.gz", labels / "case1.nii.gz")
    assert main([*base, "--json", str(out / "e.json"), "--csv", str(out / "e.csv")]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["e.csv", "e.json"]
    assert (out / "e.csv").read_text().startswith("case,label,")
