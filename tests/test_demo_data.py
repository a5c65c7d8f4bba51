"""The demo set: ImageFolder layout, balanced, byte-identical for a seed, written all-or-nothing, and not
solvable from colours alone."""
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cli_util import error_line
from PIL import Image
from timm.data import create_dataset

from timm_mobileformer import demo_data
from timm_mobileformer.cli import main
from timm_mobileformer.demo_data import CLASSES, SPLITS, make_demo_data
from timm_mobileformer.errors import MobileFormerError

CHANCE = 1 / len(CLASSES)


@pytest.fixture(scope='module')
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_data(tmp_path_factory.mktemp('demo') / 'shapes', seed=0, train_per_class=150,
                          val_per_class=50, size=32)


def file_digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob('*')) if p.is_file()}


def load_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W, 3) uint8 and labels, through timm's own ImageFolder reader."""
    dataset = create_dataset('', root=str(root), split=split)
    images, labels = zip(*((np.asarray(img), label) for img, label in dataset))
    return np.stack(images), np.array(labels)


def colour_features(images: np.ndarray) -> torch.Tensor:
    """Per-channel 16-bin histograms, a 4x4x4 joint colour histogram, mean and std colour: no spatial layout."""
    n = len(images)
    pixels = images.reshape(n, -1, 3).astype(np.int64)
    per_channel = [np.stack([np.bincount(p[:, c] // 16, minlength=16) for p in pixels]) for c in range(3)]
    joint_index = (pixels[..., 0] // 64) * 16 + (pixels[..., 1] // 64) * 4 + pixels[..., 2] // 64
    joint = np.stack([np.bincount(j, minlength=64) for j in joint_index])
    hists = np.concatenate([*per_channel, joint], axis=1) / pixels.shape[1]
    feats = np.concatenate([hists, pixels.mean(1) / 255, pixels.std(1) / 255], axis=1)
    return torch.tensor(feats, dtype=torch.float32)


def colour_baseline_accuracy(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray]) -> float:
    """Validation accuracy of an L2-regularised logistic regression on `colour_features`."""
    x_train, x_val = colour_features(train[0]), colour_features(val[0])
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_val = (x_train - mean) / std, (x_val - mean) / std
    y_train = torch.as_tensor(train[1])
    weight = torch.zeros(x_train.shape[1], len(CLASSES), requires_grad=True)
    bias = torch.zeros(len(CLASSES), requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=200)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x_train @ weight + bias, y_train) + 1e-3 * weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        predicted = (x_val @ weight + bias).argmax(1).numpy()
    return float((predicted == val[1]).mean())


def test_layout_and_balance(demo: Path):
    assert sorted(p.name for p in demo.iterdir()) == sorted(SPLITS)
    for split, per_class in zip(SPLITS, (150, 50)):
        dataset = create_dataset('', root=str(demo), split=split)
        assert dataset.reader.class_to_idx == {name: i for i, name in enumerate(sorted(CLASSES))}
        labels = [label for _, label in dataset.reader.samples]
        assert np.bincount(labels).tolist() == [per_class] * len(CLASSES)
    image = Image.open(next((demo / 'train' / 'star').iterdir()))
    assert (image.mode, image.size) == ('RGB', (32, 32))


def test_same_seed_same_bytes(demo: Path, tmp_path: Path):
    again = make_demo_data(tmp_path / 'again', seed=0, train_per_class=150, val_per_class=50, size=32)
    assert file_digests(again) == file_digests(demo)
    other = make_demo_data(tmp_path / 'other', seed=1, train_per_class=2, val_per_class=1, size=32)
    assert set(file_digests(other).values()).isdisjoint(file_digests(demo).values())


def test_colours_alone_stay_near_chance(demo: Path):
    train, val = load_split(demo, 'train'), load_split(demo, 'validation')
    assert colour_baseline_accuracy(train, val) < CHANCE + 0.1


def test_colour_baseline_finds_a_colour_cue(demo: Path):
    """Control: the same baseline clears the near-chance bound by far once each class gets a faint colour cast."""
    casts = np.random.default_rng(0).uniform(0, 255, size=(len(CLASSES), 3))

    def cast(split: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        images, labels = split
        return (0.8 * images + 0.2 * casts[labels][:, None, None]).astype(np.uint8), labels

    train, val = load_split(demo, 'train'), load_split(demo, 'validation')
    assert colour_baseline_accuracy(cast(train), cast(val)) > CHANCE + 0.2


def test_failed_run_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def fail(*args, **kwargs):
        raise RuntimeError('disk full')

    monkeypatch.setattr(demo_data, 'write_split', fail)
    with pytest.raises(RuntimeError, match='disk full'):
        make_demo_data(tmp_path / 'data', train_per_class=1, val_per_class=1)
    assert list(tmp_path.iterdir()) == []


def test_refuses_a_non_empty_folder(tmp_path: Path):
    (tmp_path / 'keep.txt').write_text('mine')
    with pytest.raises(MobileFormerError, match='not empty'):
        make_demo_data(tmp_path, train_per_class=1, val_per_class=1)
    assert [p.name for p in tmp_path.iterdir()] == ['keep.txt']


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture):
    (tmp_path / 'empty').mkdir()
    assert main(['demo-data', str(tmp_path / 'empty'), '--train-per-class', '2', '--val-per-class', '1',
                 '--img-size', '40', '--seed', '3']) == 0
    assert 'wrote 6 classes' in capsys.readouterr().out
    assert len(list((tmp_path / 'empty').rglob('*.png'))) == 3 * len(CLASSES)
    assert 'from 32 to 1024' in error_line(['demo-data', str(tmp_path / 'small'), '--img-size', '16'], code=2)
    assert not (tmp_path / 'small').exists()
