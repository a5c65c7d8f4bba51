"""`timm-mobileformer convert`: an authors' checkpoint in, a Hub-ready folder out.

The folder holds `model.safetensors`, the `config.json` timm's `save_for_hf` writes (so `hf-hub:` and
`local-dir:` load it; less what transformers' timm wrapper passes itself, so transformers loads it too) and a
`README.md` model card. The authors' files are pickles: they are only ever read with
`torch.load(weights_only=True)`. Every bad input ends in a `ConvertError` whose one-line message says
what to do; the command prints it and exits non-zero.
"""
import json
from pathlib import Path
from typing import Any, Callable, Optional, Union

import timm
import torch
from huggingface_hub import HfApi, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from timm.models import save_for_hf

from . import __version__
from .errors import MobileFormerError
from .hub import AUTHORS_CHECKPOINT_URLS, WEIGHTS_FILENAME, WEIGHTS_LICENSE, authors_filename, hub_id
from .info import count_madds, count_params
from .mobileformer import MobileFormer, paper_results
from .outputs import check_output, staged
from .weights import create_from_checkpoint

PathLike = Union[str, Path]
Log = Callable[[str], None]

CITATION = """@inproceedings{chen2022mobileformer,
  title={Mobile-Former: Bridging MobileNet and Transformer},
  author={Chen, Yinpeng and Dai, Xiyang and Chen, Dongdong and Liu, Mengchen and Dong, Xiaoyi and Yuan, Lu and
          Liu, Zicheng},
  booktitle={Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year={2022}
}"""


# What transformers' timm wrapper (TimmWrapperModel, TimmWrapperForImageClassification) passes to
# timm.create_model itself: in config.json's model_args too, it reaches the call twice (a TypeError). timm
# needs none of them there: it takes num_classes from the config's root.
WRAPPER_OWN_ARGS = ('num_classes',)


class ConvertError(MobileFormerError, ValueError):
    """A bad input or a failed step, said in one line that tells the user what to do."""


def _quiet(message: str) -> None:
    """The default progress sink: library calls stay silent, the CLI passes print."""


def load_checkpoint_model(
        path: PathLike,
        model_name: Optional[str] = None,
        use_ema: bool = True,
        log: Log = _quiet,
) -> MobileFormer:
    """Read an authors' (or converted) ImageNet-1k checkpoint and build its model, variant detected unless given."""
    log(f'reading {path} (torch.load weights_only=True)')
    model = create_from_checkpoint(path, model_name, use_ema)
    variant = model.pretrained_cfg['architecture']
    log(f'variant: {variant}')
    if model.num_classes != 1000 or model.in_chans != 3:
        raise ConvertError(
            f'{path}: a {variant} with {model.num_classes} classes and {model.in_chans} input channels: convert '
            f"makes Hub folders of the authors' ImageNet-1k checkpoints only (predict and create_from_checkpoint "
            f'read any checkpoint)')
    return model


def _details(details: dict[str, Any]) -> str:
    """timm's 'Model Details' list: one bullet per item, nested bullets for a dict."""
    lines = []
    for key, value in details.items():
        if isinstance(value, dict):
            lines.append(f'- **{key}:**')
            lines += [f'  - {k}: {v}' for k, v in value.items()]
        else:
            lines.append(f'- **{key}:** {value}')
    return '\n'.join(lines)


