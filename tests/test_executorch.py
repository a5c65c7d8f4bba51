"""ExecuTorch programs for XNNPACK (deploy/executorch.py, deploy/xnnpack_form.py): the XNNPACK form computes what
the model computes, for all seven variants in PyTorch; lowered programs of 26m (channel shuffles) and 294m run
every compute op inside XNNPACK and match PyTorch to 1e-4; an int8 program of 26m, made by the command line, is
fully delegated and its logits stay close to fp32's; bad requests fail with one line before any work. Each
program is lowered once per test session."""
import pytest
import torch
import torch.nn as nn
from cli_util import error_line, folder_state, run_cli
from deploy_util import randomized_model, rel

from timm_mobileformer.mobileformer import model_cfgs

pytest.importorskip('executorch')

from safetensors.torch import save_file  # noqa: E402

from timm_mobileformer.bench import benchmark  # noqa: E402
from timm_mobileformer.demo_data import make_demo_data  # noqa: E402
from timm_mobileformer.deploy import executorch  # noqa: E402
from timm_mobileformer.deploy.xnnpack_form import XnnpackLayerNorm, XnnpackMobileFormer  # noqa: E402
from timm_mobileformer.errors import MobileFormerError  # noqa: E402

IMG_SIZE = 224


@pytest.mark.parametrize('variant', list(model_cfgs))
def test_xnnpack_form_matches(variant):
    """The form programs are lowered from, at batch 1 and 2 (its batch is fixed), in PyTorch."""
    model = randomized_model(variant)
    for batch_size, size in ((1, 96), (2, 64)):
        x = torch.randn(batch_size, 3, size, size)
        with torch.no_grad():
            assert rel(XnnpackMobileFormer(model, batch_size)(x), model(x)) < 1e-5, (batch_size, size)


@pytest.fixture(scope='session', params=['mobileformer_26m', 'mobileformer_294m'])
def fp32_program(request, tmp_path_factory):
    """(model, path, checks) of an fp32 program written by `export_executorch`."""
    model = randomized_model(request.param)
    path = tmp_path_factory.mktemp('pte') / f'{request.param}.pte'
    return model, path, executorch.export_executorch(model, path, IMG_SIZE)


def test_fp32_program_is_fully_delegated_and_matches(fp32_program):
    model, path, checks = fp32_program
    assert executorch.ops_outside_delegate(path.read_bytes()) == {}
    assert checks['max relative difference'] <= 1e-4
    module = executorch.load_program(path)
    x = torch.randn(1, 3, IMG_SIZE, IMG_SIZE)
    with torch.no_grad():
        assert rel(module.forward((x,))[0], model(x)) <= 1e-4


def lowered_layer_norm() -> bytes:
    """A tiny program whose LayerNorm XNNPACK does not take: it stays in ExecuTorch's portable kernels."""
    return executorch.lower(nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8)).eval(), torch.randn(2, 8)).buffer


def test_ops_outside_the_delegate_are_counted():
    assert executorch.ops_outside_delegate(lowered_layer_norm()) == {'aten::native_layer_norm': 1}


def test_a_program_with_ops_outside_is_refused(monkeypatch, tmp_path):
    buffer = lowered_layer_norm()
    monkeypatch.setattr(executorch, 'lower', lambda *args, **kwargs: type('Program', (), {'buffer': buffer}))
    with pytest.raises(MobileFormerError, match='1 ops stay outside XNNPACK'):
        executorch.export_executorch(randomized_model('mobileformer_26m'), tmp_path / 'm.pte', 64)
    assert list(tmp_path.iterdir()) == []


def quantized_rsqrt_users(float_types) -> list[str]:
    """What reads the rsqrt of a LayerNorm of the XNNPACK form after `quantized_form`."""
    module = nn.Sequential(nn.Linear(8, 8), XnnpackLayerNorm(nn.LayerNorm(8))).eval()
    x = torch.randn(4, 8)
    quantized = executorch.quantized_form(module, x, [x], float_types)
    return [str(user.target) for node in quantized.graph.nodes if node.target == torch.ops.aten.rsqrt.default
            for user in node.users]


