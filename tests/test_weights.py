"""One way to read weights: the reader, the variant detector, the name resolver and the EMA rule."""
import argparse
import os
import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from official import seeded_state_dict

import timm_mobileformer.mobileformer as mf
from timm_mobileformer import CheckpointError, MobileFormerError
from timm_mobileformer.attention import load_with_note
from timm_mobileformer.convert import load_checkpoint_model
from timm_mobileformer.detection import MobileFormerFPN
from timm_mobileformer.predict import load_model as predict_model
from timm_mobileformer.weights import (
    VARIANTS,
    create_from_checkpoint,
    detect_variant,
    load_checkpoint,
    read_state_dict,
    resolve_model_name,
)

pytestmark = pytest.mark.usefixtures('single_thread')


@pytest.mark.parametrize('name, expected', [
    ('294m', 'mobileformer_294m'), ('mobileformer_52m', 'mobileformer_52m'),
    ('mobileformer_26m.in1k', 'mobileformer_26m.in1k'), ('96m.in1k', 'mobileformer_96m.in1k'),
])
def test_resolve_model_name_takes_short_full_and_tagged_names(name, expected):
    assert resolve_model_name(name) == expected


@pytest.mark.parametrize('name, message', [
    ('999m', "unknown model '999m': choose one of 508m, 294m"),
    ('resnet50', "unknown model 'resnet50'"),
    ('294m.in22k', "unknown tag 'in22k' for mobileformer_294m: choose one of mobileformer_294m.in1k"),
])
def test_resolve_model_name_lists_the_choices(name, message):
    with pytest.raises(MobileFormerError, match=message.replace('.', r'\.').replace('(', r'\(')):
        resolve_model_name(name)


@pytest.mark.parametrize('variant', VARIANTS)
def test_each_authors_checkpoint_is_detected_in_one_pass(variant, monkeypatch):
    state_dict = {'state_dict': seeded_state_dict(variant.split('_')[1])}
    detect_variant(state_dict)  # builds the per-variant shape tables once (meta models)
    conversions = []
    convert = mf._from_official
    monkeypatch.setattr(mf, '_from_official', lambda sd: conversions.append(1) or convert(sd))
    start = time.perf_counter()
    assert detect_variant(state_dict) == variant
    elapsed = time.perf_counter() - start
    assert len(conversions) == 1
    assert elapsed < 1.0, f'{elapsed:.2f} s'  # generous: about 10 ms here; many times that means many passes


def test_detection_says_none_for_other_networks():
    assert detect_variant(timm.create_model('mobilenetv3_small_050').state_dict()) is None


def _train_py_checkpoint(folder: Path) -> dict[str, object]:
    """A checkpoint as timm's train.py writes it with --model-ema: model and EMA weights differ, args is a
    Namespace, the metric a numpy float."""
    model = timm.create_model('mobileformer_26m', num_classes=6)
    ema = timm.create_model('mobileformer_26m', num_classes=6)
    raw = {k: v for k, v in model.state_dict().items()}
    averaged = {k: v + 0.5 if v.is_floating_point() and not k.endswith('running_var') else v
                for k, v in ema.state_dict().items()}
    path = folder / 'last.pth.tar'
    torch.save({
        'epoch': 9, 'arch': 'mobileformer_26m', 'state_dict': raw, 'state_dict_ema': averaged,
        'args': argparse.Namespace(model='mobileformer_26m', lr=1e-3), 'metric': np.float64(62.0),
        'version': 2,
    }, path)
    return dict(path=path, raw=raw, ema=averaged)


@pytest.fixture(scope='module')
def train_checkpoint(tmp_path_factory) -> dict[str, object]:
    return _train_py_checkpoint(tmp_path_factory.mktemp('train'))


def _same(model_state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], prefix: str = '') -> bool:
    return all(torch.equal(v, expected[prefix + k]) for k, v in model_state.items()
               if not k.endswith('num_batches_tracked'))


def test_train_py_checkpoint_loads_safely_with_its_namespace_and_numpy_metric(train_checkpoint):
    state_dict = read_state_dict(train_checkpoint['path'])
    assert set(state_dict) == set(train_checkpoint['ema'])


