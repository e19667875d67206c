"""The generated training script's ``--data DIR`` on image folders of real PNG files, read
through the torchvision test double of ``tests/training/fake_torchvision`` (torchvision
cannot be installed here): one run in a fresh interpreter from a standalone build, the
rest in this process; every folder it cannot train on is a one-line usage error (exit 2)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

import odedsl

from .helpers import CASES, ROOT, SPECS, import_file, run_python, write

folders = import_file(ROOT / "tests" / "training" / "imagefolders.py")
PARAMS = {"depth": 2, "width": 4, "size": 8}
ARGS = ["--epochs", "1", "--batch-size", "4", "--log-every", "1"]
ABC = {"ant": 5, "bee": 5, "cat": 5}


def test_one_epoch_on_train_and_val_folders(tmp_path: Path) -> None:
    build = tmp_path / "build"
    write(SPECS / "resnet.ode", build, standalone=True, **PARAMS)
    folders.class_folders(tmp_path / "d" / "train", ABC, size=(13, 9))
    folders.class_folders(tmp_path / "d" / "val", {"ant": 3, "bee": 3}, mode="L")
    args = ["train_resnet.py", *ARGS, "--data", str(tmp_path / "d"), "--out", "run"]
    proc = run_python(args, cwd=build, block_odedsl=True, path=[folders.FAKE])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "epoch 0 batch 3/3" in proc.stdout  # train/ alone: 15 images, full batches of 4
    assert "epoch 0: loss" in proc.stdout and "batch 4/" not in proc.stdout
    assert ", val loss " in proc.stdout and "(6 images)" in proc.stdout  # scored on val/
    ckpt = torch.load(build / "run" / "checkpoint.pt", weights_only=True)
    odedsl.compile(SPECS / "resnet.ode", **PARAMS).load_state_dict(ckpt["model"])


@pytest.fixture
def script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., ModuleType]]:
    """``script(spec, **params)``: the training script of a build of ``spec``, imported here
    with the double as torchvision and this build's network module (not another build's)."""
    networks: list[str] = []

    def build(spec: Path, **params: object) -> ModuleType:
        folder = tmp_path / f"build{len(networks)}"
        write(spec, folder, **params)
        monkeypatch.syspath_prepend(str(folder))  # the script imports its network by name
        monkeypatch.delitem(sys.modules, spec.stem, raising=False)
        networks.append(spec.stem)
        return import_file(folder / f"train_{spec.stem}.py")

    fake = folders.use_fake_torchvision(monkeypatch)
    next(fake)
    yield build
    for name in networks:
        sys.modules.pop(name, None)
    next(fake, None)


def _run(module: ModuleType, data: Path, out: Path) -> int:
    try:
        return module.main([*ARGS, "--data", str(data), "--out", str(out)])
    except SystemExit as exc:
        return exc.code  # type: ignore[return-value]


def test_channels_follow_the_network(
    script: Callable[..., ModuleType], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 3-channel network on grayscale images (the loader makes them RGB); a 1-channel one
    on colour images (Grayscale(1)); odd sizes resized to the network's input."""
    rgb_net = script(SPECS / "resnet.ode", **PARAMS)
    gray = folders.class_folders(tmp_path / "gray", {"a": 3, "b": 3}, size=(9, 13), mode="L")
    assert _run(rgb_net, gray, tmp_path / "r1") == 0
    gray_net = script(SPECS / "resnet.ode", **PARAMS, channels=1)
    rgb = folders.class_folders(tmp_path / "rgb", {"a": 3, "b": 3}, size=(13, 9))
    assert _run(gray_net, rgb, tmp_path / "r2") == 0
    out = capsys.readouterr().out
    assert out.count("epoch 0: loss") == 2 and "batch 1/1" in out


def _bad(kind: str, root: Path) -> Path:
    if kind == "empty class folder":
        return folders.class_folders(root, {"a": 3, "b": 0})
    if kind == "no class folders":
        for i in range(3):
            folders.png(root / f"{i}.png")
        return root
    if kind == "one class":
        return folders.class_folders(root, {"a": 4})
    if kind == "more classes than the network scores":
        return folders.class_folders(root, {"a": 2, "b": 2, "c": 2})
    folders.class_folders(root, {"a": 4, "b": 4})  # unreadable: found by the loader
    (root / "b" / "02.png").write_bytes(b"not a png")
    return root


@pytest.mark.parametrize(
    "kind",
    [
        "empty class folder",
        "no class folders",
        "one class",
        "more classes than the network scores",
        "unreadable image",
    ],
)
def test_bad_folder_is_a_one_line_usage_error(
    script: Callable[..., ModuleType],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    kind: str,
) -> None:
    module = script(SPECS / "resnet.ode", **PARAMS, classes=2)
    data = _bad(kind, tmp_path / "d")
    assert _run(module, data, tmp_path / "run") == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert ": error: --data " in line and str(tmp_path / "d") in line, line
    if kind == "unreadable image":
        assert str(data / "b" / "02.png") in line


IMAGE_TO_IMAGE = """network seg() {
    input image[3, 8, 8]
    stem { conv2d(4, kernel=3, padding=1) }
    stage body = ode(2) { integrator euler residual conv2d(4, kernel=3, padding=1) }
    head { conv2d(1, kernel=1) }
}
"""


