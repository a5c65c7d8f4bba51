"""The attention API (shapes, softmax sums, no effect on outputs) and the `attention` subcommand's PNG."""

import pytest
import timm
import torch
import torch.nn as nn
from cli_util import error_line, run_cli
from PIL import Image, ImageDraw

from timm_mobileformer import attention as attention_module
from timm_mobileformer.attention import GridLayout, default_blocks, record_attention, token_attention
from timm_mobileformer.cli import main
from timm_mobileformer.hub import WeightsUnreachableError
from timm_mobileformer.mobileformer import MobileFormer, MobileFormerBlock, model_cfgs


@pytest.fixture(scope='module')
def model() -> MobileFormer:
    torch.manual_seed(0)
    return timm.create_model('mobileformer_52m').eval()


@pytest.fixture(scope='module')
def images() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(2, 3, 96, 96)


def block_map_sizes(model: MobileFormer, x: torch.Tensor) -> dict[str, tuple[tuple[int, int], tuple[int, int]]]:
    """(input, output) spatial size of every Mobile-Former block, seen by plain forward hooks."""
    sizes, handles = {}, []
    for i, block in enumerate(model.blocks):
        if isinstance(block, MobileFormerBlock):
            def hook(module, args, out, key=f'blocks.{i}'):
                sizes[key] = (tuple(args[0].shape[-2:]), tuple(out[0].shape[-2:]))
            handles.append(block.register_forward_hook(hook))
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return sizes


def test_maps_cover_every_bridge_with_the_right_shapes(model, images):
    with torch.no_grad():
        _, attn = token_attention(model, images)
    sizes = block_map_sizes(model, images)
    heads, tokens = 2, model.tokens.shape[0]
    assert list(attn.mobile_to_former) == list(sizes) + ['merge']
    assert list(attn.former_to_mobile) == list(sizes)
    for key, (size_in, size_out) in sizes.items():
        assert attn.mobile_to_former[key].shape == (2, heads, tokens, *size_in)
        assert attn.former_to_mobile[key].shape == (2, heads, tokens, *size_out)
    assert attn.mobile_to_former['merge'].shape == (2, heads, tokens, 3, 3)  # 96 px / 32


def test_maps_are_distributions_over_their_softmax_axis(model, images):
    with torch.no_grad():
        _, attn = token_attention(model, images)
    for m2f in attn.mobile_to_former.values():  # each token over the pixels
        assert (m2f >= 0).all()
        torch.testing.assert_close(m2f.sum(dim=(-2, -1)), torch.ones(m2f.shape[:3]))
    for f2m in attn.former_to_mobile.values():  # each pixel over the tokens
        assert (f2m >= 0).all()
        torch.testing.assert_close(f2m.sum(dim=2), torch.ones(f2m.shape[:2] + f2m.shape[3:]))


def test_recording_leaves_outputs_unchanged_and_removes_its_hooks(model, images):
    with torch.no_grad():
        plain = model(images)
        recorded, _ = token_attention(model, images)
    assert torch.equal(plain, recorded)
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_hooks_are_removed_when_the_forward_fails(model):
    with pytest.raises(ValueError), record_attention(model):
        model(torch.randn(3, 96, 96))  # no batch dimension
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_model_without_bridges_is_refused():
    with pytest.raises(ValueError, match='no Mobile-Former bridges'), record_attention(nn.Conv2d(3, 8, 3)):
        pass


def test_default_rows_are_the_last_block_of_each_stride_then_merge():
    model = MobileFormer(**model_cfgs['mobileformer_294m'], device='meta')
    assert default_blocks(model) == ['blocks.2', 'blocks.4', 'blocks.8', 'blocks.11', 'merge']


@pytest.fixture(scope='module')
def image_file(tmp_path_factory) -> str:
    image = Image.new('RGB', (160, 120), (90, 140, 200))
    ImageDraw.Draw(image).ellipse((40, 30, 100, 90), fill=(230, 60, 40))
    path = tmp_path_factory.mktemp('img') / 'disk.png'
    image.save(path)
    return str(path)


@pytest.mark.parametrize('extra, cols', [((), 3), (('--per-head',), 6), (('--bridge', 'f2m'), 3)])
def test_cli_writes_a_grid_of_the_expected_size(image_file, tmp_path, extra, cols):
    out = tmp_path / 'grid.png'
    blocks = ('1', '3') if '--bridge' in extra else ('1', '3', 'merge')
    argv = ['attention', image_file, '--model', '52m', '--random-init', '--blocks', *blocks, '--cell-size', '64',
            '--out', str(out), *extra]
    assert main(argv) == 0
    with Image.open(out) as grid:
        assert grid.size == GridLayout(cell=64).size(len(blocks), cols)


def test_cli_takes_the_variant_from_the_checkpoint(user_files, tmp_path):
    run = run_cli(['attention', str(user_files['png']), '--checkpoint', str(user_files['mf26']), '--cell-size', '16',
                   '--out', str(tmp_path / 'grid.png')])
    assert run.code == 0, run.err
    assert 'mobileformer_26m: top-1' in run.out and [p.name for p in tmp_path.iterdir()] == ['grid.png']


def test_cli_overwrite_replaces_an_existing_png_and_nothing_else(user_files, tmp_path):
    out = tmp_path / 'grid.png'
    out.write_bytes(b'old')
    run = run_cli(['attention', str(user_files['png']), '--random-init', '--model', '26m', '--cell-size', '16',
                   '--blocks', 'merge', '--out', str(out), '--overwrite'])
    assert run.code == 0, run.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['grid.png']
    with Image.open(out) as grid:
        assert grid.format == 'PNG'


def test_cli_names_the_valid_blocks(image_file, tmp_path):
    message = error_line(['attention', image_file, '--model', '52m', '--random-init', '--blocks', '0', '--out',
                          str(tmp_path / 'x.png')])
    assert 'choose from 1, 2, 3, 4, 5, 6, 7, 8, merge, or all' in message
    assert not any(tmp_path.iterdir())


def test_unreachable_hub_weights_fall_back_to_random_init(monkeypatch, image_file, tmp_path, capsys):
    create = timm.create_model

    def offline(name, pretrained=False, **kwargs):
        if pretrained:
            raise WeightsUnreachableError('offline')
        return create(name, **kwargs)

    monkeypatch.setattr(timm, 'create_model', offline)
    with pytest.warns(attention_module.RandomWeightsWarning, match='offline'):
        _, note = attention_module.load_with_note('mobileformer_26m')
    assert 'RANDOM INIT' in note and 'unreachable' in note
    assert main(['attention', image_file, '--model', '26m', '--blocks', 'merge', '--cell-size', '16', '--out',
                 str(tmp_path / 'grid.png')]) == 0
    assert 'warning: offline Drawing with random weights instead.' in capsys.readouterr().err.splitlines()


def test_records_inside_a_features_only_model():
    torch.manual_seed(0)
    backbone = timm.create_model('mobileformer_52m', features_only=True, out_indices=(3, 4)).eval()
    with torch.no_grad():
        _, attn = token_attention(backbone, torch.randn(1, 3, 64, 64))
    assert 'model.blocks.8' in attn.former_to_mobile and 'model.merge' not in attn.mobile_to_former  # head pruned
