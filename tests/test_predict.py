"""`timm-mobileformer predict`: top-5 ImageNet classes with names, from the Hub or a local checkpoint."""
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_util import error_line, run_cli
from conftest import SIX_CLASS_NAMES
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, ImageNetInfo
from torchvision import transforms as T

from timm_mobileformer.cli import main
from timm_mobileformer.hub import hub_id
from timm_mobileformer.predict import load_model, predict

pytestmark = pytest.mark.usefixtures('single_thread')

CLASS_LINE = re.compile(r'^  ([1-5])\.\s+(\d+\.\d\d)%  (n\d{8})  (.+)$')


@pytest.fixture
def image(tmp_path) -> Path:
    """A 300x400 RGB test image (smooth colour gradients, so resize and crop matter)."""
    y, x = np.mgrid[0:300, 0:400]
    pixels = np.stack([x * 255 // 400, y * 255 // 300, (x + y) * 255 // 700], axis=-1).astype(np.uint8)
    path = tmp_path / 'gradient.png'
    Image.fromarray(pixels).save(path)
    return path


def run_predict(args: list[str], capsys) -> list[str]:
    assert main(['predict', *args]) == 0
    return capsys.readouterr().out.splitlines()


def assert_top5_block(lines: list[str], image: Path) -> None:
    """The image's name, then five ranked classes with ImageNet synsets and their names, best first."""
    assert lines[0] == str(image) and len(lines) == 6
    info = ImageNetInfo()
    probs = []
    for rank, line in enumerate(lines[1:], 1):
        match = CLASS_LINE.match(line)
        assert match, line
        assert int(match.group(1)) == rank
        assert match.group(4) == info.label_name_to_description(match.group(3))
        probs.append(float(match.group(2)))
    assert probs == sorted(probs, reverse=True)


def test_converted_checkpoint_prints_top5_with_names(converted, image, capsys):
    lines = run_predict([str(image), '--checkpoint', str(converted['mobileformer_52m'] / 'model.safetensors')], capsys)
    assert_top5_block(lines, image)


def test_authors_checkpoint_hub_and_converted_file_agree(authors_files, converted, offline_hub, image, capsys):
    from_authors = run_predict([str(image), '--checkpoint', str(authors_files['mobileformer_52m'])], capsys)
    from_hub = run_predict([str(image), '--model', '52m'], capsys)
    from_converted = run_predict([str(image), '--model', 'mobileformer_52m', '--checkpoint',
                                  str(converted['mobileformer_52m'] / 'model.safetensors')], capsys)
    assert from_authors == from_hub == from_converted


def test_several_images_get_one_block_each(converted, image, capsys):
    weights = converted['mobileformer_26m'] / 'model.safetensors'
    lines = run_predict([str(image), str(image), '--checkpoint', str(weights)], capsys)
    assert len(lines) == 12 and lines[:6] == lines[6:]
    assert_top5_block(lines[:6], image)


def test_reads_a_converted_folder(converted, image, capsys):
    lines = run_predict([str(image), '--checkpoint', str(converted['mobileformer_26m'])], capsys)
    assert_top5_block(lines, image)


def test_fine_tuned_train_py_checkpoint_with_class_names(user_files):
    run = run_cli(['predict', str(user_files['png']), '--checkpoint', str(user_files['six']), '--class-names',
                   str(user_files['six_names']), '--top-k', '10'])
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0] == str(user_files['png']) and len(lines) == 7  # clamped to the 6 classes
    assert {line.split()[-1] for line in lines[1:]} == set(SIX_CLASS_NAMES)


def test_preprocessing_is_the_cfgs_resize_crop_and_normalisation(converted, image):
    model = load_model(checkpoint=str(converted['mobileformer_52m'] / 'model.safetensors'))
    # cfg: 224 px, crop_pct 0.875 (resize the short side to 256), bilinear, ImageNet mean/std
    by_hand = T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BILINEAR), T.CenterCrop(224), T.ToTensor(),
                         T.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)])
    img = Image.open(image).convert('RGB')
    with torch.no_grad():
        expected = model(by_hand(img).unsqueeze(0)).softmax(-1)[0].topk(5)
    (prediction,) = predict(model, [img])
    assert [i for _, i in prediction] == expected.indices.tolist()
    torch.testing.assert_close(torch.tensor([p for p, _ in prediction]), expected.values)


def predict_error(args: list[str], code: int = 1) -> str:
    return error_line(['predict', *args], code)


def test_unreadable_image_and_unknown_model_get_one_line_errors(tmp_path, image, authors_files):
    (tmp_path / 'broken.png').write_bytes(b'not a png')
    assert 'cannot read the image' in predict_error([str(tmp_path / 'broken.png')])
    assert "unknown model '999m': choose one of" in predict_error([str(image), '--model', '999m'], code=2)
    assert 'truncated or corrupt' in predict_error([str(image), '--checkpoint', str(image)])
    assert 'mobileformer_294m' in predict_error([str(image), '--model', '294m', '--checkpoint',
                                                 str(authors_files['mobileformer_52m'])])


def test_hub_weights_out_of_reach_say_what_to_do(empty_offline_hub, image):
    message = predict_error([str(image), '--model', '96m'])
    assert hub_id('mobileformer_96m') in message and 'pass --checkpoint FILE' in message
    assert 'timm-mobileformer convert' in message and '--random-init' in message
