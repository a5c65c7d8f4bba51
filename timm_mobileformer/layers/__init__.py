"""Fast forms of Mobile-Former's operations: eager CPU kernels, custom autograd, fused inference modules and
runtime (export) forms. The model file states the paper's math in plain PyTorch; everything here is tested
against that plain form."""
