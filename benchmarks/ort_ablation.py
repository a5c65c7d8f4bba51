"""What each part of the ONNX Runtime form (deploy/ort_form.py) costs: parts replaced by an identity, exported again.

    python benchmarks/ort_ablation.py --model 294m --peer mobilenetv3_large_100 --rounds 12

Every file is exported like `bench --runtime onnxruntime` exports (size fixed), optimized by ORT with each batch
size fixed (`ort.optimize_for_batch`: for Mobile-Former the dynamic ReLUs go into ORT's blocked layout), and run
in its own session (deploy/ort.py's options), timed by `timm-mobileformer bench`'s own alternating rounds
(`bench.run_cell`, rounds of about 0.3 s); the median round is reported. The removed parts change the output,
so only the speeds mean anything. Used for the table "Which parts cost what" in docs/deploy.md.
"""
import argparse
import contextlib
import statistics
import tempfile
from pathlib import Path
from unittest import mock

import timm

import timm_mobileformer  # noqa: F401  (registers the models)
from timm_mobileformer.bench import run_cell
from timm_mobileformer.deploy import ort_form
from timm_mobileformer.deploy.onnx import export_for_bench, export_onnx
from timm_mobileformer.deploy.ort import make_call, make_session, optimize_for_batch


def tokens_unread(self, x, tokens):
    """Mobile→Former replaced: the tokens go on as they came, batch-sized (B M, d), or (B, d) for the head."""
    if self.first_only:
        tokens = tokens.reshape(-1, self.num_tokens, tokens.shape[-1])[:, 0]
    elif tokens.dim() == 3:  # the learned (1, M, d)
        tokens = tokens.expand(x.shape[0], -1, -1).reshape(-1, tokens.shape[-1])
    return tokens + x.mean() * 0


ABLATIONS = {
    'as shipped': {},
    'without the dynamic ReLUs': {'dynamic_relu': lambda x, k: x},
    'without Former→Mobile': {'OrtFormerToMobile.forward': lambda self, x, tokens: x},
    'without Mobile→Former and the Former': {'OrtMobileToFormer.forward': tokens_unread,
                                             'OrtFormer.forward': lambda self, t: t},
}
ABLATIONS['convs and head only'] = {k: v for a in list(ABLATIONS.values())[1:] for k, v in a.items()}


def export_ablated(model, path: Path, patches: dict) -> Path:
    with contextlib.ExitStack() as stack:
        for name, value in patches.items():
            owner, _, attr = name.rpartition('.')
            stack.enter_context(mock.patch.object(getattr(ort_form, owner) if owner else ort_form, attr, value))
        export_onnx(model, path, fixed_size=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', default='294m')
    parser.add_argument('--peer', default='mobilenetv3_large_100')
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[1, 16])
    parser.add_argument('--rounds', type=int, default=12)
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args()
    model = timm.create_model(f'mobileformer_{args.model}').eval()
    with tempfile.TemporaryDirectory() as tmp:
        paths = {args.peer: export_for_bench(args.peer, Path(tmp))}
        for i, (name, patches) in enumerate(ABLATIONS.items()):
            paths[name] = export_ablated(model, Path(tmp) / f'{i}.onnx', patches)
        for batch_size in args.batch_sizes:
            sessions = {name: make_session(optimize_for_batch(path, batch_size)[0], args.threads)
                        for name, path in paths.items()}
            calls = {name: make_call(session, batch_size, 224) for name, session in sessions.items()}
            cell = run_cell(list(sessions), 'onnxruntime', batch_size, args.rounds, 0.3, lambda m: None, calls.get)
            for name, speeds in cell.rounds.items():
                print(f'batch {batch_size:3d}  {name:40s} {1e3 / statistics.median(speeds):7.2f} ms per image')

if __name__ == '__main__':
    main()
