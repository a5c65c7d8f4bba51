"""Exported Mobile-Former computes what PyTorch computes: the torch.export program of the inference form, with
the batch and image size left dynamic, for all seven variants. ONNX files (the runtime form of
layers/deploy.py) are checked in ONNX Runtime by tests/test_deploy.py."""
import pytest
import timm
import torch

from timm_mobileformer.export import export_program, inference_form
from timm_mobileformer.mobileformer import model_cfgs

VARIANTS = [v[len('mobileformer_'):] for v in model_cfgs]
# other batch sizes, sizes and aspect ratios than the example input the graph was traced with
SHAPES = ((1, 3, 64, 64), (3, 3, 96, 128))


def create(variant: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(f'mobileformer_{variant}').eval()


def rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out - ref).abs().max() / ref.abs().max())


def check_program(program: torch.export.ExportedProgram, model: torch.nn.Module) -> None:
    module = program.module()
    with torch.no_grad():
        for shape in SHAPES:
            x = torch.randn(*shape)
            assert rel(module(x), model(x)) < 1e-5, shape


@pytest.mark.parametrize('variant', VARIANTS)
def test_torch_export(variant):
    """torch.export of the inference form (what `export --out m.pt2` writes), dynamic batch and size."""
    model = create(variant)
    check_program(export_program(model, img_size=64), model)


def test_inference_form_leaves_the_model_alone():
    model = create('26m').train()
    fused = inference_form(model)
    assert model.training and any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert not fused.training and not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())


def test_export_command_writes_a_loadable_program(tmp_path):
    """`export 26m --out m.pt2`: a torch.export program that loads and runs at another batch and size,
    and no partial file left behind."""
    from timm_mobileformer.cli import main
    path = tmp_path / 'm.pt2'
    torch.manual_seed(0)  # the same weights as create('26m')
    assert main(['export', '--model', '26m', '--out', str(path), '--img-size', '64']) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ['m.pt2']
    module = torch.export.load(str(path)).module()
    model = create('26m')
    x = torch.randn(1, 3, 96, 80)
    with torch.no_grad():
        assert rel(module(x), model(x)) < 1e-5


def test_export_command_rejects_an_unknown_format(tmp_path):
    from cli_util import error_line
    assert 'must end in .onnx or .pt2' in error_line(['export', '--model', '26m', '--out', str(tmp_path / 'm.tflite')])
    assert not any(tmp_path.iterdir())
