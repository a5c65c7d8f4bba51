"""Exported Mobile-Former computes what PyTorch computes: the inference form the torch.export program is made
from, for all seven variants in PyTorch; the program itself, with the batch and image size left dynamic, for
26m (channel shuffles; through `timm-mobileformer export --out m.pt2`) and 294m, each exported once. ONNX files
(the ONNX Runtime form of deploy/ort_form.py) are checked in ONNX Runtime by tests/test_deploy.py."""
import re

import pytest
import torch
from deploy_util import randomized_model, rel

from timm_mobileformer.deploy import export_program, inference_form
from timm_mobileformer.mobileformer import model_cfgs

VARIANTS = list(model_cfgs)
# other batch sizes, sizes and aspect ratios than the example input the graph was traced with
SHAPES = ((1, 3, 64, 64), (3, 3, 96, 128))


def check_module(module: torch.nn.Module, model: torch.nn.Module) -> None:
    with torch.no_grad():
        for shape in SHAPES:
            x = torch.randn(*shape)
            assert rel(module(x), model(x)) < 1e-5, shape


@pytest.mark.parametrize('variant', VARIANTS)
def test_inference_form_matches(variant):
    """The form every torch.export program starts from (folded BatchNorms, scales, hard sigmoids), in PyTorch."""
    model = randomized_model(variant)
    check_module(inference_form(model), model)


def test_torch_export_of_a_large_variant():
    """torch.export of the inference form (what `export --out m.pt2` writes), dynamic batch and size."""
    model = randomized_model('mobileformer_294m')
    check_module(export_program(model, img_size=64).module(), model)


def test_inference_form_leaves_the_model_alone():
    model = randomized_model('mobileformer_26m').train()
    fused = inference_form(model)
    assert model.training and any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert not fused.training and not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())


def test_export_command_writes_a_loadable_program(tmp_path):
    """`export --checkpoint W --out m.pt2`: the command loads the written torch.export program back and runs it at
    batch 1 and at batch 3 of another size (`deploy.export.check_program`), where it matches PyTorch, and leaves
    no partial file behind."""
    from cli_util import run_cli
    model = randomized_model('mobileformer_26m')
    checkpoint = tmp_path / 'weights' / 'model.pth'
    checkpoint.parent.mkdir()
    torch.save(model.state_dict(), checkpoint)
    path = tmp_path / 'out' / 'm.pt2'
    run = run_cli(['export', '--checkpoint', str(checkpoint), '--out', str(path), '--img-size', '64'])
    assert run.code == 0, run.err
    assert sorted(p.name for p in path.parent.iterdir()) == ['m.pt2']
    checks = dict(re.findall(r'\((\d+, 3, \d+, \d+)\): (\S+?)(?:,|$)', run.out, re.MULTILINE))
    assert set(checks) == {'1, 3, 64, 64', '3, 3, 160, 224'}, run.out
    assert all(float(diff) < 1e-5 for diff in checks.values()), checks


def test_export_command_rejects_an_unknown_format(tmp_path):
    from cli_util import error_line
    assert 'must end in .onnx or .pt2' in error_line(['export', '--model', '26m', '--out', str(tmp_path / 'm.tflite')])
    assert not any(tmp_path.iterdir())
