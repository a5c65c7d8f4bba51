"""Rewrites of ONNX Runtime's own optimized graph, batch fixed (`optimize`): the dynamic ReLU in ORT's blocked
layout, identity skips added there, reshapes that undo reshapes dropped, attention on token matrices.

The dynamic ReLU sites are the pattern `ort_form.dynamic_relu` emits, Max(Mul(x, k1), Mul(x, k2))
(`dynamic_relu_muls`, also what tests count in an exported file), with the slopes that `ort_form`'s
`OrtDynamicReLUSlopes` reshapes from one Split per fc2 Gemm.

ONNX Runtime (CPU) runs convs in its blocked NCHWc layout, but a `Mul` by a per-sample channel vector only in
plain NCHW, so ORT's optimized graph computes each dynamic ReLU max(k1 x, k2 x) as
ReorderOutput, Mul, Mul, Max, ReorderInput: five passes over the map, two of them layout changes.

ORT's NCHWc depthwise conv takes its weights as a runtime input, so the same math stays in the blocked layout:

    max(k1 x, k2 x) = k2 x + relu((k1 - k2) x)
    u = Conv_dw(x, k1 - k2, activation=Relu);   y = Conv_dw(x, k2, Sum=u)

(1x1 depthwise weights are one value per channel, the same in the blocked and the plain order; the runtime
form pads every dynamic ReLU's channels to whole blocks, so ORT pads none). The blocked buffer of an
(N, C, H, W) map is that of (1, N C, H, W), so a batch of N is one conv with N C groups: the batch must be
fixed (`pin_batch`); height and width stay free. The slopes are read as the (N, C) matrices they were
reshaped from; at batch 1 their (1, S) source (both ReLUs' slopes where a block has one fc2 Gemm) is reshaped
once to (S, 1, 1, 1) and split there (one Reshape, not one per slope). A site that does not match the pattern
exactly (channels ORT would pad included) is left as it is, and `ort.save_optimized` checks the rewritten
file against the ONNX file it came from.

`fuse_skip_adds` moves each block's identity skip into the blocked layout too: ORT adds a conv's output to
the block input in plain NCHW (the input is NCHW, only its reordered copy is blocked), after reordering the
conv's output; the conv can add the reordered copy itself (its `Sum` input): one node and one pass fewer.

`drop_identity_reshapes` removes a Reshape that restores the shape its input's Reshape started from (a bridge
reads the map in the head-split shape that Former→Mobile wrote it in; ORT keeps both reshapes because the map
between them has other readers). `attention_on_tokens` gives each Former's `Attention` its (B, tokens, dim)
inputs with `q_num_heads` instead of head-split (B, heads, tokens, dim) ones: no Transposes around it.
"""
from typing import TYPE_CHECKING, Optional

import numpy as np

if TYPE_CHECKING:
    import onnx

NCHWC = 'com.microsoft.nchwc'


def optimize(model: 'onnx.ModelProto') -> int:
    """All rewrites, in place, on ORT's optimized graph with the batch fixed; returns how many dynamic ReLUs
    moved into the blocked layout."""
    rewritten = rewrite_dynamic_relus(model)
    fuse_skip_adds(model)
    drop_identity_reshapes(model)
    attention_on_tokens(model)
    return rewritten


