"""Which parts of Mobile-Former to keep in float in int8: the quantized model in PyTorch (the int8 arithmetic the
program is lowered from, `quantized_form`) with everything int8, with the LayerNorms in float (what programs are
made with), with the dynamic ReLUs in float, and with the token side (Mobile->Former, Former, Former->Mobile) in
float; top-1 and agreement with fp32 on a validation split.

    python benchmarks/int8_float_parts.py --data demo --img-size 64 --model mobileformer_52m \
        --checkpoint runs/mobileformer_52m/last.pth.tar --out int8-float-parts.json
"""
import argparse
from pathlib import Path

import timm
import torch
from int8_fidelity import CALIBRATION_IMAGES, top1, validation_set
from results_file import add_out_arguments, check_out, run, write_results

import timm_mobileformer  # noqa: F401  (registers the models)
from timm_mobileformer import machine
from timm_mobileformer.deploy import executorch
from timm_mobileformer.deploy import xnnpack_form as form_classes

FLOAT_PARTS = {
    'none (everything int8)': (),
    'LayerNorms (programs)': form_classes.FLOAT_IN_INT8,
    'dynamic ReLUs': (form_classes.XnnpackDynamicReLU,),
    'token side': (form_classes.XnnpackMobileToFormer, form_classes.XnnpackFormer, form_classes.XnnpackFormerToMobile),
}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data', type=Path, required=True)
    parser.add_argument('--model', default='mobileformer_52m')
    parser.add_argument('--checkpoint', type=Path, required=True)
    parser.add_argument('--img-size', type=int, default=64)
    add_out_arguments(parser)
    args = parser.parse_args(argv)
    overwrite = args.overwrite
    out = check_out(args.out, overwrite)
    model = timm.create_model(args.model, num_classes=len(list((args.data / 'train').iterdir())),
                              checkpoint_path=str(args.checkpoint)).eval()
    images = validation_set(args.data / 'validation', model, args.img_size)
    calibration = executorch.calibration_images(args.data / 'train', model, 1, args.img_size, CALIBRATION_IMAGES)
    labels = torch.tensor([label for _, label in images])
    with torch.no_grad():
        reference = torch.cat([model(x) for x, _ in images])
    results = {'machine': machine.describe(), 'command': 'python benchmarks/int8_float_parts.py ' + ' '.join(argv),
               'validation images': len(images), 'fp32 top-1': top1(reference, labels), 'in float': {}}
    form = executorch.runtime_form(model)
    for parts, types in FLOAT_PARTS.items():
        quantized = executorch.quantized_form(form, calibration[0], calibration, types)
        with torch.no_grad():
            logits = torch.cat([quantized(x) for x, _ in images])
        cosine = torch.nn.functional.cosine_similarity(logits, reference)
        results['in float'][parts] = {'top-1': top1(logits, labels),
                                      'min cosine to fp32': round(float(cosine.min()), 4),
                                      'mean cosine to fp32': round(float(cosine.mean()), 4)}
        print(parts, results['in float'][parts], flush=True)
    write_results(out, results, overwrite)


if __name__ == '__main__':
    run(main)
