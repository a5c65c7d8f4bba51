"""What int8 costs in accuracy: top-1 on a validation split of checkpoints trained on the demo task, in PyTorch,
as an fp32 ExecuTorch program and as an int8 one (static, XNNPACK's quantizer, calibrated on the training split),
all at the size the models were trained at. Writes a results file for docs/deploy.md.

    timm-mobileformer demo-data demo
    python train.py --device-modules timm_mobileformer --model mobileformer_52m ...   # and mobilenetv3_small_100
    python benchmarks/int8_fidelity.py --data demo --img-size 64 \
        --checkpoint mobileformer_52m=PATH mobilenetv3_small_100=PATH --out int8-fidelity.json

(docs/deploy.md gives the whole command, train.py's arguments included.)
"""
import argparse
import tempfile
import time
from pathlib import Path

import timm
import torch
from results_file import add_out_arguments, check_out, run, write_results

import timm_mobileformer  # noqa: F401  (registers the models)
from timm_mobileformer import machine
from timm_mobileformer.deploy import executorch

CALIBRATION_IMAGES = 32  # the export command's default (calibration_images' limit)


def top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return round(100. * float((logits.argmax(1) == labels).float().mean()), 2)


def validation_set(folder: Path, model: torch.nn.Module, img_size: int) -> list[tuple[torch.Tensor, int]]:
    """The ImageFolder split at `folder`, read with the model's preprocessing at `img_size`, one image a batch."""
    from timm.data import create_dataset, create_transform, resolve_data_config
    config = resolve_data_config({'input_size': (3, img_size, img_size)}, model=model)
    dataset = create_dataset('', root=str(folder), transform=create_transform(**config))
    return [(image.unsqueeze(0), label) for image, label in dataset]


def measure(name: str, checkpoint: Path, data: Path, img_size: int, folder: Path) -> dict:
    """Top-1 of the checkpoint in PyTorch and as fp32 and int8 programs, and how close each program's logits are to
    PyTorch's (the int8 program is measured as lowered, also where the export's own agreement check would refuse it;
    that check's figure is reported beside it)."""
    model = timm.create_model(name, num_classes=len(list((data / 'train').iterdir())),
                              checkpoint_path=str(checkpoint)).eval()
    images = validation_set(data / 'validation', model, img_size)
    result = {'checkpoint': str(checkpoint), 'validation images': len(images)}
    with torch.no_grad():
        reference = torch.cat([model(x) for x, _ in images])
    labels = torch.tensor([label for _, label in images])
    result['pytorch fp32 top-1'] = top1(reference, labels)
    calibration = executorch.calibration_images(data / 'train', model, 1, img_size, CALIBRATION_IMAGES)
    for quantize in (None, 'int8'):
        kind = quantize or 'fp32'
        path = folder / f'{name}-{kind}.pte'
        t0 = time.perf_counter()
        executorch.export_executorch(model, path, img_size, 1, quantize, calibration if quantize else None,
                                     check=False)
        program = executorch.load_program(path)
        logits = torch.cat([program.forward((x,))[0] for x, _ in images])
        cosine = torch.nn.functional.cosine_similarity(logits, reference)
        result[kind] = {
            'top-1': top1(logits, labels), 'min cosine to pytorch': round(float(cosine.min()), 4),
            'mean cosine to pytorch': round(float(cosine.mean()), 4),
            'export s': round(time.perf_counter() - t0, 1), 'MB': round(path.stat().st_size / 1e6, 2)}
        if quantize:  # what the export's own check compares: the first calibration images
            checked = calibration[:executorch.CHECK_IMAGES]
            with torch.no_grad():
                cosine = torch.nn.functional.cosine_similarity(
                    torch.cat([program.forward((x,))[0] for x in checked]), torch.cat([model(x) for x in checked]))
            result[kind]['export check: min cosine'] = round(float(cosine.min()), 4)
            result[kind]['export check passes'] = bool(cosine.min() >= executorch.MIN_COSINE)
        print(f'{name}: {kind} {result[kind]}', flush=True)
    return result


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data', type=Path, required=True, help='the demo set (train/ and validation/)')
    parser.add_argument('--checkpoint', nargs='+', required=True, metavar='MODEL=PATH')
    parser.add_argument('--img-size', type=int, default=64)
    add_out_arguments(parser)
    args = parser.parse_args(argv)
    overwrite = args.overwrite
    out = check_out(args.out, overwrite)
    executorch.require_executorch()
    results = {'machine': machine.describe(), 'command': 'python benchmarks/int8_fidelity.py ' + ' '.join(argv),
               'calibration images': CALIBRATION_IMAGES, 'img_size': args.img_size, 'models': {}}
    with tempfile.TemporaryDirectory() as folder:
        for spec in args.checkpoint:
            name, _, path = spec.partition('=')
            results['models'][name] = measure(name, Path(path), args.data, args.img_size, Path(folder))
    write_results(out, results, overwrite)


if __name__ == '__main__':
    run(main)
