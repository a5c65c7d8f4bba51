"""The runtime form (layers/deploy.py) computes what the plain model computes: eagerly, and as ONNX files in ONNX
Runtime with a dynamic size (all seven variants) and a fixed size, at two batch sizes and two shapes; so does
ONNX Runtime's optimized model with the batch fixed, whose dynamic ReLUs ort_graph.py rewrites (all seven, two
shapes). Weights are random with BatchNorm statistics, gates and slopes moved off their initial values, so
that every fold is exercised. Needs the `onnx` extra; the ONNX tests skip without it."""
import collections

import pytest
import timm
import torch

from timm_mobileformer.layers.deploy import DeployMobileFormer
from timm_mobileformer.mobileformer import model_cfgs

VARIANTS = list(model_cfgs)
TOL = 1e-4
# the 294m graph as exported (before ONNX Runtime's own fusions; 996 nodes with token 0 as one strided Slice,
# 1,007 before); the fused form had 1,321 nodes
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
    """`timm-mobileformer export --checkpoint W --out M.onnx --save-optimized O --batch-size 2`: the command's own
    ONNX Runtime checks pass, and it leaves exactly the two files asked for."""
    from timm_mobileformer.cli import main
    checkpoint = path.parent / 'weights' / 'model.pth'
    checkpoint.parent.mkdir()
    torch.save(model.state_dict(), checkpoint)
    optimized = path.with_name('optimized.onnx')
    before = set(path.parent.iterdir())
    assert main(['export', '--checkpoint', str(checkpoint), '--out', str(path), '--img-size', '64',
                 '--save-optimized', str(optimized), '--batch-size', '2']) == 0
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


def test_stage1_multiplier_conv_reads_copies_in_the_stem_padding():
    """52m's stem has 8 channels in a block of 16: the padding holds copies of them, so the stage-1 block's
    multiplier-3 conv runs as 2 depthwise convs instead of 3 (that it still computes the same:
    test_eager_deploy_form_matches). 294m's stem fills its block: zero padding is not needed, 2 convs for
    multiplier 2."""
    deploy = DeployMobileFormer(create('mobileformer_52m'))
    stem = deploy.stem(torch.randn(1, 3, 32, 32))
    assert stem.shape[1] == 16 and torch.equal(stem[:, 8:], stem[:, :8])
    assert len(deploy.blocks[0].conv_dw.weights) == 2
    assert (deploy.blocks[0].conv_dw.order >= 0).sum() == 24  # every output channel once
    deploy = DeployMobileFormer(create('mobileformer_294m'))
    assert len(deploy.blocks[0].conv_dw.weights) == 2


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
    model, _, path = exports('mobileformer_294m')
    ops = collections.Counter(node.op_type for node in onnx.load(str(path)).graph.node)
    assert sum(ops.values()) <= MAX_NODES_294M, ops
    assert ops['Where'] == 0, ops  # dynamic ReLU is Max(Mul, Mul)
    assert ops['Attention'] == mobile_former_blocks(model), ops  # each Former's attention is one node
    assert ops['Softmax'] == mobile_former_blocks(model) + 1, ops  # Mobile→Former's only; over tokens: spelled out


def test_onnx_before_opset_23_matches(ort, tmp_path):
    """Below opset 23 (no `Attention` op) the Former's attention is exported as plain ops, with the same output."""
    import onnx
    from timm_mobileformer.export import export_onnx
    model = create('mobileformer_52m')
    export_onnx(model, tmp_path / 'm.onnx', img_size=64, opset=18, fixed_size=True)
    assert 'Attention' not in {node.op_type for node in onnx.load(str(tmp_path / 'm.onnx')).graph.node}
    session = ort.InferenceSession(str(tmp_path / 'm.onnx'), providers=['CPUExecutionProvider'])
    with torch.no_grad():
        x = torch.randn(2, 3, 64, 64)
        assert rel(run(session, x), model(x)) < TOL


