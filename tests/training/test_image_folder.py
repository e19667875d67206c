"""Image folders (``odedsl train --data DIR``) read through the torchvision test double of
``fake_torchvision/`` (torchvision cannot be installed here): real PNG files in class
folders, with or without train/ and test/ (or val/) parts, the shapes and channels they give,
a spec fitted to them, one epoch through the CLI, and a located one-line error (exit 2) for
every folder that cannot be trained on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from odedsl.cli.main import main
from odedsl.diagnostics import DslError
from odedsl.training.data import load_data

from .imagefolders import FAKE, class_folders, png

pytestmark = pytest.mark.usefixtures("fake_torchvision")

ABC = {"ant": 5, "bee": 5, "cat": 5}
SMALL = ["--set", "depth=2", "--set", "width=4", "--epochs", "1", "--batch-size", "4"]


def test_the_double_is_what_import_torchvision_finds() -> None:
    import torchvision

    assert Path(torchvision.__file__).parent.parent == FAKE
    assert "test double" in (torchvision.__doc__ or "")


def test_the_double_follows_torchvision(tmp_path: Path) -> None:
    """The torchvision behaviour the double stands for, pinned: a change to it that drifted
    from torchvision would make the tests below test something torchvision does not do."""
    from torchvision import datasets, transforms

    class_folders(tmp_path / "b", {"y": 1}, mode="L")
    class_folders(tmp_path / "a", {"x": 2})
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    png(tmp_path / "a" / "z" / "UPPER.PNG")  # nested, upper-case extension: both count
    folder = datasets.ImageFolder(str(tmp_path))
    assert folder.classes == ["a", "b"] and folder.class_to_idx == {"a": 0, "b": 1}
    names = [Path(p).relative_to(tmp_path).as_posix() for p, _ in folder.samples]
    assert names == ["a/x/00.png", "a/x/01.png", "a/z/UPPER.PNG", "b/y/00.png"]
    assert folder.targets == [0, 0, 0, 1] and len(folder) == 4
    image, target = folder[3]  # the default loader converts to RGB
    assert isinstance(image, Image.Image) and image.mode == "RGB" and target == 1

    img = Image.new("RGB", (13, 9))
    assert transforms.Resize(9)(img) is img  # already the size: returned as it is
    assert transforms.Resize(4)(img).size == (5, 4)  # int(4 · 13 / 9) = int(5.78)
    assert transforms.Resize(4)(Image.new("RGB", (9, 13))).size == (4, 5)
    assert transforms.Resize((3, 7))(img).size == (7, 3)  # (height, width)
    assert transforms.CenterCrop(4)(Image.new("L", (5, 4))).size == (4, 4)
    assert transforms.CenterCrop(6)(Image.new("L", (5, 4))).size == (6, 6)  # zero padding
    assert transforms.Grayscale(1)(img).mode == "L"
    assert transforms.Grayscale(3)(img).mode == "RGB"

    pixels = torch.arange(2 * 3 * 3, dtype=torch.uint8).reshape(2, 3, 3)  # H, W, C
    rgb = Image.fromarray(pixels.numpy())
    x = transforms.ToTensor()(rgb)
    assert x.shape == (3, 2, 3) and x.dtype == torch.float32
    assert torch.equal(x, pixels.permute(2, 0, 1).float() / 255)
    y = transforms.Normalize([0.5] * 3, [0.5] * 3)(x)
    assert torch.allclose(y, (x - 0.5) / 0.5) and not torch.equal(x, y)  # on a copy
    both = transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.5], [0.5])])
    assert both(Image.new("L", (4, 2), 255)).shape == (1, 2, 4)

    (tmp_path / "a" / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="Couldn't find any class folder"):
        datasets.ImageFolder(str(tmp_path / "a" / "empty"))
    (tmp_path / "c").mkdir()
    with pytest.raises(FileNotFoundError, match="Found no valid file for the classes c"):
        datasets.ImageFolder(str(tmp_path))


def test_rgb_folder_without_split(tmp_path: Path) -> None:
    root = class_folders(tmp_path / "pets", ABC, size=(13, 9))
    (root / "ant" / "notes.txt").write_text("a non-image file is skipped")
    bundle = load_data(root)
    assert bundle.name == "pets" and bundle.shape == (3, 9, 9) and bundle.classes == 3
    assert (len(bundle.train), len(bundle.test)) == (12, 3)  # a fixed 20% of each class
    x, y = bundle.train[0]
    assert x.shape == (3, 9, 9) and x.dtype == torch.float32 and 0 <= y < 3
    assert -1 <= float(x.min()) and float(x.max()) <= 1 and float(x.std()) > 0.1
    assert sorted(bundle.test[i][1] for i in range(3)) == [0, 1, 2]
    again = load_data(root)  # the split is fixed
    assert [again.test[i][1] for i in range(3)] == [bundle.test[i][1] for i in range(3)]
    assert torch.equal(again.test[0][0], bundle.test[0][0])


def test_grayscale_folder_has_one_channel_and_odd_sizes_are_cropped(tmp_path: Path) -> None:
    root = class_folders(tmp_path / "gray", {"a": 3, "b": 3}, size=(9, 13), mode="L")
    bundle = load_data(root)
    assert bundle.shape == (1, 9, 9) and bundle.train[0][0].shape == (1, 9, 9)
    assert load_data(root, size=6).train[0][0].shape == (1, 6, 6)  # --set size=6
    assert load_data(root, size=20).train[0][0].shape == (1, 20, 20)


def test_channels_asked_for_convert_the_images(tmp_path: Path) -> None:
    """``--set channels=3`` on grayscale images (ImageFolder's loader makes them RGB) and
    ``channels=1`` on colour ones: they were ignored, and the spec then refused (E220)."""
    gray = class_folders(tmp_path / "gray", {"a": 3, "b": 3}, mode="L")
    rgb = class_folders(tmp_path / "rgb", {"a": 3, "b": 3})
    assert load_data(gray, channels=3).train[0][0].shape == (3, 9, 9)
    assert load_data(rgb, channels=1).train[0][0].shape == (1, 9, 9)
    assert load_data(rgb, channels=1).channels == 1


def test_a_grayscale_first_image_does_not_make_colour_classes_gray(tmp_path: Path) -> None:
    """Channels came from the first image alone: one grayscale file sorted first turned a
    folder of colour images into one channel."""
    root = class_folders(tmp_path / "mixed", {"a": 3}, mode="L")
    class_folders(root, {"b": 3})
    assert load_data(root).shape == (3, 9, 9)


@pytest.mark.parametrize("held_out", ["test", "val"])
def test_train_and_test_folders_are_the_split(tmp_path: Path, held_out: str) -> None:
    class_folders(tmp_path / "d" / "train", {"a": 4, "b": 4})
    class_folders(tmp_path / "d" / held_out, {"a": 2, "b": 1}, size=(7, 11))
    bundle = load_data(tmp_path / "d")
    assert (len(bundle.train), len(bundle.test)) == (8, 3) and bundle.classes == 2
    assert bundle.test[0][0].shape == bundle.train[0][0].shape == (3, 9, 9)
    assert [bundle.test[i][1] for i in range(3)] == [0, 0, 1]


def test_a_test_folder_missing_a_class_keeps_the_training_numbers(tmp_path: Path) -> None:
    """ImageFolder numbers each folder's classes on its own: a val/ without ``bee`` gave
    its ``cat`` images bee's label, silently."""
    class_folders(tmp_path / "d" / "train", ABC)
    class_folders(tmp_path / "d" / "val", {"ant": 1, "cat": 2})
    bundle = load_data(tmp_path / "d")
    assert [bundle.test[i][1] for i in range(3)] == [0, 2, 2]


def test_a_lone_train_folder_is_split_not_one_class(tmp_path: Path) -> None:
    """``DIR/train`` without ``test/`` or ``val/`` was read as one class named train."""
    class_folders(tmp_path / "d" / "train", ABC)
    bundle = load_data(tmp_path / "d")
    assert bundle.classes == 3 and (len(bundle.train), len(bundle.test)) == (12, 3)
    assert any("train" in note for note in bundle.notes)


def test_dot_is_named_after_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--data .`` gave the data set an empty name (in the summary and log.json)."""
    class_folders(tmp_path / "here", {"a": 3, "b": 3})
    monkeypatch.chdir(tmp_path / "here")
    assert load_data(".").name == "here"


def _corrupt(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:60])  # a PNG cut short: it opens, then cannot load


BAD = {
    "empty class folder": lambda d: class_folders(d, {"a": 3, "b": 0}),
    "no class folders": lambda d: [png(d / f"{i}.png") for i in range(3)],
    "no image files": lambda d: (d / "a").mkdir(parents=True) or (d / "a" / "x.txt").write_text(""),
    "empty folder": lambda d: d.mkdir(),
    "one class": lambda d: class_folders(d, {"only": 5}),
    "too few to split": lambda d: class_folders(d, {"a": 2, "b": 2}),
    "unreadable first image": lambda d: (
        class_folders(d, ABC) and (d / "ant" / "00.png").write_text("")
    ),
    "test class folder empty": lambda d: (
        class_folders(d / "train", ABC) and class_folders(d / "test", {"ant": 1, "bee": 0})
    ),
    "test class unknown": lambda d: (
        class_folders(d / "train", {"a": 2, "b": 2}) and class_folders(d / "val", {"c": 1})
    ),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_folders_that_cannot_be_trained_on_are_refused(tmp_path: Path, kind: str) -> None:
    BAD[kind](tmp_path / "d")
    with pytest.raises(DslError) as err:
        load_data(tmp_path / "d")
    (diag,) = err.value.diagnostics
    assert diag.code == "E110" and str(tmp_path / "d") in diag.message and diag.hint
    assert "\n" not in diag.message


def test_an_unreadable_image_met_in_training_names_the_file(tmp_path: Path) -> None:
    root = class_folders(tmp_path / "d", ABC)
    _corrupt(root / "cat" / "04.png")
    bundle = load_data(root)  # only the first image of each class is opened here
    with pytest.raises(DslError) as err:
        [bundle.train[i] for i in range(len(bundle.train))] + [bundle.test[i] for i in range(3)]
    (diag,) = err.value.diagnostics
    assert diag.code == "E110" and str(root / "cat" / "04.png") in diag.message


def test_an_image_over_pillows_pixel_limit_is_bad_data_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pillow refuses an image over twice its MAX_IMAGE_PIXELS with DecompressionBombError,
    which is no OSError: it escaped as a traceback, first image or met in training."""
    import warnings

    from PIL import Image

    root = class_folders(tmp_path / "d", ABC)
    png(root / "cat" / "09.png", size=(20, 20))  # 400 pixels, over 2 x 100
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # 117 pixels: a warning
        bundle = load_data(root)
        with pytest.raises(DslError) as err:
            [bundle.train[i] for i in range(len(bundle.train))]
            [bundle.test[i] for i in range(len(bundle.test))]
        assert str(root / "cat" / "09.png") in err.value.diagnostics[0].message
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20)  # the first images too
        with pytest.raises(DslError) as err:
            load_data(root)
        assert err.value.diagnostics[0].code == "E110"


