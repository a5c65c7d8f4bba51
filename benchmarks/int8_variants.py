"""int8 ExecuTorch programs of every variant: how long the export takes on this machine, the file size, the ops left
outside XNNPACK (none is accepted), and the program's logits against PyTorch's fp32 on the calibration images.
The weights are timm's initialisation (no trained weights of every variant are published), so the cosine here
says the program runs as built, not what int8 costs in accuracy (benchmarks/int8_fidelity.py measures that).

    python benchmarks/int8_variants.py --out int8-variants.json [--variants 26m 508m] [--jobs 2] [--append]

With --jobs N, N variants are exported at once, each in its own process on one thread (lowering runs in one
thread anyway). --append adds the variants to an existing results file (its `runs` list both commands).
"""
import argparse
import functools
import json
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import timm
import torch
from results_file import add_out_arguments, check_out, run, write_results

import timm_mobileformer  # noqa: F401  (registers the models)
from timm_mobileformer import machine
from timm_mobileformer.demo_data import make_demo_data
from timm_mobileformer.deploy import executorch
from timm_mobileformer.errors import MobileFormerError
from timm_mobileformer.mobileformer import model_cfgs

IMAGES_PER_CLASS = 4  # the calibration images `bench --runtime executorch --quantize int8` draws


def export_int8(name: str, images: Path, folder: Path) -> dict:
    torch.set_num_threads(1)
    executorch.set_threads(1)
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    calibration = executorch.calibration_images(images, model)
    path = folder / f'{name}.pte'
    t0 = time.perf_counter()
    executorch.export_executorch(model, path, quantize='int8', calibration=calibration, check=False)
    seconds = time.perf_counter() - t0
    program = executorch.load_program(path)
    with torch.no_grad():
        ref = torch.cat([model(x) for x in calibration])
    out = torch.cat([program.forward((x,))[0] for x in calibration])
    cosine = torch.nn.functional.cosine_similarity(out, ref)
    return {'export s': round(seconds, 1), 'MB': round(path.stat().st_size / 1e6, 2),
            'ops outside XNNPACK': executorch.ops_outside_delegate(path.read_bytes()),
            'finite': bool(torch.isfinite(out).all()), 'min cosine to fp32': round(float(cosine.min()), 4),
            'mean cosine to fp32': round(float(cosine.mean()), 4)}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--variants', nargs='+', default=[name.split('_')[1] for name in model_cfgs])
    parser.add_argument('--jobs', type=int, default=1)
    add_out_arguments(parser)
    parser.add_argument('--append', action='store_true')
    args = parser.parse_args(argv)
    overwrite = args.overwrite or args.append  # --append rewrites the file it extends
    out = check_out(args.out, overwrite)
    if args.append and not out.is_file():
        raise MobileFormerError(f'--append {out}: no such results file: run without --append first')
    executorch.require_executorch()
    command = {'command': 'python benchmarks/int8_variants.py ' + ' '.join(argv), 'machine': machine.describe(),
               'jobs': args.jobs}
    results = {'runs': [], 'calibration': f'{IMAGES_PER_CLASS} images per class drawn by demo-data, 224 px',
               'variants': {}}
    if args.append:
        results = json.loads(out.read_text())
    results['runs'].append(command)
    with tempfile.TemporaryDirectory() as folder:
        images = make_demo_data(Path(folder) / 'images', train_per_class=IMAGES_PER_CLASS, val_per_class=1)
        names = [f'mobileformer_{variant}' for variant in args.variants]
        export = functools.partial(export_int8, images=images / 'train', folder=Path(folder))
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context('spawn')) as pool:
            for name, result in zip(names, pool.map(export, names)):
                results['variants'][name] = result
                print(name, result, flush=True)
    write_results(out, results, overwrite)


if __name__ == '__main__':
    run(main)