def pin_batch(model: 'onnx.ModelProto', batch_size: int) -> 'onnx.ModelProto':
    """`model` with the batch dimension of its inputs and outputs fixed at `batch_size` (in place)."""
    for value in list(model.graph.input) + list(model.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField('dim_param')
        dim.dim_value = batch_size
    return model


def _attr(node, name: str):
    for a in node.attribute:
        if a.name == name:
            return a
    return None


def _edges(nodes) -> tuple:
    """(the producer of each tensor name, the nodes that read each name)."""
    producer = {out: n for n in nodes for out in n.output}
    consumers: dict[str, list] = {}
    for n in nodes:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    return producer, consumers


def _set_nodes(graph, nodes: list) -> None:
    nodes = list(nodes)
    del graph.node[:]
    graph.node.extend(nodes)


def _constant(graph, name: str) -> Optional[np.ndarray]:
    """The value of initializer `name`, or None."""
    from onnx import numpy_helper
    tensor = next((t for t in graph.initializer if t.name == name), None)
    return None if tensor is None else numpy_helper.to_array(tensor)


def _in_channels(conv, weights: dict[str, tuple]) -> Optional[int]:
    """The input channels, as ORT padded them to its block, of an NCHWc conv with constant weights."""
    if conv.domain != NCHWC or conv.op_type != 'Conv' or len(conv.input) < 2 or conv.input[1] not in weights:
        return None
    out_chs, in_per_group = weights[conv.input[1]][:2]
    group = _attr(conv, 'group')
    group = group.i if group is not None else 1
    if group > 1 and in_per_group == 1:  # depthwise
        return out_chs
    return in_per_group * group


def _slopes_matrix(name: str, producer: dict, consumers: dict, ranks: dict[str, int]) -> Optional[str]:
    """The (N, C) matrix that a Reshape turned into the (N, C, 1, 1) slopes `name`, if only the Mul reads them."""
    reshape = producer.get(name)
    if reshape is None or reshape.op_type != 'Reshape' or len(consumers.get(name, [])) != 1:
        return None
    return reshape.input[0] if ranks.get(reshape.input[0]) == 2 else None


def _halves(k1: str, k2: str, channels: int, producer: dict, consumers: dict, ranks: dict[str, int],
            graph) -> Optional[tuple]:
    """(the Split, the index of k1 among its outputs) if the slopes k1, k2 are two neighbouring outputs of
    `channels` columns each of one Split of a rank-2 matrix along axis 1, read only by their reshapes; else
    None. (A block's two ReLUs may share one Split: k1, k2 of the first, then of the second.)"""
    split = producer.get(k1)
    if (split is None or split is not producer.get(k2) or split.op_type != 'Split' or split.domain
            or len(split.input) != 2 or ranks.get(split.input[0]) != 2
            or getattr(_attr(split, 'axis'), 'i', 0) not in (1, -1)
            or not all(len(consumers.get(k, [])) == 1 for k in (k1, k2))):
        return None
    outputs = list(split.output)
    index = outputs.index(k1)
    sizes = _constant(graph, split.input[1])
    if (index + 1 >= len(outputs) or outputs[index + 1] != k2 or sizes is None
            or sizes.tolist()[index:index + 2] != [channels, channels]):
        return None
    return split, index


def dynamic_relu_muls(node, producer: dict) -> Optional[tuple]:
    """(Mul(x, k1), Mul(x, k2)) if `node` is a dynamic ReLU as the runtime form emits it, Max of those two Muls
    of one x; else None."""
    if node.op_type != 'Max' or node.domain or len(node.input) != 2:
        return None
    m1, m2 = producer.get(node.input[0]), producer.get(node.input[1])
    if not (m1 and m2 and m1.op_type == m2.op_type == 'Mul' and m1.input[0] == m2.input[0]):
        return None
    return m1, m2


def count_dynamic_relus(model: 'onnx.ModelProto') -> int:
    """How many dynamic ReLUs (`dynamic_relu_muls`) the graph of `model` holds."""
    producer, _ = _edges(model.graph.node)
    return sum(dynamic_relu_muls(node, producer) is not None for node in model.graph.node)


def rewrite_dynamic_relus(model: 'onnx.ModelProto') -> int:
    """Rewrite the dynamic ReLUs of ORT's optimized graph `model` (batch fixed) into NCHWc depthwise convs, in
    place; returns how many were rewritten."""
    from onnx import helper, numpy_helper

    graph = model.graph
    batch = graph.input[0].type.tensor_type.shape.dim[0].dim_value
    if batch < 1:
        raise ValueError('the dynamic ReLU rewrite needs a fixed batch (pin_batch)')
    weights = {t.name: tuple(t.dims) for t in graph.initializer}
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in graph.value_info}
    nodes = list(graph.node)
    producer, consumers = _edges(nodes)

    replaced, inserted, weights_of = set(), {}, {}
    for mx in nodes:
        muls = dynamic_relu_muls(mx, producer)
        if muls is None:
            continue
        m1, m2 = muls
        x = m1.input[0]
        source, after = producer.get(x), consumers.get(mx.output[0], [])
        if source is None or len(consumers[x]) != 2 or len(after) != 1 or after[0].op_type != 'ReorderInput':
            continue
        reorder_in = after[0]
        nxt = consumers.get(reorder_in.output[0], [])
        if len(nxt) != 1 or source.op_type != 'ReorderOutput' or source.domain != NCHWC:
            continue
        channels, blocked = _attr(source, 'channels').i, source.input[0]
        if _in_channels(nxt[0], weights) != channels:  # ORT padded the channels to its block
            continue
        p = f'nchwc_dyrelu{len(inserted)}_'
        new = []

        def const(name: str, values: list[int], prefix: str = p) -> str:
            graph.initializer.append(numpy_helper.from_array(np.asarray(values, dtype=np.int64), prefix + name))
            return prefix + name

        (k1, k2), rank = (m1.input[1], m2.input[1]), 4
        matrices = [_slopes_matrix(k, producer, consumers, ranks) for k in (k1, k2)]
        if all(matrices):  # read the (N, C) slopes; their reshapes to (N, C, 1, 1) go
            (k1, k2), rank = matrices, 2
            replaced.update(id(producer[k]) for k in (m1.input[1], m2.input[1]))
        halves = _halves(k1, k2, channels, producer, consumers, ranks, graph) if rank == 2 and batch == 1 else None
        if halves is not None:  # split (1, S) as (S, 1, 1, 1): the weights, unreshaped
            split, index = halves
            if id(split) not in weights_of:
                q = f'nchwc_slopes{len(weights_of)}_'
                shape = const('shape', [int(_constant(graph, split.input[1]).sum()), 1, 1, 1], prefix=q)
                weights_of[id(split)] = [q + f'w{i}' for i in range(len(split.output))]
                new.append(helper.make_node('Reshape', [split.input[0], shape], [q + 'k'], q + 'k'))
                new.append(helper.make_node('Split', [q + 'k', split.input[1]], weights_of[id(split)], q + 'split',
                                            axis=0))  # the old Split goes once nothing reads it
            k1, w1 = weights_of[id(split)][index:index + 2]
            new.append(helper.make_node('Sub', [k1, w1], [p + 'w0'], p + 'sub'))
        else:
            w1 = p + 'w1'
            new.append(helper.make_node('Sub', [k1, k2], [p + 'kd'], p + 'sub'))
            shape = const('wshape', [batch * channels, 1, 1, 1])
            new += [helper.make_node('Reshape', [k, shape], [p + f'w{i}'], p + f'w{i}')
                    for i, k in enumerate((p + 'kd', k2))]
        conv = dict(domain=NCHWC, kernel_shape=[1, 1], group=batch * channels, strides=[1, 1], pads=[0, 0, 0, 0],
                    dilations=[1, 1])
        out = reorder_in.output[0]
        if batch > 1:  # the batch's channels as one conv's groups: the same blocked buffer
            new.append(helper.make_node('Reshape', [blocked, const('xshape', [1, batch * channels, 0, 0])], [p + 'xg'],
                                        p + 'xg'))
            blocked, out = p + 'xg', p + 'yg'
        new.append(helper.make_node('Conv', [blocked, p + 'w0'], [p + 'u'], p + 'relu', activation='Relu', **conv))
        new.append(helper.make_node('Conv', [blocked, w1, '', p + 'u'], [out], p + 'sum', **conv))
        if batch > 1:
            new.append(helper.make_node('Reshape', [out, const('yshape', [batch, channels, 0, 0])],
                                        [reorder_in.output[0]], p + 'y'))
        replaced.update(id(n) for n in (m1, m2, mx, reorder_in, source))
        inserted[id(reorder_in)] = new

    order = []
    for n in nodes:
        order += inserted.get(id(n), [])
        if id(n) not in replaced:
            order.append(n)
    _set_nodes(graph, order)
    _drop_unused(graph)  # the dropped reshapes' shapes
    return len(inserted)


