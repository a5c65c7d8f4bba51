"""The runtime form (layers/deploy.py) computes what the plain model computes: eagerly, and as ONNX files in ONNX
Runtime with a dynamic size (all seven variants) and a fixed size, at two batch sizes and two shapes. Weights
are random with BatchNorm statistics, gates and slopes moved off their initial values, so that every fold
is exercised. Needs the `onnx` extra; the ONNX tests skip without it."""
import collections

import pytest
import timm
import torch

from timm_mobileformer.layers.deploy import DeployMobileFormer
from timm_mobileformer.mobileformer import model_cfgs

VARIANTS = list(model_cfgs)
TOL = 1e-4
# the 294m graph as exported (before ONNX Runtime's own fusions); the fused form had 1,321 nodes
MAX_NODES_294M = 1000
# exported through `timm-mobileformer export` (the others through export_onnx)
CLI_VARIANT = 'mobileformer_26m'


def create(variant: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(variant).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2.)
                module.weight.normal_(1., 0.2)
                module.bias.normal_(0., 0.1)
        for name, param in model.named_parameters():
            if name.endswith('fc2.bias') or '.gate.' in name or name == 'tokens':
                param.add_(torch.randn_like(param) * 0.5)
    return model


def rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out - ref).abs().max() / ref.abs().max())


@pytest.fixture(scope='module')
def ort():
    pytest.importorskip('onnx')
    pytest.importorskip('onnxscript')
    return pytest.importorskip('onnxruntime')


@pytest.fixture(scope='module')
def exports(tmp_path_factory, ort):
    """Lazily exported files, one per (variant, fixed size), shared by the tests of this module."""
    from timm_mobileformer.export import export_onnx
    folder = tmp_path_factory.mktemp('deploy')
    cache = {}

    def get(variant: str, fixed: bool = False):
        key = (variant, fixed)
        if key not in cache:
            model = create(variant)
            path = folder / f'{variant}{"_fixed" if fixed else ""}.onnx'
            if variant == CLI_VARIANT and not fixed:
                export_through_cli(model, path)
            else:
                export_onnx(model, path, img_size=96 if fixed else 64, fixed_size=fixed)
            cache[key] = model, ort.InferenceSession(str(path), providers=['CPUExecutionProvider']), path
        return cache[key]
    return get


def export_through_cli(model: torch.nn.Module, path) -> None:
    """`timm-mobileformer export --checkpoint W --out M.onnx --save-optimized O`: the command's own ONNX Runtime
    check passes, and it leaves exactly the two files asked for."""
    from timm_mobileformer.cli import main
    checkpoint = path.parent / 'weights' / 'model.pth'
    checkpoint.parent.mkdir()
    torch.save(model.state_dict(), checkpoint)
    optimized = path.with_name('optimized.onnx')
    before = set(path.parent.iterdir())
    assert main(['export', '--checkpoint', str(checkpoint), '--out', str(path), '--img-size', '64',
                 '--save-optimized', str(optimized)]) == 0
    assert set(path.parent.iterdir()) - before == {path, optimized}


def run(session, x: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


@pytest.mark.parametrize('variant', VARIANTS)
def test_eager_deploy_form_matches(variant):
    model = create(variant)
    deploy = DeployMobileFormer(model)
    with torch.no_grad():
        for shape in ((1, 3, 224, 224), (2, 3, 128, 96)):
            x = torch.randn(*shape)
            assert rel(deploy(x), model(x)) < 1e-5, shape


@pytest.mark.parametrize('variant', VARIANTS)
def test_onnx_dynamic_size_matches(variant, exports):
    model, session, _ = exports(variant)
    with torch.no_grad():
        for shape in ((1, 3, 224, 224), (4, 3, 96, 160)):  # batch sizes and shapes other than the traced one
            x = torch.randn(*shape)
            assert rel(run(session, x), model(x)) < TOL, shape


@pytest.mark.parametrize('variant', ['mobileformer_294m', 'mobileformer_26m'])
def test_onnx_fixed_size_matches(variant, exports, ort):
    model, session, _ = exports(variant, fixed=True)
    with torch.no_grad():
        for batch in (1, 3):
            x = torch.randn(batch, 3, 96, 96)
            assert rel(run(session, x), model(x)) < TOL, batch
    with pytest.raises(Exception):  # the size is fixed
        run(session, torch.randn(1, 3, 128, 128))


def test_graph_has_only_the_nodes_the_math_needs(exports):
    import onnx
    _, _, path = exports('mobileformer_294m')
    ops = collections.Counter(node.op_type for node in onnx.load(str(path)).graph.node)
    assert sum(ops.values()) <= MAX_NODES_294M, ops
    assert ops['Where'] == 0, ops  # dynamic ReLU is Max(Mul, Mul)


def test_deploy_form_leaves_the_model_alone():
    model = create('mobileformer_26m')
    before = {k: v.clone() for k, v in model.state_dict().items()}
    DeployMobileFormer(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