@pytest.mark.parametrize("network", ["2 channels", "image to image"])
def test_a_network_not_from_images_to_classes_is_a_usage_error(
    script: Callable[..., ModuleType],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    network: str,
) -> None:
    """Exit 1 through ``SystemExit(text)`` for the first; for the second (an MSE loss) the
    integer class targets were a shape error's traceback in the first step."""
    spec = CASES / "tiny.ode"  # input image[2, 4, 4]
    if network == "image to image":
        spec = tmp_path / "seg.ode"
        spec.write_text(IMAGE_TO_IMAGE)
    module = script(spec)
    data = folders.class_folders(tmp_path / "d", {"a": 2, "b": 2})
    assert _run(module, data, tmp_path / "run") == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "--data needs a network from images (1 or 3 channels) to class scores" in line


def test_an_image_over_pillows_pixel_limit_is_named_not_a_traceback(
    script: Callable[..., ModuleType], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DecompressionBombError is no OSError: the script's loader let it through."""
    from PIL import Image

    module = script(SPECS / "resnet.ode", **PARAMS)
    big = folders.png(tmp_path / "big.png", size=(20, 20))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(module.UnreadableImage, match=r"big\.png.*cannot be read"):
        module.load_image(str(big))


def test_held_out_images_match_odedsl_train_and_keep_training_labels(
    script: Callable[..., ModuleType], tmp_path: Path
) -> None:
    """The script reads ``test/`` as ``odedsl train`` does: the same tensors (shorter side
    resized, centre crop), and labels by class name when ``test/`` lacks a class."""
    from odedsl.training.data import image_folder

    module = script(SPECS / "resnet.ode", **PARAMS)
    root = tmp_path / "d"
    folders.class_folders(root / "train", ABC, size=(13, 9))
    folders.class_folders(root / "test", {"bee": 2, "cat": 2}, size=(11, 17))
    train, test, name = module.image_folders(root)
    assert name == "test" and train.classes == ["ant", "bee", "cat"]
    reference = image_folder(root, size=PARAMS["size"], channels=3).test
    assert [test[i][1] for i in range(4)] == [1, 1, 2, 2]
    for i in range(4):
        x, y = test[i]
        x_ref, y_ref = reference[i]
        assert y == y_ref and x.shape == (3, 8, 8)
        torch.testing.assert_close(x, x_ref, rtol=0, atol=0)


def test_a_held_out_class_not_trained_on_is_a_usage_error(
    script: Callable[..., ModuleType], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    module = script(SPECS / "resnet.ode", **PARAMS)
    root = tmp_path / "d"
    folders.class_folders(root / "train", {"ant": 2, "bee": 2})
    folders.class_folders(root / "val", {"ant": 1, "wasp": 1})
    assert _run(module, root, tmp_path / "run") == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "val" in line and "['wasp'] are not in" in line, line


def test_evaluation_shards_count_every_image_once(
    script: Callable[..., ModuleType], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each process scores every world-th image: the shards' sums are the whole set's (no
    image repeated, as a padding DistributedSampler would), and match a plain eval loop."""
    module = script(SPECS / "resnet.ode", **PARAMS)
    root = tmp_path / "d"
    folders.class_folders(root / "train", {"ant": 2, "bee": 2})
    folders.class_folders(root / "val", {"ant": 4, "bee": 3})
    _, test, _ = module.image_folders(root)
    torch.manual_seed(0)
    model = module.build()
    args = module.parse_args(["--batch-size", "2"])
    cpu = torch.device("cpu")
    monkeypatch.setattr(module.dist, "all_reduce", lambda t: None)  # one process here
    shards = [module.evaluate(model, test, args, cpu, None, r, 3) for r in range(3)]
    whole = module.evaluate(model, test, args, cpu, None, 0, 1)
    torch.testing.assert_close(sum(shards), whole)
    x = torch.stack([test[i][0] for i in range(7)])
    y = torch.tensor([test[i][1] for i in range(7)])
    with torch.no_grad():
        out = model.eval()(x)
    expected = [
        torch.nn.functional.cross_entropy(out, y, reduction="sum"),
        (out.argmax(1) == y).sum(),
        7,
    ]
    torch.testing.assert_close(whole, torch.tensor(expected, dtype=whole.dtype))


def test_an_image_named_like_the_error_keeps_its_whole_name(
    script: Callable[..., ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    """The message is the text after ``UnreadableImage: `` in a worker's traceback: the last
    one, a file named ``x UnreadableImage: y.png``, cut its message, in-process too."""
    from torch.utils.data import DataLoader

    module = script(SPECS / "resnet.ode", **PARAMS)
    message = "--data image '/d/a/x UnreadableImage: y.png': cannot be read (not an image file)"

    class Unreadable(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 1

        def __getitem__(self, i: int) -> None:
            raise module.UnreadableImage(message)

    for workers in (0, 1):  # in this process, and in a worker process (DataLoader's text)
        with pytest.raises(SystemExit):
            list(module.read(DataLoader(Unreadable(), num_workers=workers)))
        assert capsys.readouterr().err.endswith(f": error: {message}\n"), workers