def _flag(node, name: str) -> bool:
    a = _attr(node, name)
    return a is not None and a.i != 0


def _single_consumer(name: str, consumers: dict) -> bool:
    return len(consumers.get(name, [])) == 1


def fuse_skip_adds(model: 'onnx.ModelProto') -> int:
    """Fold Add(ReorderOutput(Conv(...)), x) into the blocked Conv's `Sum` input where x is also reordered into
    the blocked layout (by a ReorderInput of all its channels) ahead of the conv, in place; returns how many."""
    graph = model.graph
    nodes = list(graph.node)
    position = {id(n): i for i, n in enumerate(nodes)}
    producer, consumers = _edges(nodes)
    channels = {v.name: v.type.tensor_type.shape.dim[1].dim_value for v in graph.value_info
                if len(v.type.tensor_type.shape.dim) == 4}

    fused = set()
    for add in nodes:
        if add.op_type != 'Add' or add.domain or len(add.input) != 2:
            continue
        for out_name, skip in (add.input, add.input[::-1]):
            reorder_out = producer.get(out_name)
            if reorder_out is None or reorder_out.op_type != 'ReorderOutput' or reorder_out.domain != NCHWC:
                continue
            conv = producer.get(reorder_out.input[0])
            reorder_in = [n for n in consumers.get(skip, []) if n.op_type == 'ReorderInput' and n.domain == NCHWC
                          and not _flag(n, 'channels_last')]
            if (conv is None or conv.op_type != 'Conv' or conv.domain != NCHWC or len(conv.input) > 3
                    or _attr(conv, 'activation') is not None or _flag(reorder_out, 'channels_last')
                    or not _single_consumer(conv.output[0], consumers)
                    or not _single_consumer(out_name, consumers) or not reorder_in
                    or position[id(reorder_in[0])] > position[id(conv)]
                    or channels.get(skip) != _attr(reorder_out, 'channels').i):
                continue
            conv.input.extend([''] * (3 - len(conv.input)) + [reorder_in[0].output[0]])
            reorder_out.output[0] = add.output[0]
            fused.add(id(add))
            break
    _set_nodes(graph, [n for n in graph.node if id(n) not in fused])
    return len(fused)


