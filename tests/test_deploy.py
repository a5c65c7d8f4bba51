"""The ONNX Runtime form (deploy/ort_form.py) computes what the plain model computes: eagerly, for all seven
variants; as ONNX files in ONNX Runtime for 26m (channel shuffles; exported through `timm-mobileformer export`
with a fixed size, opset 18 and ORT's optimized model at batch 2) and 294m (`export_onnx`: dynamic batch and
size, opset 23), each exported once per test session; so does ONNX Runtime's optimized model with the batch
fixed, whose dynamic ReLUs deploy/ort_graph.py rewrites: every site the form emits. Weights are random with
BatchNorm statistics, gates and slopes moved off their initial values, so that every fold is exercised. Needs
the `onnx` extra; the ONNX tests skip without it."""
import collections
from pathlib import Path
from typing import Callable, NamedTuple

import pytest
import timm
import torch
from deploy_util import randomized_model as create
from deploy_util import rel

from timm_mobileformer.deploy.ort_form import OrtMobileFormer
from timm_mobileformer.mobileformer import model_cfgs

VARIANTS = list(model_cfgs)
TOL = 1e-4
# the 294m graph as exported (before ONNX Runtime's own fusions; 996 nodes with token 0 as one strided Slice,
# 1,007 before); the fused form had 1,321 nodes
MAX_NODES_294M = 1000
SHUFFLED = 'mobileformer_26m'  # exported through `timm-mobileformer export`, size fixed, opset 18
LARGE = 'mobileformer_294m'  # exported through export_onnx, size dynamic, opset 23
CLI_IMG_SIZE, CLI_BATCH = 64, 2


class Exported(NamedTuple):
    model: torch.nn.Module
    path: Path
    fixed_size: bool
    opset: int


