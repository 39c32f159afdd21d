"""Pairing (both layouts, files and frame folders, captions), every dataset fault reported together
with its path, the frame window, and the long-side resize + centre crop."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from wan_egoexo_training.data.clips import fit_frames, frames_needed, window_indices, window_starts
from wan_egoexo_training.data.dataset_checks import DatasetError, WindowSettings, check_dataset
from wan_egoexo_training.data.pairing import find_triplets
from wan_egoexo_training.data.sample_draws import draw_window
from wan_egoexo_training.data.synthetic import write_synthetic_dataset
from wan_egoexo.errors import InputError

SETTINGS = WindowSettings(num_frames=9, frame_stride=2, height=64, width=64, resize_long=64)


def test_pairs_by_stem_in_our_layout_with_captions(tmp_path):
    root = write_synthetic_dataset(tmp_path / "d", pairs=3, frames=18, size=64, captions={"pair01": "a red person"})
    (root / "captions.json").write_text(json.dumps({"pair02": "from json", "pair01": "loses to the txt"}))
    found = find_triplets(root, need_reference=True)
    assert not found.faults
    assert [t.stem for t in found.triplets] == ["pair00", "pair01", "pair02"]
    assert [t.caption for t in found.triplets] == [None, "a red person", "from json"]
    assert all(t.ego.parent.name == "ego" and t.exo.parent.name == "exo" and t.reference.suffix == ".png"
               for t in found.triplets)
    geometry = check_dataset(found, SETTINGS, need_reference=True)
    assert {g.frames for g in geometry.values()} == {18}


def test_authors_layout_with_frame_folders(tmp_path):
    root = write_synthetic_dataset(tmp_path / "d", pairs=2, frames=17, size=64, layout="authors", frame_folders=True)
    found = find_triplets(root, need_reference=True)
    assert [t.stem for t in found.triplets] == ["pair00", "pair01"]
    assert found.triplets[0].ego.parent.name == "First_Video" and found.triplets[0].ego.is_dir()
    assert found.triplets[0].reference.parent.name == "Reference_Image"
    assert check_dataset(found, SETTINGS, need_reference=True)["pair00"].frames == 17
    sorted_pairs = find_triplets(root, need_reference=True, pairing="sorted")
    assert [(t.ego, t.exo) for t in sorted_pairs.triplets] == [(t.ego, t.exo) for t in found.triplets]


def test_every_fault_is_reported_together_with_its_path(tmp_path):
    root = write_synthetic_dataset(tmp_path / "d", pairs=6, frames=18, size=64, frame_folders=True)
    shutil.rmtree(root / "exo" / "pair00")  # unpaired ego
    (root / "exo" / "pair00.mp4").unlink(missing_ok=True)
    for frame in sorted((root / "ego" / "pair01").iterdir())[10:]:  # too short: 10 < 17 frames
        frame.unlink()
    for frame in sorted((root / "exo" / "pair01").iterdir())[10:]:
        frame.unlink()
    (root / "ego" / "pair02" / "00003.png").write_bytes(b"not a png")  # unreadable
    shutil.rmtree(root / "ego" / "pair02")
    (root / "ego" / "pair02.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    for frame in sorted((root / "exo" / "pair03").iterdir())[16:]:  # exo shorter than its ego
        frame.unlink()
    Image.new("RGB", (32, 40)).save(root / "exo" / "pair04" / "00005.png")  # one frame of another size
    for view in ("ego", "exo"):  # portrait frames: too narrow for the 64x64 crop after the resize
        for frame in (root / view / "pair05").iterdir():
            Image.new("RGB", (40, 64)).save(frame)
    (root / "reference" / "pair03.png").unlink()
    with pytest.raises(DatasetError) as raised:
        check_dataset(find_triplets(root, need_reference=True), SETTINGS, need_reference=True)
    message = str(raised.value)
    expected = [
        (root / "ego" / "pair00", "has no exo partner"),
        (root / "ego" / "pair01", "has 10 frames; 9 frames at stride 2 need at least 17"),
        (root / "ego" / "pair02.mp4", "unreadable"),
        (root / "exo" / "pair03", "has no reference image"),
        (root / "exo" / "pair04" / "00005.png", "frame is 32x40 but 00000.png is 64x64"),
        (root / "ego" / "pair05", "smaller than the 64x64 crop"),
    ]
    for path, problem in expected:
        assert any(str(path) in line and problem in line for line in message.splitlines()), (path, problem, message)
    assert len(raised.value.faults) >= len(expected)


def test_unequal_lengths_and_missing_folders(tmp_path):
    root = write_synthetic_dataset(tmp_path / "d", pairs=1, frames=20, size=64, frame_folders=True, references=False)
    for frame in sorted((root / "exo" / "pair00").iterdir())[18:]:
        frame.unlink()
    with pytest.raises(DatasetError, match=r"has 18 frames but its ego partner .* has 20"):
        check_dataset(find_triplets(root, need_reference=False), SETTINGS, need_reference=False)
    with pytest.raises(DatasetError, match="no reference/"):
        check_dataset(find_triplets(root, need_reference=True), SETTINGS, need_reference=True)
    shutil.rmtree(root / "exo")
    with pytest.raises(InputError, match="has no exo/ folder"):
        find_triplets(root, need_reference=False)


def test_window_draws_cover_every_start_at_the_stride():
    starts = window_starts(30, 9, 2)
    assert list(starts) == list(range(30 - frames_needed(9, 2) + 1))
    drawn = {draw_window(starts, 0.0, seed)[0] for seed in range(400)}
    assert drawn == set(starts.tolist())
    indices = window_indices(5, 9, 2)
    assert len(indices) == 9 and indices[0] == 5 and np.all(np.diff(indices) == 2) and indices[-1] == 21
    with pytest.raises(InputError, match="need 17"):
        window_starts(16, 9, 2)


def test_long_side_resize_then_centre_crop():
    # a 120x80 frame with a bright column at x = 70: resized by 0.8 to 96x64, cropped 16 px from the left,
    # the column lands at 70 * 0.8 - 16 = 40
    frame = np.zeros((1, 80, 120, 3), dtype=np.uint8)
    frame[0, :, 69:72] = 255
    frame[0, 40:] += 30  # the lower half brighter: rows keep their order
    out = fit_frames(frame, resize_long=96, height=64, width=64)
    assert out.shape == (3, 1, 64, 64) and out.min() >= -1 and out.max() <= 1
    column = int(out[0, 0].mean(0).argmax())
    assert abs(column - 40) <= 1
    assert out[0, 0, 50:, :30].mean() > out[0, 0, :14, :30].mean()
    with pytest.raises(InputError, match="smaller than the 128x64 crop"):
        fit_frames(frame, resize_long=96, height=64, width=128)