def test_deploy_form_leaves_the_model_alone():
    model = create('mobileformer_26m')
    before = {k: v.clone() for k, v in model.state_dict().items()}
    DeployMobileFormer(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def mobile_former_blocks(model: torch.nn.Module) -> int:
    return sum(hasattr(block, 'mobile_to_former') for block in model.blocks)


def uses_blocked_layout(path) -> bool:
    """Whether ONNX Runtime put convs of this optimized model in its blocked layout (it depends on the CPU)."""
    import onnx
    from timm_mobileformer.ort_graph import NCHWC
    return any(node.domain == NCHWC for node in onnx.load(str(path)).graph.node)


@pytest.mark.parametrize('variant, batch', [(v, 1 + i % 2) for i, v in enumerate(VARIANTS)])
def test_ort_optimized_fixed_batch_matches(variant, batch, exports, tmp_path):
    """`save_optimized(batch_size=1 or 2)`: every dynamic ReLU (two per Mobile-Former block) moves into the
    blocked layout where ORT uses it, the graph is trimmed, and the file computes what PyTorch computes at two
    sizes, at that batch only."""
    import onnx
    from timm_mobileformer.export import save_optimized
    from timm_mobileformer.ort import make_session
    model, _, path = exports(variant)
    optimized = tmp_path / 'optimized.onnx'
    rewritten = save_optimized(path, optimized, batch_size=batch)
    if uses_blocked_layout(optimized):
        assert rewritten == 2 * mobile_former_blocks(model)
        ops = collections.Counter(node.op_type for node in onnx.load(str(optimized)).graph.node)
        assert ops['Max'] == 0, ops  # no dynamic ReLU left in NCHW
        nchw_convs = [n.name for n in onnx.load(str(optimized)).graph.node
                      if n.op_type in ('Conv', 'FusedConv') and n.domain != 'com.microsoft.nchwc']
        assert not nchw_convs, nchw_convs  # the multiplier depthwise convs too
        graph = onnx.load(str(optimized)).graph
        producer = {out: n for n in graph.node for out in n.output}
        skips_in_nchw = [n.name for n in graph.node if n.op_type == 'Add'
                         and any(getattr(producer.get(i), 'op_type', '') == 'ReorderOutput' for i in n.input)]
        assert not skips_in_nchw, skips_in_nchw  # identity skips are added by the convs, in the blocked layout
        shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.value_info}
        undone = [n.name for n in graph.node if n.op_type == 'Reshape'
                  and getattr(producer.get(n.input[0]), 'op_type', '') == 'Reshape'
                  and shapes.get(n.output[0]) == shapes.get(producer[n.input[0]].input[0])]
        assert not undone, undone  # no reshape back to the shape a reshape started from
        around_attention = [n.name for n in graph.node if n.op_type == 'Transpose' and any(
            getattr(producer.get(i), 'op_type', '') == 'Attention' for i in n.input)]
        assert ops['Attention'] == mobile_former_blocks(model) and not around_attention, around_attention
        readers = collections.defaultdict(list)
        for n in graph.node:
            for i in n.input:
                readers[i].append(n.op_type)
        slope_pads = [n.name for n in graph.node if n.op_type == 'Pad' and readers[n.output[0]] != ['ReorderInput']]
        assert not slope_pads, slope_pads  # the runtime form pads each dynamic ReLU's channels to whole blocks
        if batch == 1:  # so every site's weights are split from its slopes reshaped once to (S, 1, 1, 1),
            # one such split per fc2 Gemm: both ReLUs of a block with one block-diagonal fc2 share it
            sums = [n for n in graph.node if n.name.startswith('nchwc_dyrelu') and n.name.endswith('_sum')]
            sources = {producer[n.input[1]].name for n in sums}
            assert all(s.startswith('nchwc_slopes') and s.endswith('_split') for s in sources), sources
            gemms = [1 if m.slopes.one_fc2 else 2 for m in DeployMobileFormer(model).modules() if hasattr(m, 'slopes')]
            assert len(sources) == sum(gemms) < rewritten, (len(sources), gemms)
    session = make_session(optimized)
    with torch.no_grad():
        for size in ((64, 64), (96, 160)):
            x = torch.randn(batch, 3, *size)
            assert rel(run(session, x), model(x)) < TOL, size
    with pytest.raises(Exception):  # the batch is fixed
        run(session, torch.randn(3, 3, 64, 64))