def _train(tmp_path: Path, data: Path, *args: str) -> dict:
    out = tmp_path / "run"
    assert main(["train", "specs/resnet.ode", "--data", str(data), *SMALL, *args, "--quiet",
                 "--out", str(out)]) == 0  # fmt: skip
    return json.loads((out / "log.json").read_text())


@pytest.fixture
def in_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parents[2])  # specs/resnet.ode as given


@pytest.mark.usefixtures("in_root")
@pytest.mark.parametrize(("mode", "channels"), [("RGB", 3), ("L", 1)])
def test_cli_trains_an_epoch_on_an_image_folder(tmp_path: Path, mode: str, channels: int) -> None:
    class_folders(tmp_path / "d" / "train", ABC, mode=mode)
    class_folders(tmp_path / "d" / "test", {"ant": 2, "bee": 1, "cat": 1}, mode=mode)
    log = _train(tmp_path, tmp_path / "d")
    assert log["data"] == "d" and log["complete"] and len(log["epochs"]) == 1
    assert log["from_data"] == {"channels": channels, "size": 9, "classes": 3, "stride": 1}
    assert len(log["step_losses"]) == 4  # the 15 images of train/ in batches of 4


@pytest.mark.usefixtures("in_root")
def test_cli_sets_size_and_channels_for_the_images(tmp_path: Path) -> None:
    root = class_folders(tmp_path / "gray", {"a": 3, "b": 3}, mode="L")
    log = _train(tmp_path, root, "--set", "size=6", "--set", "channels=3")
    assert log["from_data"] == {"classes": 2}  # a --set size keeps the stride
    assert log["overrides"] == {"depth": 2, "width": 4, "size": 6, "channels": 3}


