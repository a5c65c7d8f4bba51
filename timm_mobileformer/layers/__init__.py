"""Fast forms of Mobile-Former's operations: eager CPU kernels, custom autograd, fused inference modules and the
weight folds they share with the runtime forms of `deploy/`. The model file states the paper's math in plain
PyTorch; everything here is tested against that plain form."""
