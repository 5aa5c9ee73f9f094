import zipfile

import numpy as np
import pytest
from PIL import Image

from ambient.data import embedded_faces, image_folder, read_image_zip, write_image_zip


def test_embedded_faces_are_the_first_100_lfw_faces_cropped():
    images, ids = embedded_faces()
    assert images.shape == (100, 1, 24, 24) and images.dtype == np.uint8
    assert ids[0] == "lfw_subset:0" and len(set(ids)) == 100
    assert images.std() > 20  # real faces, not a blank array
    with pytest.raises(ValueError, match="num_images"):
        embedded_faces(101)


def _write(folder, name, arr, mode=None, fmt=None):
    Image.fromarray(arr, mode=mode).save(folder / name, format=fmt)


def test_image_folder_converts_any_size_and_mode(tmp_path):
    rng = np.random.default_rng(0)
    _write(tmp_path, "a.png", rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
    _write(tmp_path, "b.jpg", rng.integers(0, 255, (70, 50, 3), dtype=np.uint8))
    _write(tmp_path, "c.png", rng.integers(0, 255, (33, 33), dtype=np.uint8))
    Image.fromarray(rng.integers(0, 255, (20, 30, 4), dtype=np.uint8), "RGBA").save(tmp_path / "d.png")
    Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).convert("P").save(tmp_path / "e.png")
    rgb, ids = image_folder(tmp_path, 16, channels=3)
    assert rgb.shape == (5, 3, 16, 16) and ids == ["a.png", "b.jpg", "c.png", "d.png", "e.png"]
    gray, _ = image_folder(tmp_path, 8, channels=1)
    assert gray.shape == (5, 1, 8, 8)


def test_center_crop_keeps_the_middle(tmp_path):
    arr = np.zeros((10, 30, 3), np.uint8)
    arr[:, 10:20] = 255  # the central square is white, the sides black
    _write(tmp_path, "wide.png", arr)
    images, _ = image_folder(tmp_path, 10)
    assert images.min() == 255


@pytest.mark.parametrize("case", ["empty", "text", "corrupt", "mode", "missing"])
def test_image_folder_errors_name_the_culprit(tmp_path, case):
    good = np.zeros((8, 8, 3), np.uint8)
    _write(tmp_path, "ok.png", good)
    if case == "empty":
        (tmp_path / "ok.png").unlink()
        culprit = str(tmp_path)
    elif case == "text":
        (tmp_path / "notes.txt").write_text("hello")
        culprit = "notes.txt"
    elif case == "corrupt":
        (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
        culprit = "broken.png"
    elif case == "mode":
        Image.fromarray(np.zeros((8, 8), np.uint16)).save(tmp_path / "deep.png")
        culprit = "deep.png"
    else:
        tmp_path = tmp_path / "nope"
        culprit = "nope"
    with pytest.raises((ValueError, FileNotFoundError), match=culprit):
        image_folder(tmp_path, 8)


def test_dataset_zip_round_trip_is_exact_and_reproducible(tmp_path):
    images, ids = embedded_faces(10, 24)
    m = write_image_zip(tmp_path / "a.zip", images, ids, {"source": "x"})
    write_image_zip(tmp_path / "b.zip", images, ids, {"source": "x"})
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()  # stable bytes for DVC
    ds = read_image_zip(tmp_path / "a.zip")
    assert np.array_equal(ds.images, images)
    assert m["images"][3]["source"] == "lfw_subset:3" and len(m["images"][3]["sha256"]) == 64
    assert ds.manifest["source"] == "x"
    x = ds.as_float()
    assert x.min() >= -1 and x.max() <= 1


def test_corrupt_dataset_zip_is_detected(tmp_path):
    images, ids = embedded_faces(4, 24)
    write_image_zip(tmp_path / "a.zip", images, ids)
    # swap one image for another valid PNG: its sha256 no longer matches the manifest
    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}
    entries["000001.png"] = entries["000002.png"]
    with zipfile.ZipFile(tmp_path / "b.zip", "w") as zf:
        for n, d in entries.items():
            zf.writestr(n, d)
    with pytest.raises(ValueError, match="000001.png"):
        read_image_zip(tmp_path / "b.zip")
    (tmp_path / "c.zip").write_bytes((tmp_path / "a.zip").read_bytes()[:100])
    with pytest.raises(ValueError, match="c.zip"):
        read_image_zip(tmp_path / "c.zip")
    with pytest.raises(FileNotFoundError, match="prepare"):
        read_image_zip(tmp_path / "missing.zip")


def test_uint8_and_signed_range_round_trip():
    """The one conversion between uint8 images and the models' [-1, 1] range, both ways: every
    uint8 value survives the round trip, and values outside [-1, 1] saturate."""
    import torch

    from ambient.utils import signed_to_uint8, uint8_to_signed

    values = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16)
    x = uint8_to_signed(values)
    assert x.dtype == torch.float32 and float(x.min()) == -1.0 and float(x.max()) == 1.0
    assert np.array_equal(signed_to_uint8(x).numpy(), values)
    assert uint8_to_signed(values, torch.float64).dtype == torch.float64
    assert signed_to_uint8(torch.tensor([-3.0, 1.5])).tolist() == [0, 255]