FIXED = """network fixed(classes: int = 10) {
    input image[3, 32, 32]
    stem { conv2d(4, kernel=3, padding=1) }
    stage body = ode(2) { integrator euler residual conv2d(4, kernel=3, padding=1) }
    head { adaptive_avgpool2d(1) flatten linear(classes) }
}
"""


def test_cli_refuses_a_spec_whose_input_is_not_the_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "fixed.ode").write_text(FIXED)
    root = class_folders(tmp_path / "d", {"a": 3, "b": 3}, mode="L")
    args = ["train", str(tmp_path / "fixed.ode"), "--data", str(root), "--out", str(tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "[E220]" in err and "[3, 32, 32]" in err and "[1, 9, 9]" in err
    assert "Traceback" not in err


@pytest.mark.usefixtures("in_root")
@pytest.mark.parametrize(
    "kind",
    [
        "empty class folder",
        "no class folders",
        "test class folder empty",
        "corrupt",
        "corrupt, read by workers",
    ],
)
def test_cli_bad_folder_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    workers = []
    if kind.startswith("corrupt"):  # found only when training reads it
        _corrupt(class_folders(tmp_path / "d", ABC) / "bee" / "03.png")
        workers = ["--workers", "2"] if "workers" in kind else []
    else:
        BAD[kind](tmp_path / "d")
    args = ["train", "specs/resnet.ode", "--data", str(tmp_path / "d"), *SMALL, "--quiet"]
    assert main([*args, *workers, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("error")]
    assert line.startswith("error: --data ") and "[E110]" in line, err
    if kind.startswith("corrupt"):  # the same words whichever process read the file
        name = tmp_path / "d" / "bee" / "03.png"
        assert f"cannot read image '{name}' (image file is truncated)" in line, line


@pytest.mark.usefixtures("in_root")
def test_worker_processes_read_the_same_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--workers 2``: the same losses step for step as reading in the training process."""
    import odedsl.training.loop as loop

    class_folders(tmp_path / "d" / "train", ABC)
    class_folders(tmp_path / "d" / "test", {"ant": 2, "bee": 1, "cat": 1})
    one = _train(tmp_path / "a", tmp_path / "d")
    started: list[int] = []

    def loader(*args: object, num_workers: int, **kw: object) -> object:
        started.append(num_workers)
        return torch.utils.data.DataLoader(*args, num_workers=num_workers, **kw)

    monkeypatch.setattr(loop, "DataLoader", loader)
    two = _train(tmp_path / "b", tmp_path / "d", "--workers", "2")
    assert 2 in started and max(started) == 2  # (0: the memory probe's one batch)
    assert two["config"]["workers"] == 2 and one["config"]["workers"] == 0
    assert one["step_losses"] == two["step_losses"] and len(one["step_losses"]) == 4
    assert one["epochs"][0]["test_accuracy"] == two["epochs"][0]["test_accuracy"]


def test_a_workers_error_text_not_ours_is_still_bad_data() -> None:
    from odedsl.training.data import UnreadableImage

    error = UnreadableImage("Caught UnreadableImage in DataLoader worker process 0.\nboom")
    (diag,) = error.as_error().diagnostics
    assert diag.code == "E110" and "boom" in diag.message
