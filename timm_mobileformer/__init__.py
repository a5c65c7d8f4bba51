"""Mobile-Former for timm: importing this package registers mobileformer_26m ... mobileformer_508m."""
from .mobileformer import MobileFormer, checkpoint_filter_fn, guess_variant, model_cfgs

__version__ = '0.1.0'
__all__ = ['MobileFormer', 'checkpoint_filter_fn', 'guess_variant', 'model_cfgs', '__version__']