def test_every_path_reads_the_ema_weights_of_a_train_py_checkpoint(train_checkpoint):
    """The rule: EMA weights when present (timm's), on every path."""
    path, ema = str(train_checkpoint['path']), train_checkpoint['ema']
    paths = {
        'create_from_checkpoint': create_from_checkpoint(path),
        'load_checkpoint': load_checkpoint(timm.create_model('mobileformer_26m', num_classes=6), path),
        # timm keeps the cfg's 1000-class head unless the overlay names the file's class count
        'pretrained_cfg_overlay': timm.create_model('mobileformer_26m', num_classes=6, pretrained=True,
                                                    pretrained_cfg_overlay=dict(file=path, num_classes=6)),
        'predict': predict_model(None, path),
        'attention': load_with_note('mobileformer_26m', path)[0],
    }
    for name, model in paths.items():
        assert _same(model.state_dict(), ema), name
    fpn = MobileFormerFPN('mobileformer_26m', checkpoint=path)
    body = {k: v for k, v in fpn.body.state_dict().items()}
    assert body and all(torch.equal(v, ema[k]) for k, v in body.items() if k in ema), 'detection'


def test_use_ema_false_reads_the_model_weights(train_checkpoint):
    path, raw = train_checkpoint['path'], train_checkpoint['raw']
    assert _same(create_from_checkpoint(path, use_ema=False).state_dict(), raw)
    assert _same(load_checkpoint(timm.create_model('mobileformer_26m', num_classes=6), path, use_ema=False)
                 .state_dict(), raw)


def test_create_from_checkpoint_takes_the_class_count_from_the_file(train_checkpoint):
    model = create_from_checkpoint(train_checkpoint['path'])
    assert model.num_classes == 6 and not model.training


def test_convert_refuses_a_fine_tuned_checkpoint_with_a_reason(train_checkpoint):
    with pytest.raises(MobileFormerError, match='6 classes .* ImageNet-1k checkpoints only'):
        load_checkpoint_model(train_checkpoint['path'])


def test_load_checkpoint_into_a_model_of_another_class_count_is_refused(train_checkpoint):
    model = timm.create_model('mobileformer_26m')
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r'head\.fc\.weight has shape \(6, .*num_classes'):
        load_checkpoint(model, train_checkpoint['path'])
    assert _same(model.state_dict(), before)


@pytest.mark.parametrize('value', [float('nan'), float('inf')])
def test_non_finite_weights_are_refused_on_every_path(tmp_path, value):
    state_dict = seeded_state_dict('26m')
    key = 'features.3.conv1.0.weight'
    state_dict[key] = state_dict[key].clone()
    state_dict[key][0, 0, 0, 0] = value
    path = tmp_path / 'damaged.pth.tar'
    torch.save({'state_dict': state_dict}, path)
    message = f'NaN or inf values \\(first in {key}\\)'
    for load in (create_from_checkpoint,
                 lambda p: timm.create_model('mobileformer_26m', pretrained=True,
                                             pretrained_cfg_overlay=dict(file=str(p)))):
        with pytest.raises(CheckpointError, match=message) as info:
            load(path)
        assert '\n' not in str(info.value)


class _Payload:
    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / 'payload-ran'
    payload = _Payload()
    payload.marker = str(marker)
    path = tmp_path / 'evil.pth.tar'
    torch.save({'state_dict': {'tokens.weight': torch.zeros(3, 128)}, 'x': payload}, path)
    for load in (read_state_dict, create_from_checkpoint,
                 lambda p: timm.create_model('mobileformer_26m', pretrained=True,
                                             pretrained_cfg_overlay=dict(file=str(p)))):
        with pytest.raises(CheckpointError, match=r'refused: unpickling it would call posix\.system') as info:
            load(path)
        assert not marker.exists()
        assert '\n' not in str(info.value) and 'weights_only=False' not in str(info.value)


@pytest.mark.parametrize('content, message', [
    (b'', 'the file is empty'),
    (b'\x80\x04garbage', 'not a readable checkpoint'),
])
def test_damaged_files_get_one_line(tmp_path, content, message):
    path = tmp_path / 'bad.pth.tar'
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as info:
        read_state_dict(path)
    assert '\n' not in str(info.value) and str(path) in str(info.value)


def test_a_pickle_without_tensors_is_not_a_state_dict(tmp_path):
    path = tmp_path / 'list.pth'
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match='holds no state dict'):
        read_state_dict(path)
