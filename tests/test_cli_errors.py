"""Every bad input on the command line ends in exit code 2 and one line ``medseg error: <file>: <reason>``.

The cases run in-process through :func:`medseg.cli.main` (what the console
script calls); the last test runs the real entry points as subprocesses.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from medseg.cli import main
from medseg.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
CT = REPO / "sample_data" / "ct_organs"
CT_CONFIG = REPO / "tests" / "data" / "ct_organs_config.yaml"  # complete: trained as it is
CT_LABEL = CT / "labelsTs" / "case_006.nii.gz"
NUCLEI_MODEL = REPO / "sample_data" / "models" / "nuclei_2d"
NOT_UTF8 = b"name: caf\xe9\n"  # Latin-1, as an editor on Windows may save it


def _write(path: Path, content: str | bytes | dict | list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, dict | list):
        content = json.dumps(content)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


# ---- command lines ---------------------------------------------------------------------------------------------
def _train(tmp: Path, config: Path = CT_CONFIG, data: Path | None = None, *extra: str) -> list[str]:
    """``medseg train`` into ``tmp/run``, by default of a one-case dataset; options in ``extra`` win."""
    if data is None:
        entry = {"image": str(CT / "imagesTr" / "case_000.nii.gz"), "label": str(CT / "labelsTr" / "case_000.nii.gz")}
        data = _write(tmp / "dataset.json", {"name": "ct", "training": [entry]})
    return ["train", str(config), "--data", str(data), "--out", str(tmp / "run"), "--max-epochs", "1",
            "--device", "cpu", *extra]  # fmt: skip


def _dataset(tmp: Path, **top_level: object) -> list[str]:
    """``medseg train`` on a dataset.json with ``top_level`` keys over a one-case ``training`` list."""
    desc = {"training": [{"image": "imagesTr/a.nii.gz", "label": "labelsTr/a.nii.gz"}], **top_level}
    return _train(tmp, CT_CONFIG, _write(tmp / "d.json", desc))


def _evaluate(tmp: Path, *extra: str, pred: Path = CT_LABEL) -> list[str]:
    """``medseg evaluate`` of ``pred`` against a CT reference into ``tmp/eval``; options in ``extra`` win."""
    return ["evaluate", str(pred), str(CT_LABEL), "--out", str(tmp / "eval"), "--no-overlays", *extra]


def _segment(model: Path) -> list[str]:
    return ["segment", str(model), str(CT / "imagesTs" / "case_006.nii.gz"), "--out", str(model.parent / "seg")]


_NET = {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [4, 8], "strides": [2]}
_WINDOW = {"_target_": "ScaleIntensityRanged", "a_min": -100, "a_max": 200, "b_min": 0.0, "b_max": 1.0, "clip": True}
_INFERER = {"_target_": "SlidingWindowInferer", "roi_size": [16, 16, 16]}


def _bundle(tmp: Path, config: dict, metadata: str | None = None) -> list[str]:
    """``medseg segment`` with a MONAI bundle of ``config`` (configs/inference.json) and dummy weights."""
    _write(tmp / "bundle" / "configs" / "inference.json", config)
    if metadata is not None:
        _write(tmp / "bundle" / "configs" / "metadata.json", metadata)
    _write(tmp / "bundle" / "models" / "model.pt", b"never read: the config is refused first")
    return _segment(tmp / "bundle")


def _bundle_steps(tmp: Path, *steps: dict, metadata: str | None = None) -> list[str]:
    """:func:`_bundle` of a UNet whose preprocessing is ``steps``."""
    config = {"network_def": _NET, "inferer": _INFERER, "preprocessing": {"transforms": list(steps)}}
    return _bundle(tmp, config, metadata)


def _truncated_checkpoint(tmp: Path) -> Path:
    buf = io.BytesIO()
    torch.save({"network": {"w": torch.zeros(4096)}, "epoch": 3}, buf)
    return _write(tmp / "run" / "checkpoint_last.pt", buf.getvalue()[: len(buf.getvalue()) // 2])


# ---- the bad inputs ----------------------------------------------------------------------------------------------
# name -> builder(tmp) returning (argv, the file or option the line names, regex of the reason after it)
Case = Callable[[Path], tuple[list[str], Path | str, str]]
D, INFERENCE = "d.json", Path("bundle/configs/inference.json")
CASES: dict[str, Case] = {
    # workflow config (YAML)
    "config-not-utf8": lambda t: (
        _train(t, _write(t / "c.yaml", NOT_UTF8)), t / "c.yaml", r"config is not UTF-8 text \(byte 0xe9 at offset 9\)"),
    "config-bad-yaml": lambda t: (
        _train(t, _write(t / "c.yaml", "name: [a\nb: c\n")), t / "c.yaml",
        r"config is not valid YAML \(expected ',' or '\]', but got ':' at line 2, column 2\)"),
    "config-yaml-list": lambda t: (
        _train(t, _write(t / "c.yaml", "- a\n- b\n")), t / "c.yaml", r"config must be a mapping .*, got a list"),
    "config-empty": lambda t: (
        _train(t, _write(t / "c.yaml", "")), t / "c.yaml", r"config must be a mapping .*, got an empty document"),
    "config-missing": lambda t: (_train(t, t / "none.yaml"), t / "none.yaml", r"cannot read config \(no such file\)"),
    "config-folder": lambda t: (_train(t, t), t, r"cannot read config \(it is a folder\)"),
    "config-unknown-key": lambda t: (
        _train(t, _write(t / "c.yaml", CT_CONFIG.read_text() + "bogus: 1\n")), t / "c.yaml", r"invalid config: bogus"),
    # dataset.json
    "dataset-not-utf8": lambda t: (
        _train(t, CT_CONFIG, _write(t / D, b'{"name": "\xff"}')), t / D, r"dataset description is not UTF-8 text"),
    "dataset-bad-json": lambda t: (
        _train(t, CT_CONFIG, _write(t / D, '{"training": [}')), t / D,
        r"dataset description is not valid JSON \(Expecting value at line 1, column 15\)"),
    "dataset-top-level-list": lambda t: (
        _train(t, CT_CONFIG, _write(t / D, [])), t / D, r"must be an object at the top level, got an array"),
    "dataset-list-label": lambda t: (
        _dataset(t, training=[{"image": "a.nii.gz", "label": ["b.nii.gz", "c.nii.gz"]}]), t / D,
        r"training\[0\]\.label must be one file path, got \['b\.nii\.gz', 'c\.nii\.gz'\]"),
    "dataset-number-image": lambda t: (
        _dataset(t, training=[{"image": 7, "label": "b.nii.gz"}]), t / D,
        r"training\[0\]\.image must be one file path, got 7"),
    "dataset-missing-keys": lambda t: (
        _dataset(t, training=[{"img": "a.nii.gz"}]), t / D, r"training\[0\] has no 'image' and no 'label' key"),
    "dataset-entry-not-object": lambda t: (
        _dataset(t, validation=["a.nii.gz"]), t / D, r"validation\[0\] must be an object with 'image' and 'label'"),
    "dataset-labels-list": lambda t: (
        _dataset(t, labels=["background", "liver"]), t / D, r"'labels' must map indices to names"),
    "dataset-validation-not-list": lambda t: (
        _dataset(t, validation="b.nii.gz"), t / D, r"'validation' must be a list of entries, got 'b\.nii\.gz'"),
    "spacing-string": lambda t: (
        _dataset(t, spacing_mm="0.5"), t / D, r"'spacing_mm' must be a list of 3 positive numbers .*, got '0\.5'"),
    "spacing-length": lambda t: (
        _dataset(t, spacing_mm=[1.0, 1.0]), t / D, r"'spacing_mm' must be a list of 3 .*, got \[1\.0, 1\.0\]"),
    "spacing-negative": lambda t: (
        _dataset(t, spacing_mm=[1.0, -1.0, 2.0]), t / D, r"'spacing_mm' must be a list of 3 positive numbers"),
    # training options and resume
    "max-epochs-zero": lambda t: (_train(t, CT_CONFIG, None, "--max-epochs", "0"), "max_epochs", r"at least 1, got 0"),
    "max-minutes-nan": lambda t: (_train(t, CT_CONFIG, None, "--max-minutes", "nan"), "max_minutes", r"positive"),
    "train-out-is-file": lambda t: (
        _train(t, CT_CONFIG, None, "--out", str(_write(t / "f", ""))), t / "f", r"is a file, but the output .* folder"),
    "resume-truncated-checkpoint": lambda t: (
        _train(t, CT_CONFIG, None, "--resume"), _truncated_checkpoint(t),
        r"unreadable checkpoint, truncated or corrupt \("),
    # model folders and MONAI bundles
    "model-folder-missing": lambda t: (_segment(t / "nomodel"), t / "nomodel", r"no such model directory"),
    "model-card-not-json": lambda t: (
        _segment(_write(t / "m" / "model_card.json", "{oops").parent), t / "m" / "model_card.json",
        r"model card is not valid JSON \(Expecting property name enclosed in double quotes at line 1, column 2\)"),
    "model-card-not-utf8": lambda t: (
        _segment(_write(t / "m" / "model_card.json", NOT_UTF8).parent), t / "m" / "model_card.json",
        r"model card is not UTF-8 text"),
    "model-card-list": lambda t: (
        _segment(_write(t / "m" / "model_card.json", [1]).parent), t / "m" / "model_card.json",
        r"model card must be an object at the top level, got an array"),
    "bundle-bad-yaml": lambda t: (
        _segment(_write(t / "b" / "configs" / "inference.yaml", "a: b: c\n").parents[1]),
        t / "b" / "configs" / "inference.yaml", r"bundle config is not valid YAML \(mapping .* line 1, column 5"),
    "bundle-no-network": lambda t: (
        _bundle(t, {"inferer": _INFERER}), t / INFERENCE, r"the bundle config has no 'network_def' entry"),
    "bundle-no-out-channels": lambda t: (
        _bundle(t, {"network_def": {k: v for k, v in _NET.items() if k != "out_channels"}}), t / INFERENCE,
        r"network_def has no 'out_channels' entry"),
    "bundle-out-channels-null": lambda t: (
        _bundle(t, {"network_def": {**_NET, "out_channels": None}}), t / INFERENCE,
        r"network_def out_channels must be a number, got None"),
    "bundle-no-roi": lambda t: (
        _bundle(t, {"network_def": _NET, "inferer": {"overlap": 0.5}}), t / INFERENCE, r"has no 'roi_size' entry"),
    "bundle-step-missing-key": lambda t: (
        _bundle_steps(t, {"_target_": "Spacingd", "keys": "image"}, _WINDOW), t / INFERENCE,
        r"preprocessing\[0\] Spacingd has no 'pixdim' entry"),
    "bundle-window-not-number": lambda t: (
        _bundle_steps(t, {**_WINDOW, "a_max": "high"}), t / INFERENCE,
        r"preprocessing\[0\] ScaleIntensityRanged a_max must be a number, got 'high'"),
    "bundle-metadata-not-json": lambda t: (
        _bundle_steps(t, _WINDOW, metadata="{"), t / "bundle" / "configs" / "metadata.json",
        r"bundle metadata is not valid JSON"),
    "bundle-circular-reference": lambda t: (
        _bundle(t, {"network_def": "@net", "net": "@network_def"}), t / INFERENCE, r"circular reference '@net'"),
    # evaluate
    "iou-threshold-zero": lambda t: (
        _evaluate(t, "--instances", "--iou-threshold", "0"), "--iou-threshold", r"must be in \(0, 1\], got 0\.0"),
    "iou-threshold-above-one": lambda t: (_evaluate(t, "--iou-threshold", "1.5"), "--iou-threshold", r"got 1\.5"),
    "tolerance-nan": lambda t: (_evaluate(t, "--tolerance-mm", "nan"), "--tolerance-mm", r"finite .*, got nan"),
    "tolerance-negative": lambda t: (_evaluate(t, "--tolerance-mm", "-1"), "--tolerance-mm", r">= 0 mm, got -1"),
    "evaluate-out-is-file": lambda t: (
        _evaluate(t, "--out", str(_write(t / "f", ""))), t / "f", r"is a file, but --out is the folder"),
    "evaluate-missing-pred": lambda t: (
        _evaluate(t, pred=t / "no.nii.gz"), t / "no.nii.gz", r"no such file or folder"),
    "evaluate-labels-not-utf8": lambda t: (
        _evaluate(t, "--labels", str(_write(t / "n.json", b"\x81"))), t / "n.json",
        r"label names file is not UTF-8 text \(byte 0x81 at offset 0\)"),
    "evaluate-labels-bad-json": lambda t: (
        _evaluate(t, "--labels", str(_write(t / "n.json", "{1: 2}"))), t / "n.json",
        r"label names file is not valid JSON"),
    # measure
    "measure-missing-path": lambda t: (
        ["measure", str(t / "no.nii.gz"), "--out", str(t / "m.csv")], t / "no.nii.gz", r"no such file or folder"),
    "measure-labels-list": lambda t: (
        ["measure", str(CT_LABEL), "--out", str(t / "m.csv"), "--labels", str(_write(t / "n.json", ["liver"]))],
        t / "n.json", r"label names file must be an object at the top level, got an array"),
}


# ---- checks ----------------------------------------------------------------------------------------------------
def _run_in_process(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def _assert_one_error_line(code: int, out: str, err: str, culprit: Path | str, reason: str) -> None:
    assert "Traceback" not in out + err, err
    assert code == 2, (code, out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    prefix = f"medseg error: {culprit}: "
    assert lines[0].startswith(prefix), lines[0]
    assert re.search(reason, lines[0][len(prefix) :]), lines[0]


@pytest.fixture(autouse=True)
def _plain_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.setenv("NO_COLOR", "1")


@pytest.mark.parametrize("name", CASES)
def test_bad_input_gives_one_error_line(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv, culprit, reason = CASES[name](tmp_path)
    _assert_one_error_line(*_run_in_process(argv, capsys), culprit, reason)


def test_checkpoint_of_another_kind_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "run" / "checkpoint_last.pt"
    ckpt.parent.mkdir()
    torch.save({"epoch": 3}, ckpt)
    code, out, err = _run_in_process(_train(tmp_path, CT_CONFIG, None, "--resume"), capsys)
    _assert_one_error_line(code, out, err, ckpt, r"not a medseg training checkpoint \(no 'network' entry\)")


def test_message_with_markup_and_newlines_stays_one_literal_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail(path: Path) -> None:
        raise ConfigError("first [bold]line[/bold]\nsecond line " + "x" * 200, "/data/[red]scan.nii.gz")

    monkeypatch.setattr("medseg.cli.evaluate_commands.read_label_names", fail)
    code, out, err = _run_in_process(_evaluate(Path("/nowhere"), "--labels", "n.json"), capsys)
    literal = r"^first \[bold\]line\[/bold\] second line x{200}$"
    _assert_one_error_line(code, out, err, "/data/[red]scan.nii.gz", literal)


def test_log_json_folder_is_created_and_a_folder_as_log_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy2(REPO / "sample_data" / "nuclei" / "imagesTs" / "case_004.tif", scans)
    log = tmp_path / "logs" / "deep" / "run.jsonl"
    argv = ["batch", str(NUCLEI_MODEL), str(scans), str(tmp_path / "out"), "--quiet", "--log-json"]
    code, _, err = _run_in_process([*argv, str(log)], capsys)
    assert code == 0, err
    assert json.loads(log.read_text().splitlines()[-1])["event"] == "run_end"
    code, out, err = _run_in_process([*argv, str(tmp_path)], capsys)
    _assert_one_error_line(code, out, err, tmp_path, r"cannot write the event log \(Is a directory\)")


@pytest.mark.parametrize(
    ("entry", "name"),
    [
        ([str(Path(sys.executable).with_name("medseg"))], "config-not-utf8"),
        ([sys.executable, "-m", "medseg"], "iou-threshold-zero"),
    ],
    ids=["console-script", "python-m"],
)
def test_real_entry_points(entry: list[str], name: str, tmp_path: Path) -> None:
    argv, culprit, reason = CASES[name](tmp_path)
    proc = subprocess.run([*entry, *argv], capture_output=True, text=True, timeout=120, check=False)
    _assert_one_error_line(proc.returncode, proc.stdout, proc.stderr, culprit, reason)