def model_card(model: MobileFormer, repo_id: Optional[str] = None) -> str:
    """The README.md of a variant's Hub repo, in timm's model-card layout (metadata header by huggingface_hub)."""
    variant = model.pretrained_cfg['architecture']
    repo_id = repo_id or hub_id(variant)
    params_m, madds_m, top1 = paper_results[variant]
    size = model.pretrained_cfg['input_size'][-1]
    header = ModelCardData(
        tags=['image-classification', 'timm', 'transformers', 'mobileformer'],
        pipeline_tag='image-classification', library_name='timm', license=WEIGHTS_LICENSE, datasets=['imagenet-1k'],
    )
    details = {
        'Model Type': 'Image classification / feature backbone',
        'Model Stats': {
            'Params (M)': f'{count_params(model) / 1e6:.2f} (paper: {params_m})',
            'MAdds (M)': f'{count_madds(model) / 1e6:.1f} (paper: {madds_m})',
            'Image size': f'{size} x {size}',
        },
        'ImageNet-1k top-1 (paper, not re-measured here)': f'{top1}%',
        'Papers': {'Mobile-Former: Bridging MobileNet and Transformer': 'https://arxiv.org/abs/2108.05895'},
        'Original': 'https://github.com/AAboys/MobileFormer',
        'Weights': f"the authors' {authors_filename(variant)} ({AUTHORS_CHECKPOINT_URLS[variant]})",
        'Dataset': 'ImageNet-1k',
        'License': 'none given by the authors (see License below)',
    }
    return f"""---
{header.to_yaml()}
---
# Model card for {repo_id.split('/')[-1]}

A Mobile-Former image classifier: a MobileNet branch on the image and a small Transformer on a few global
tokens run in parallel, joined by two light cross-attention bridges. Trained on ImageNet-1k by the paper's
authors; these are their weights, converted to timm's format (safetensors) by timm-mobileformer {__version__}.

## Model Details
{_details(details)}

## Model Usage
{_usage(model, repo_id)}
## Citation
```bibtex
{CITATION}
```
{_LICENSE_SECTION}"""


def _usage(model: MobileFormer, repo_id: str) -> str:
    """Classification, feature maps and embeddings, with this variant's real shapes."""
    size = model.pretrained_cfg['input_size'][-1]
    feature_shapes = ', '.join(
        f"(1, {f['num_chs']}, {size // f['reduction']}, {size // f['reduction']})" for f in model.feature_info)
    pool = model.pretrained_cfg['pool_size']
    return f"""Install `timm-mobileformer` (it registers the models with timm), then:

### Image Classification
```python
from urllib.request import urlopen
from PIL import Image
import timm
import timm_mobileformer  # noqa: F401  (registers Mobile-Former)
import torch

img = Image.open(urlopen(
    'https://huggingface.co/datasets/huggingface/documentation-images/resolve/main/beignets-task-guide.png'))
model = timm.create_model('hf-hub:{repo_id}', pretrained=True).eval()
config = timm.data.resolve_model_data_config(model)  # resize, crop, interpolation, mean/std of these weights
transform = timm.data.create_transform(**config, is_training=False)
with torch.no_grad():
    probs = model(transform(img).unsqueeze(0)).softmax(dim=-1)
top5_probs, top5_classes = probs.topk(5)
```

### Feature Map Extraction
```python
model = timm.create_model('hf-hub:{repo_id}', pretrained=True, features_only=True).eval()
features = model(transform(img).unsqueeze(0))
# strides 2, 4, 8, 16, 32: {feature_shapes}
```

### Image Embeddings
```python
model = timm.create_model('hf-hub:{repo_id}', pretrained=True, num_classes=0).eval()
embedding = model(transform(img).unsqueeze(0))  # (1, {model.head_hidden_size}) pooled pre-logits
# or unpooled: model.forward_features(x) -> (1, {model.num_features}, {pool[0]}, {pool[1]}),
# then model.forward_head(features, pre_logits=True) -> (1, {model.head_hidden_size})
```

### With Transformers
transformers' timm wrapper loads this repo once timm knows Mobile-Former:
```python
import timm_mobileformer  # noqa: F401  (registers Mobile-Former with timm, which transformers builds on)
from transformers import pipeline
top5 = pipeline('image-classification', model='{repo_id}')(img)  # [{{'label': <ImageNet name>, 'score': ...}}, ...]
```
`AutoModelForImageClassification.from_pretrained('{repo_id}')` gives timm's logits, `AutoModel` its pooled
embedding.
"""


_LICENSE_SECTION = """
## License
The Mobile-Former authors released these weights without a license: their repository
(https://github.com/AAboys/MobileFormer) has no LICENSE file and the Google Drive downloads state no terms.
Without a license all rights stay with the authors, and this copy grants none. The timm-mobileformer code is
Apache-2.0; that license does not cover these weights. The project publishes them only with the authors'
permission (see RELEASING.md in the timm-mobileformer repository).
"""