def test_int8_keeps_the_layer_norms_in_float():
    """By default (`FLOAT_IN_INT8`) nothing quantizes a LayerNorm's values; asked for everything in int8, it is."""
    by_default = quantized_rsqrt_users(None)
    assert by_default and not any('quantize' in user for user in by_default)
    assert any('quantize' in user for user in quantized_rsqrt_users(()))


@pytest.fixture(scope='session')
def demo_images(tmp_path_factory):
    return make_demo_data(tmp_path_factory.mktemp('demo') / 'shapes', train_per_class=2, val_per_class=2)


def test_calibration_images_take_the_program_size(demo_images):
    """Read with the model's preprocessing at the size the program is exported at (default: the model's 224)."""
    model = randomized_model('mobileformer_26m')
    batches = executorch.calibration_images(demo_images / 'train', model, batch_size=2, img_size=64)
    assert len(batches) == 6 and all(tuple(b.shape) == (2, 3, 64, 64) for b in batches)
    assert tuple(executorch.calibration_images(demo_images / 'train', model, limit=1)[0].shape) == (1, 3, 224, 224)


@pytest.fixture(scope='session')
def int8_program(tmp_path_factory, demo_images):
    """(model, path, run) of an int8 26m program made by `timm-mobileformer export --quantize int8 --calibration
    DIR` from a checkpoint of the randomized model."""
    folder = tmp_path_factory.mktemp('int8')
    model = randomized_model('mobileformer_26m')
    save_file(model.state_dict(), str(folder / 'model.safetensors'))
    path = folder / 'int8.pte'
    run = run_cli(['export', '--checkpoint', str(folder / 'model.safetensors'), '--out', str(path),
                   '--quantize', 'int8', '--calibration', str(demo_images / 'train')])
    return model, path, run


def test_int8_program_is_fully_delegated_and_close_to_fp32(int8_program, demo_images):
    """Its logits against PyTorch's fp32 logits on drawn images the calibration did not see."""
    model, path, run = int8_program
    assert run.code == 0, run.err
    assert 'int8' in run.out and 'cosine similarity' in run.out
    assert executorch.ops_outside_delegate(path.read_bytes()) == {}
    module = executorch.load_program(path)
    for x in executorch.calibration_images(demo_images / 'validation', model):
        with torch.no_grad():
            cosine = torch.nn.functional.cosine_similarity(module.forward((x,))[0], model(x))
        assert float(cosine) >= executorch.MIN_COSINE


@pytest.mark.parametrize('extra, message', [
    (['--out', 'm.onnx', '--quantize', 'int8', '--calibration', '.'], 'apply to .pte files only'),
    (['--out', 'm.pte', '--quantize', 'int8'], 'go together'),
    (['--out', 'm.pte', '--calibration', 'empty'], 'go together'),
    (['--out', 'm.pte', '--quantize', 'int8', '--calibration', 'empty'], 'holds no images'),
])
def test_bad_requests_fail_before_any_work(tmp_path, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'empty').mkdir()
    before = folder_state(tmp_path)
    assert message in error_line(['export', '--model', '26m'] + extra)
    assert folder_state(tmp_path) == before


def test_missing_extra_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(executorch, 'missing_executorch', lambda: executorch.MISSING_EXTRA)
    assert 'pip install "timm-mobileformer[executorch]"' in error_line(
        ['export', '--model', '26m', '--out', str(tmp_path / 'm.pte')])
    assert list(tmp_path.iterdir()) == []


def test_bench_refuses_calibration_without_int8(tmp_path):
    with pytest.raises(MobileFormerError, match='goes with --quantize int8'):
        benchmark(['mobileformer_26m'], tmp_path / 'out', peers=[], batch_sizes=[1], runtime='executorch',
                  runtime_options={'calibration': str(tmp_path)})
    assert not (tmp_path / 'out').exists()
