"""Exported Mobile-Former computes what PyTorch computes: torch.export and ONNX (via ONNX Runtime), with the
batch and image size left dynamic. The ONNX tests need the `onnx` extra and skip without it."""
from types import ModuleType
from typing import Optional

import pytest
import timm
import torch

from timm_mobileformer.export import export_onnx, export_program, inference_form
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


def onnx_runtime() -> Optional[ModuleType]:
    """onnxruntime when the whole `onnx` extra is installed, else None."""
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError:
        return None
    return onnxruntime


@pytest.mark.parametrize('variant', VARIANTS)
def test_torch_export(variant):
    """torch.export with a dynamic batch and size; with the onnx extra its own test covers the same program."""
    if onnx_runtime() is not None:
        pytest.skip('test_onnx_runtime_matches_pytorch checks the same torch.export program')
    model = create(variant)
    check_program(export_program(model, img_size=64), model)


@pytest.mark.parametrize('variant', VARIANTS)
def test_onnx_runtime_matches_pytorch(variant, tmp_path):
    """One export: the torch.export program behind the ONNX file, then the file in ONNX Runtime."""
    ort = onnx_runtime()
    if ort is None:
        pytest.skip('needs the onnx extra: pip install timm-mobileformer[onnx]')
    model = create(variant)
    path = tmp_path / f'{variant}.onnx'
    check_program(export_onnx(model, path, img_size=64).exported_program, model)
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    with torch.no_grad():
        for shape in SHAPES:
            x = torch.randn(*shape)
            out = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
            assert rel(out, model(x)) < 1e-4, shape


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
