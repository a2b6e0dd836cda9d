"""Bad datasets get one clear error naming what is wrong, in training (the datamanager every method uses) and in
evaluation; evaluating a file on another scene warns, naming both."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from nscodec.data import NscDataError, NscDataManagerConfig, dataset_fingerprint, load_split


@pytest.fixture
def copy(scene, tmp_path) -> Path:
    """A private copy of the generated scene, to break."""
    dst = tmp_path / "scene"
    shutil.copytree(scene, dst)
    return dst


def _datamanager(data: Path):
    from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig

    cfg = NscDataManagerConfig(dataparser=BlenderDataParserConfig(data=data), train_num_rays_per_batch=64)
    return cfg.setup(device="cpu", test_mode="val")


def _frames(data: Path, split: str):
    return json.loads((data / f"transforms_{split}.json").read_text())


def _write_frames(data: Path, split: str, meta) -> None:
    (data / f"transforms_{split}.json").write_text(json.dumps(meta))


def _image(data: Path, split: str, i: int) -> Path:
    return data / (_frames(data, split)["frames"][i]["file_path"].replace("./", "") + ".png")


def test_a_good_scene_loads(copy):
    dm = _datamanager(copy)
    assert len(dm.train_dataset) == 16
    cams, ds = load_split(copy, "test")
    assert len(ds) == 3 and ds.get_image_float32(0).shape[:2] == (48, 48)


def test_truncated_image_names_the_file(copy):
    img = _image(copy, "train", 3)
    img.write_bytes(img.read_bytes()[: img.stat().st_size // 2])
    with pytest.raises(NscDataError, match=str(img.name)):
        _datamanager(copy)
    eval_img = _image(copy, "test", 1)
    eval_img.write_bytes(eval_img.read_bytes()[:100])
    _, ds = load_split(copy, "test")
    with pytest.raises(NscDataError, match=eval_img.name):
        ds.get_image_float32(1)


def test_missing_image_names_the_file(copy):
    img = _image(copy, "train", 5)
    img.unlink()
    with pytest.raises(NscDataError, match=f"frame 5.*{img.name}.*does not exist"):
        _datamanager(copy)


@pytest.mark.parametrize("split", ["train", "test"])
def test_non_finite_pose_names_the_frame(copy, split):
    meta = _frames(copy, split)
    meta["frames"][1]["transform_matrix"][0][3] = float("nan")
    (copy / f"transforms_{split}.json").write_text(json.dumps(meta).replace("NaN", "NaN"))
    with pytest.raises(NscDataError, match=rf"transforms_{split}.json, frame 1 .*non-finite"):
        if split == "train":
            _datamanager(copy)
        else:
            load_split(copy, split)


def test_empty_split_is_one_clear_error(copy):
    meta = _frames(copy, "test")
    meta["frames"] = []
    _write_frames(copy, "test", meta)
    with pytest.raises(NscDataError, match="no frames"):
        load_split(copy, "test")
    (copy / "transforms_val.json").unlink()
    with pytest.raises(NscDataError, match="split 'val' not found"):
        _datamanager(copy)


def test_wrong_image_size_names_the_file(copy):
    img = _image(copy, "train", 2)
    Image.open(img).resize((40, 40)).save(img)
    with pytest.raises(NscDataError, match=f"{img.name} is 40x40.*48x48"):
        _datamanager(copy)


def test_ns_train_on_a_broken_dataset_prints_one_line(copy):
    """The `ns-train` console script itself (through the start-up hook): one line, exit status 2, no traceback."""
    img = _image(copy, "train", 0)
    img.write_bytes(b"not a png")
    ns_train = Path(sys.executable).parent / "ns-train"
    r = subprocess.run([str(ns_train), "nscodec-tensorf", "--data", str(copy), "--max-num-iterations", "1", "--vis", "tensorboard",
                        "--output-dir", str(copy.parent / "out")], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "ns-train: error:" in r.stderr and img.name in r.stderr


def test_evaluating_on_another_dataset_warns_naming_both(scene, copy, tmp_path, capsys):
    from nerfstudio.data.scene_box import SceneBox

    from nscodec.tools.evaluate import evaluate_nsc
    from nscodec.io import export_model
    from nscodec.scenes import SceneSpec, generate_blender_scene
    from nscodec.tensorf.model import NscTensoRFModelConfig

    assert dataset_fingerprint(copy) == dataset_fingerprint(scene)  # the same scene elsewhere: same fingerprint
    other = generate_blender_scene(tmp_path / "other", spec=SceneSpec.random(7), resolution=48, n_train=4, n_val=1,
                                   n_test=2, progress=False)
    assert dataset_fingerprint(other) != dataset_fingerprint(scene)
    torch.manual_seed(0)
    model = NscTensoRFModelConfig(init_resolution=8, occupancy_resolution=8).setup(
        scene_box=SceneBox(aabb=torch.tensor([[-1.5] * 3, [1.5] * 3])), num_train_data=16)
    model.occupancy.num_updates.fill_(1)
    path = tmp_path / "m.nsc"
    export_model(model, path, meta={"train": {"data": str(scene), "fingerprint": dataset_fingerprint(scene)}})
    same = evaluate_nsc(path, copy, progress=False)
    assert "dataset_warning" not in same
    res = evaluate_nsc(path, other, progress=False)
    assert str(other) in res["dataset_warning"] and str(scene) in res["dataset_warning"]
    assert "not the dataset this file was trained on" in capsys.readouterr().err


def test_a_folder_without_camera_files_gets_its_data_error_and_no_other_dataset_warning(tmp_path, capsys):
    """The warning compares camera files; where there are none to compare, the missing dataset is the one error."""
    from nscodec.data import warn_if_other_dataset

    empty = tmp_path / "nothing"
    empty.mkdir()
    assert warn_if_other_dataset({"data": "/elsewhere", "fingerprint": "0123456789abcdef"}, empty) is None
    assert capsys.readouterr().err == ""
    with pytest.raises(NscDataError, match="split 'test' not found"):
        load_split(empty, "test")