def verify_folder(model: MobileFormer, folder: Path) -> float:
    """Reload the folder the way users will (`local-dir:`) and compare logits with `model` on a test batch.

    Returns the largest absolute logit difference; a ConvertError if the two disagree or are not finite.
    """
    reloaded = timm.create_model(f'local-dir:{folder}', pretrained=True).eval()
    x = torch.randn(2, *model.pretrained_cfg['input_size'], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, converted = model.eval()(x), reloaded(x)
    if not bool(torch.isfinite(expected).all()):
        raise ConvertError('the checkpoint gives non-finite logits (NaN or inf weights): the file is damaged; '
                           'download it again')
    diff = float((converted - expected).abs().max())
    if diff > 1e-5 * float(expected.abs().max()):
        raise ConvertError(f'the converted weights do not reproduce the checkpoint\'s logits (max difference '
                           f'{diff:.3g}): this is a timm-mobileformer bug, please report it')
    return diff


def write_folder(model: MobileFormer, folder: Path, repo_id: Optional[str] = None) -> None:
    """model.safetensors + config.json (timm's save_for_hf, safetensors only, less WRAPPER_OWN_ARGS) + README.md."""
    # pin the weights file, so `hf-hub:` loads safetensors and never falls back to a pickle
    save_for_hf(model, folder, safe_serialization=True,
                model_config=dict(pretrained_cfg=dict(hf_hub_filename=WEIGHTS_FILENAME)))
    leave_out_wrapper_args(folder / 'config.json')
    (folder / 'README.md').write_text(model_card(model, repo_id), encoding='utf-8')


def leave_out_wrapper_args(config_path: Path) -> None:
    """Drop WRAPPER_OWN_ARGS from a timm config.json's model_args, so timm and transformers both load it."""
    config = json.loads(config_path.read_text(encoding='utf-8'))
    model_args = config.get('model_args', {})
    for key in WRAPPER_OWN_ARGS:
        model_args.pop(key, None)
    if not model_args:
        config.pop('model_args', None)
    config_path.write_text(json.dumps(config, indent=2), encoding='utf-8')


def _make_readable(folder: Path) -> None:
    """mkdtemp's folder is private; the result is meant to be shared (a Hub upload, a common cache)."""
    folder.chmod(0o755)
    for path in folder.iterdir():
        path.chmod(0o644)


def convert(
        checkpoint: PathLike,
        out: PathLike,
        model_name: Optional[str] = None,
        repo_id: Optional[str] = None,
        log: Log = _quiet,
        overwrite: bool = False,
        use_ema: bool = True,
) -> Path:
    """Convert an authors' checkpoint into the Hub-ready folder `out` and return it.

    `out` must not exist or be empty, unless `overwrite`. The folder is written under a staging name next to
    `out`, checked by reloading it, and only then moved to `out`: a failed or interrupted run leaves nothing
    behind. repo_id is the Hub repo the card's usage names.
    """
    out = check_output(out, kind='dir', inputs=[checkpoint], overwrite=overwrite)
    model = load_checkpoint_model(checkpoint, model_name, use_ema, log=log)
    log(f'converted {len(model.state_dict())} tensors to timm names')
    with staged(out, 'dir', overwrite=overwrite) as stage:
        log(f'writing {WEIGHTS_FILENAME}, config.json, README.md')
        write_folder(model, stage, repo_id)
        _make_readable(stage)
        diff = verify_folder(model, stage)
        log(f'checked: reloaded weights give the checkpoint\'s logits on a test batch (max difference {diff:.1e})')
    log(f'wrote {out}')
    return out


def check_repo_id(repo_id: str) -> str:
    """A well-formed Hub repo id, checked before any work is done."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ConvertError(f'{repo_id} is not a Hub repo id: use org/name, e.g. {hub_id("mobileformer_294m")}') from err
    return repo_id


def push_folder(folder: PathLike, repo_id: str, log: Log = _quiet) -> str:
    """Upload a converted folder to the Hub repo `repo_id` (created if needed); return the commit URL.

    The token comes from the usual places (HF_TOKEN, `hf auth login`).
    """
    log(f'uploading {folder} to {repo_id}')
    api = HfApi()
    try:
        api.create_repo(repo_id, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder),
                                   commit_message="Add Mobile-Former weights converted from the authors' checkpoint")
    except OSError as err:  # HTTP, connection, offline and missing-token errors are all OSErrors
        raise ConvertError(f'upload to {repo_id} failed ({type(err).__name__}); the folder {folder} is complete: '
                           f'log in (hf auth login, or set HF_TOKEN) and upload it with: hf upload {repo_id} {folder}'
                           ) from err
    log(f'uploaded: {commit.commit_url}')
    return commit.commit_url
