"""Models for the deploy and export tests: random weights with BatchNorm statistics, gates, slopes and tokens
moved off their initial values, so that every fold is exercised."""
import timm
import torch


def randomized_model(variant: str) -> torch.nn.Module:
    """An eval `variant` (e.g. 'mobileformer_26m'), seeded: the same weights on every call."""
    torch.manual_seed(0)
    model = timm.create_model(variant).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2.)
                module.weight.normal_(1., 0.2)
                module.bias.normal_(0., 0.1)
        for name, param in model.named_parameters():
            if name.endswith('fc2.bias') or '.gate.' in name or name == 'tokens':
                param.add_(torch.randn_like(param) * 0.5)
    return model


def rel(out, ref) -> float:
    """max |out - ref| / max |ref|."""
    return float((out - ref).abs().max() / ref.abs().max())
