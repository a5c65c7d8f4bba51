"""Mobile-Former for timm: importing this package registers mobileformer_26m ... mobileformer_508m."""
from .errors import CheckpointError, MobileFormerError
from .mobileformer import MobileFormer, checkpoint_filter_fn, detect_variant, model_cfgs
from .weights import create_from_checkpoint, load_checkpoint, read_state_dict, resolve_model_name

__version__ = '0.1.0'
__all__ = [
    'MobileFormer', 'checkpoint_filter_fn', 'detect_variant', 'model_cfgs', 'create_from_checkpoint',
    'load_checkpoint', 'read_state_dict', 'resolve_model_name', 'MobileFormerError', 'CheckpointError',
    '__version__',
]
