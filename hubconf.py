"""torch.hub entrypoints for Mobile-Former.

    model = torch.hub.load('<path to this checkout>', 'mobileformer_294m', source='local', num_classes=10)

Every entrypoint takes timm's create_model keyword arguments (pretrained, num_classes, in_chans, drop_rate,
drop_path_rate, features_only, ...). Loading this file also registers the models with timm.
pretrained=True loads the ImageNet-1k weights from the Hugging Face Hub exactly as timm.create_model does
(see RELEASING.md for their status).
"""
dependencies = ['torch', 'timm', 'huggingface_hub', 'safetensors']


from timm_mobileformer.mobileformer import (  # noqa: E402
    mobileformer_26m,
    mobileformer_52m,
    mobileformer_96m,
    mobileformer_151m,
    mobileformer_214m,
    mobileformer_294m,
    mobileformer_508m,
)

__all__ = [
    'mobileformer_26m', 'mobileformer_52m', 'mobileformer_96m', 'mobileformer_151m', 'mobileformer_214m',
    'mobileformer_294m', 'mobileformer_508m',
]