def drop_identity_reshapes(model: 'onnx.ModelProto') -> int:
    """Remove each Reshape(Reshape(a)) whose output has a's static shape (its readers read a), in place; returns
    how many."""
    graph = model.graph
    shapes = {}
    for v in list(graph.value_info) + list(graph.input) + list(graph.output):
        dims = v.type.tensor_type.shape.dim
        if dims and all(d.dim_value > 0 for d in dims):
            shapes[v.name] = [d.dim_value for d in dims]
    outputs = {v.name for v in graph.output}
    producer, _ = _edges(graph.node)
    renamed, dropped = {}, set()
    for node in graph.node:
        first = producer.get(node.input[0]) if node.op_type == 'Reshape' and not node.domain else None
        if (first is None or first.op_type != 'Reshape' or first.domain or node.output[0] in outputs
                or shapes.get(node.output[0]) is None or shapes.get(node.output[0]) != shapes.get(first.input[0])):
            continue
        renamed[node.output[0]] = first.input[0]
        dropped.add(id(node))
    kept = [n for n in graph.node if id(n) not in dropped]
    for n in kept:
        for i, name in enumerate(n.input):
            n.input[i] = renamed.get(name, name)
    _set_nodes(graph, kept)
    return len(dropped)


def _swaps_axes_1_2(transpose) -> bool:
    perm = _attr(transpose, 'perm')
    return perm is not None and list(perm.ints) == [0, 2, 1, 3]