def input_rejected() -> tuple:
    """The errors ONNX Runtime raises for an input its graph does not take."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state
    return state.InvalidArgument, state.Fail


@pytest.fixture(scope='session')
def ort():
    pytest.importorskip('onnx')
    pytest.importorskip('onnxscript')
    return pytest.importorskip('onnxruntime')


@pytest.fixture(scope='session')
def exports(tmp_path_factory, ort) -> Callable[[str], Exported]:
    """The ONNX file of SHUFFLED or LARGE, exported on first use, once per test session."""
    from timm_mobileformer.deploy import export_onnx
    folder = tmp_path_factory.mktemp('deploy')
    cache: dict[str, Exported] = {}

    def get(variant: str) -> Exported:
        if variant not in cache:
            model = create(variant)
            path = folder / f'{variant}.onnx'
            if variant == SHUFFLED:
                export_through_cli(model, path)
                cache[variant] = Exported(model, path, fixed_size=True, opset=18)
            else:
                export_onnx(model, path, img_size=64)
                cache[variant] = Exported(model, path, fixed_size=False, opset=23)
        return cache[variant]
    return get


@pytest.fixture(scope='session')
def optimized(exports, tmp_path_factory) -> Callable[[str, int], tuple[Path, int]]:
    """ORT's optimized model of an exported file with the batch fixed, and the count of dynamic ReLUs rewritten:
    made on first use, once per session (SHUFFLED's at CLI_BATCH is the one the command wrote)."""
    from timm_mobileformer.deploy.ort import save_optimized
    folder = tmp_path_factory.mktemp('optimized')
    cache: dict[tuple[str, int], tuple[Path, int]] = {}

    def get(variant: str, batch: int) -> tuple[Path, int]:
        if (variant, batch) not in cache:
            path = exports(variant).path
            if variant == SHUFFLED and batch == CLI_BATCH:
                cache[variant, batch] = path.with_name('optimized.onnx'), rewrites_in(path.with_name('optimized.onnx'))
            else:
                out = folder / f'{variant}_b{batch}.onnx'
                cache[variant, batch] = out, save_optimized(path, out, batch_size=batch)
        return cache[variant, batch]
    return get


def export_through_cli(model: torch.nn.Module, path: Path) -> None:
    """`timm-mobileformer export --checkpoint W --out M.onnx --fixed-size --opset 18 --save-optimized O
    --batch-size 2`: the command's own ONNX Runtime checks pass, and it leaves exactly the two files asked for."""
    from timm_mobileformer.cli import main
    checkpoint = path.parent / 'weights' / 'model.pth'
    checkpoint.parent.mkdir()
    torch.save(model.state_dict(), checkpoint)
    optimized = path.with_name('optimized.onnx')
    before = set(path.parent.iterdir())
    assert main(['export', '--checkpoint', str(checkpoint), '--out', str(path), '--img-size', str(CLI_IMG_SIZE),
                 '--fixed-size', '--opset', '18', '--save-optimized', str(optimized),
                 '--batch-size', str(CLI_BATCH)]) == 0
    assert set(path.parent.iterdir()) - before == {path, optimized}


def rewrites_in(path: Path) -> int:
    """How many dynamic ReLUs of an optimized model ort_graph rewrote (by the names of their new nodes)."""
    import onnx
    return sum(n.name.startswith('nchwc_dyrelu') and n.name.endswith('_sum') for n in onnx.load(str(path)).graph.node)


def session(path: Path):
    from timm_mobileformer.deploy.ort import make_session
    return make_session(path)


def run(session, x: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


def mobile_former_blocks(model: torch.nn.Module) -> int:
    return sum(hasattr(block, 'mobile_to_former') for block in model.blocks)


@pytest.mark.parametrize('variant', VARIANTS)
def test_eager_ort_form_matches(variant):
    model = create(variant)
    form = OrtMobileFormer(model)
    with torch.no_grad():
        for shape in ((1, 3, 128, 128), (2, 3, 96, 64)):
            x = torch.randn(*shape)
            assert rel(form(x), model(x)) < 1e-5, shape


def test_stage1_multiplier_conv_reads_copies_in_the_stem_padding():
    """52m's stem has 8 channels in a block of 16: the padding holds copies of them, so the stage-1 block's
    multiplier-3 conv runs as 2 depthwise convs instead of 3 (that it still computes the same:
    test_eager_ort_form_matches). 294m's stem fills its block: zero padding is not needed, 2 convs for
    multiplier 2."""
    form = OrtMobileFormer(create('mobileformer_52m'))
    stem = form.stem(torch.randn(1, 3, 32, 32))
    assert stem.shape[1] == 16 and torch.equal(stem[:, 8:], stem[:, :8])
    assert len(form.blocks[0].conv_dw.weights) == 2
    assert (form.blocks[0].conv_dw.order >= 0).sum() == 24  # every output channel once
    form = OrtMobileFormer(create('mobileformer_294m'))
    assert len(form.blocks[0].conv_dw.weights) == 2


def test_ort_form_leaves_the_model_alone():
    model = create('mobileformer_26m')
    before = {k: v.clone() for k, v in model.state_dict().items()}
    OrtMobileFormer(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_onnx_dynamic_size_matches(exports):
    model, path, _, _ = exports(LARGE)
    onnx_session = session(path)
    with torch.no_grad():
        for shape in ((1, 3, 224, 224), (4, 3, 96, 160)):  # batch sizes and shapes other than the traced one
            x = torch.randn(*shape)
            assert rel(run(onnx_session, x), model(x)) < TOL, shape


def test_onnx_fixed_size_matches(exports):
    model, path, _, _ = exports(SHUFFLED)
    onnx_session = session(path)
    with torch.no_grad():
        for batch in (1, 3):
            x = torch.randn(batch, 3, CLI_IMG_SIZE, CLI_IMG_SIZE)
            assert rel(run(onnx_session, x), model(x)) < TOL, batch
    with pytest.raises(input_rejected()):  # the size is fixed
        run(onnx_session, torch.randn(1, 3, 128, 128))


def test_graph_has_only_the_nodes_the_math_needs(exports):
    """Opset 23: each Former's attention is one node; below it (opset 18) the attention is plain ops."""
    import onnx
    model, path, _, _ = exports(LARGE)
    ops = collections.Counter(node.op_type for node in onnx.load(str(path)).graph.node)
    assert sum(ops.values()) <= MAX_NODES_294M, ops
    assert ops['Where'] == 0, ops  # dynamic ReLU is Max(Mul, Mul)
    assert ops['Attention'] == mobile_former_blocks(model), ops  # each Former's attention is one node
    assert ops['Softmax'] == mobile_former_blocks(model) + 1, ops  # Mobile→Former's only; over tokens: spelled out
    assert 'Attention' not in {node.op_type for node in onnx.load(str(exports(SHUFFLED).path)).graph.node}


@pytest.mark.parametrize('variant', [SHUFFLED, LARGE])
def test_every_dynamic_relu_is_the_pattern_ort_graph_rewrites(variant, exports):
    """The form emits each dynamic ReLU (two per Mobile-Former block) as the Max of Muls that ort_graph matches."""
    import onnx

    from timm_mobileformer.deploy.ort_graph import count_dynamic_relus
    model, path, _, _ = exports(variant)
    assert count_dynamic_relus(onnx.load(str(path))) == 2 * mobile_former_blocks(model)


def uses_blocked_layout(path: Path) -> bool:
    """Whether ONNX Runtime put convs of this optimized model in its blocked layout (it depends on the CPU)."""
    import onnx

    from timm_mobileformer.deploy.ort_graph import NCHWC
    return any(node.domain == NCHWC for node in onnx.load(str(path)).graph.node)


@pytest.mark.parametrize('variant, batch', [(SHUFFLED, 1), (SHUFFLED, CLI_BATCH), (LARGE, 1)])
def test_ort_optimized_fixed_batch_matches(variant, batch, exports, optimized):
    """`save_optimized(batch_size=1 or 2)`: every dynamic ReLU (two per Mobile-Former block) moves into the
    blocked layout where ORT uses it, the graph is trimmed, and the file computes what PyTorch computes (at two
    sizes where the size is free), at that batch only."""
    import onnx

    from timm_mobileformer.deploy.ort_graph import NCHWC
    model, _, fixed_size, opset = exports(variant)
    path, rewritten = optimized(variant, batch)
    if uses_blocked_layout(path):
        assert rewritten == 2 * mobile_former_blocks(model)
        graph = onnx.load(str(path)).graph
        ops = collections.Counter(node.op_type for node in graph.node)
        assert ops['Max'] == 0, ops  # no dynamic ReLU left in NCHW
        nchw_convs = [n.name for n in graph.node if n.op_type in ('Conv', 'FusedConv') and n.domain != NCHWC]
        assert not nchw_convs, nchw_convs  # the multiplier depthwise convs too
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
        attention_nodes = mobile_former_blocks(model) if opset >= 23 else 0
        assert ops['Attention'] == attention_nodes and not around_attention, around_attention
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
            gemms = [1 if m.slopes.one_fc2 else 2 for m in OrtMobileFormer(model).modules() if hasattr(m, 'slopes')]
            assert len(sources) == sum(gemms) < rewritten, (len(sources), gemms)
    optimized_session = session(path)
    sizes = [(CLI_IMG_SIZE, CLI_IMG_SIZE)] if fixed_size else [(64, 64), (96, 160)]
    with torch.no_grad():
        for size in sizes:
            x = torch.randn(batch, 3, *size)
            assert rel(run(optimized_session, x), model(x)) < TOL, size
    with pytest.raises(input_rejected()):  # the batch is fixed
        run(optimized_session, torch.randn(batch + 1, 3, *sizes[0]))


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
    from timm_mobileformer.deploy import ort_graph
    from timm_mobileformer.deploy.ort import save_optimized
    from timm_mobileformer.errors import MobileFormerError
    rewrite = ort_graph.rewrite_dynamic_relus

    def spoiled(model):
        count = rewrite(model)
        if not count:
            pytest.skip('ONNX Runtime does not use its blocked layout on this CPU')
        for node in model.graph.node:
            if node.name.startswith('nchwc_'):
                spoil(node)
        return count

    path = exports(SHUFFLED).path  # exported (through the CLI) before the rewrite is spoiled
    monkeypatch.setattr(ort_graph, 'rewrite_dynamic_relus', spoiled)
    out = tmp_path / 'out'
    with pytest.raises(MobileFormerError, match=message) as err:
        save_optimized(path, out / 'optimized.onnx', batch_size=1)
    assert '\n' not in str(err.value)
    assert not out.exists()  # the folder it created is gone too


def test_bench_onnxruntime(exports, tmp_path, monkeypatch):
    """`bench --runtime onnxruntime` times every model from its optimized file per batch size, alternating,
    with the op profile; the export is the one tested above (bench exports the same way, size fixed)."""
    from timm_mobileformer.bench import benchmark
    from timm_mobileformer.deploy import onnx as deploy_onnx
    path = exports(SHUFFLED).path
    peer = 'mobilenetv3_small_050'
    peer_path = tmp_path / f'{peer}.onnx'
    deploy_onnx.export_peer(timm.create_model(peer).eval(), peer_path, img_size=CLI_IMG_SIZE)
    files = {SHUFFLED: path, peer: peer_path}
    monkeypatch.setattr(deploy_onnx, 'export_for_bench', lambda name, folder, img_size: files[name])
    lines = []
    report = benchmark([SHUFFLED], tmp_path / 'bench', peers=[peer], batch_sizes=(1, 2), rounds=2,
                       round_time=0.05, img_size=CLI_IMG_SIZE, runtime='onnxruntime', profile=True, threads=1,
                       log=lines.append)
    assert [(c['mode'], c['batch_size']) for c in report['cells']] == [('onnxruntime', 1), ('onnxruntime', 2)]
    for cell in report['cells']:
        assert all(len(cell['rounds'][name]) == 2 and min(cell['rounds'][name]) > 0 for name in files)
    assert {row['model'] for row in report['rows']} == set(files)
    assert set(report['profiles']) == {f'{name} batch {b}' for name in files for b in (1, 2)}
    rewritten = [line for line in lines if 'dynamic ReLUs in the blocked layout' in line]
    optimized_b1 = path.with_name(f'{path.stem}_b1.ort.onnx')
    assert len(rewritten) == (2 if uses_blocked_layout(optimized_b1) else 0)
    assert all(SHUFFLED in line for line in rewritten)
    assert (tmp_path / 'bench' / 'bench.json').is_file()