def reverse_slopes(node) -> None:
    if node.op_type == 'Sub':
        node.input[0], node.input[1] = node.input[1], node.input[0]


def break_groups(node) -> None:
    if node.op_type == 'Conv':
        next(a for a in node.attribute if a.name == 'group').i += 1


@pytest.mark.parametrize('spoil, message', [(reverse_slopes, 'differs from the ONNX file'),
                                            (break_groups, 'rewritten optimized model')])
def test_wrong_rewrite_is_not_kept(spoil, message, exports, tmp_path, monkeypatch):
    """The optimized model is checked against the ONNX file before it is written: a rewrite with the slopes'
    difference reversed, or one that ONNX Runtime can't load, is refused with one line and leaves nothing."""
    from timm_mobileformer import ort_graph
    from timm_mobileformer.errors import MobileFormerError
    from timm_mobileformer.export import save_optimized
    rewrite = ort_graph.rewrite_dynamic_relus

    def spoiled(model):
        count = rewrite(model)
        if not count:
            pytest.skip('ONNX Runtime does not use its blocked layout on this CPU')
        for node in model.graph.node:
            if node.name.startswith('nchwc_'):
                spoil(node)
        return count

    _, _, path = exports('mobileformer_26m')  # exported (through the CLI) before the rewrite is spoiled
    monkeypatch.setattr(ort_graph, 'rewrite_dynamic_relus', spoiled)
    out = tmp_path / 'out'
    with pytest.raises(MobileFormerError, match=message) as err:
        save_optimized(path, out / 'optimized.onnx', batch_size=1)
    assert '\n' not in str(err.value)
    assert not any(out.iterdir())


def test_bench_onnxruntime(exports, tmp_path, monkeypatch):
    """`bench --runtime onnxruntime` times every model from its optimized file per batch size, alternating,
    with the op profile; the export is the one tested above (bench exports the same way)."""
    from timm_mobileformer import ort
    from timm_mobileformer.bench import benchmark
    _, _, path = exports(CLI_VARIANT)
    peer = 'mobilenetv3_small_050'
    peer_path = tmp_path / f'{peer}.onnx'
    ort.export_peer(timm.create_model(peer).eval(), peer_path, img_size=64)
    files = {CLI_VARIANT: path, peer: peer_path}
    monkeypatch.setattr(ort, 'export_for_bench', lambda name, folder, img_size: files[name])
    lines = []
    report = benchmark([CLI_VARIANT], tmp_path / 'bench', peers=[peer], batch_sizes=(1, 2), rounds=2,
                       round_time=0.05, img_size=64, runtime='onnxruntime', profile=True, threads=1,
                       log=lines.append)
    assert [(c['mode'], c['batch_size']) for c in report['cells']] == [('onnxruntime', 1), ('onnxruntime', 2)]
    for cell in report['cells']:
        assert all(len(cell['rounds'][name]) == 2 and min(cell['rounds'][name]) > 0 for name in files)
    assert {row['model'] for row in report['rows']} == set(files)
    assert set(report['profiles']) == {f'{name} batch {b}' for name in files for b in (1, 2)}
    rewritten = [line for line in lines if 'dynamic ReLUs in the blocked layout' in line]
    optimized = path.with_name(f'{path.stem}_b1.ort.onnx')
    assert len(rewritten) == (2 if uses_blocked_layout(optimized) else 0)
    assert all(CLI_VARIANT in line for line in rewritten)
    assert (tmp_path / 'bench' / 'bench.json').is_file()