def _heads_view(name: str, producer: dict, shapes: dict) -> Optional[tuple]:
    """(x, heads) if `name` is Transpose([0, 2, 1, 3]) of Reshape(x, (B, L, heads, d)), else None."""
    transpose = producer.get(name)
    if transpose is None or transpose.op_type != 'Transpose' or not _swaps_axes_1_2(transpose):
        return None
    reshape = producer.get(transpose.input[0])
    shape = shapes.get(transpose.input[0])
    if reshape is None or reshape.op_type != 'Reshape' or shape is None or len(shape) != 4:
        return None
    return reshape.input[0], shape[2]


def attention_on_tokens(model: 'onnx.ModelProto') -> int:
    """Give each opset-23 `Attention` over head-split inputs, (B, heads, L, d) = Transpose(Reshape(x)), the
    (B, L, heads d) view of x instead (its `q_num_heads`/`kv_num_heads` form) and let its (B, L, heads d)
    output feed the Reshape that merged the heads: for q, k = v and the output, five Transposes and Reshapes
    fewer, two Reshapes more. In place; returns how many."""
    from onnx import helper, numpy_helper
    graph = model.graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.value_info}
    producer, consumers = _edges(graph.node)
    inserted, removed = {}, set()
    for node in graph.node:
        if node.op_type != 'Attention' or node.domain or len(node.input) != 3 or len(node.output) != 1:
            continue
        views = [_heads_view(name, producer, shapes) for name in node.input]
        after = consumers.get(node.output[0], [])
        merge = consumers.get(after[0].output[0], []) if len(after) == 1 else []
        out_shape = shapes.get(node.output[0])
        if (not all(views) or len({heads for _, heads in views}) != 1 or out_shape is None or len(out_shape) != 4
                or len(merge) != 1
                or after[0].op_type != 'Transpose' or not _swaps_axes_1_2(after[0])
                or merge[0].op_type != 'Reshape' or not _explicit_shape(merge[0], graph)):
            continue
        _, heads, _, dim = out_shape
        lengths = [shapes[name][2] if len(shapes.get(name, ())) == 4 else 0 for name in node.input]
        if min(heads, dim, *lengths) < 1:  # sizes unknown
            continue
        new, names, views_of = [], [], {}
        for i, (x, _) in enumerate(views):
            if node.input[i] not in views_of:  # k and v are often one tensor
                name = f'{node.name}_tokens{i}'
                shape = numpy_helper.from_array(
                    np.asarray([-1, lengths[i], heads * dim], np.int64), name + '_shape')
                graph.initializer.append(shape)
                new.append(helper.make_node('Reshape', [x, shape.name], [name], name))
                views_of[node.input[i]] = name
            names.append(views_of[node.input[i]])
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        out = f'{node.name}_out'
        new.append(helper.make_node('Attention', names, [out], node.name, q_num_heads=heads, kv_num_heads=heads,
                                    **attrs))
        merge[0].input[0] = out
        inserted[id(node)] = new
        removed.add(id(after[0]))
    if inserted:
        order = []
        for n in graph.node:
            if id(n) not in removed:
                order += inserted.get(id(n), [n])
        _set_nodes(graph, order)
        _drop_unused(graph)
    return len(inserted)


def _explicit_shape(reshape, graph) -> bool:
    """Whether the Reshape's target is a constant without 0 (copy a dim of the input) entries."""
    target = _constant(graph, reshape.input[1])
    return target is not None and bool((target != 0).all())


def _drop_unused(graph) -> None:
    """Remove nodes whose outputs nothing reads (repeatedly), then initializers and value infos of names gone."""
    outputs = {v.name for v in graph.output}
    while True:
        read = {name for n in graph.node for name in n.input} | outputs
        kept = [n for n in graph.node if any(out in read for out in n.output)]
        if len(kept) == len(graph.node):
            break
        _set_nodes(graph, kept)
    read = {name for n in graph.node for name in n.input} | outputs
    written = {out for n in graph.node for out in n.output}
    for field, live in ((graph.initializer, read), (graph.value_info, written)):
        kept = [t for t in field if t.name in live]
        del field[:]
        field.extend(kept)
