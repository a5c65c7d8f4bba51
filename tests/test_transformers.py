"""transformers' timm wrapper on a converted folder: the classifier, the backbone and the model card's pipeline
snippet give timm's numbers, with ImageNet class names."""
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from conftest_hub import authors_state_dict, one_torch_thread, save_authors_checkpoint
from PIL import Image
from timm.data import ImageNetInfo, create_transform, resolve_model_data_config

from timm_mobileformer.convert import convert
from timm_mobileformer.hub import hub_id

transformers = pytest.importorskip('transformers')

VARIANT = 'mobileformer_26m'  # the smallest: seeded weights, converted the way users convert the authors' file
imagenet_name = ImageNetInfo('imagenet-1k').index_to_description


@pytest.fixture(scope='module', autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread for the whole module (its models are built in module fixtures)."""
    with one_torch_thread():
        yield


@pytest.fixture(scope='module')
def folder(tmp_path_factory) -> Path:
    """The smallest variant's authors'-format checkpoint, converted."""
    work = tmp_path_factory.mktemp('transformers')
    return convert(save_authors_checkpoint(authors_state_dict(VARIANT), VARIANT, work), work / VARIANT)


@pytest.fixture(scope='module')
def timm_model(folder) -> torch.nn.Module:
    """The converted folder as timm loads it."""
    return timm.create_model(f'local-dir:{folder}', pretrained=True).eval()


def batch() -> torch.Tensor:
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))


def card_transformers_snippet(folder: Path) -> str:
    """The model card's transformers code block."""
    card = (folder / 'README.md').read_text(encoding='utf-8')
    return re.search(r'### With Transformers\n.*?```python\n(.*?)```', card, re.DOTALL).group(1)


def test_classifier_gives_timms_logits_and_imagenet_labels(folder, timm_model):
    model = transformers.AutoModelForImageClassification.from_pretrained(folder).eval()
    x = batch()
    with torch.no_grad():
        logits, expected = model(pixel_values=x).logits, timm_model(x)
    assert type(model).__name__ == 'TimmWrapperForImageClassification'
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-6)
    assert model.config.id2label == {i: imagenet_name(i) for i in range(1000)}


def test_backbone_gives_timms_pooled_embedding(folder):
    model = transformers.AutoModel.from_pretrained(folder).eval()
    embedder = timm.create_model(f'local-dir:{folder}', pretrained=True, num_classes=0).eval()
    x = batch()
    with torch.no_grad():
        pooled, expected = model(pixel_values=x).pooler_output, embedder(x)
    torch.testing.assert_close(pooled, expected, rtol=0, atol=1e-6)


def test_model_card_pipeline_gives_timms_top5_with_imagenet_names(folder, timm_model):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8))
    snippet = card_transformers_snippet(folder).replace(repr(hub_id(VARIANT)), repr(str(folder)))
    namespace: dict[str, object] = {'img': img}
    exec(snippet, namespace)  # the card's own lines, on the local folder instead of the Hub repo
    top5 = namespace['top5']
    transform = create_transform(**resolve_model_data_config(timm_model), is_training=False)
    with torch.no_grad():
        scores, classes = timm_model(transform(img).unsqueeze(0)).softmax(dim=-1)[0].topk(5)
    assert [r['label'] for r in top5] == [imagenet_name(int(i)) for i in classes]
    assert [r['score'] for r in top5] == pytest.approx(scores.tolist(), abs=1e-6)
