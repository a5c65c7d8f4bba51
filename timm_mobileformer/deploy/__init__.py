"""Deployment of Mobile-Former: exported files and the runtime forms they are exported from, one module per
runtime. Imports point one way: `export` -> `onnx` -> `ort` -> `ort_graph`, each of them -> `program`;
`onnx` -> `ort_form` -> `layers.folds`; `export` -> `executorch` -> `xnnpack_form` -> `layers.folds`; nothing in
`layers` imports this package.

- `export.py`: `export_to`, the checked and staged export to a file by its suffix (.onnx, .pt2, .pte);
- `program.py`: the inference form, the dynamic shapes, the `torch.export` program, the check tolerance;
- `onnx.py`: ONNX files of the ONNX Runtime form, checked in ONNX Runtime;
- `ort.py`: ONNX Runtime sessions (every one is opened there), optimized models, timing calls, profiles;
- `ort_graph.py`: rewrites of ONNX Runtime's optimized graph;
- `ort_form.py`: the ONNX Runtime runtime form, `OrtMobileFormer`;
- `executorch.py`: ExecuTorch programs for XNNPACK (phones), fp32 and int8, their check, threads and profiles;
- `xnnpack_form.py`: the XNNPACK runtime form, `XnnpackMobileFormer`.
"""
from .executorch import export_executorch
from .export import export_to
from .onnx import export_onnx
from .program import export_program, inference_form

__all__ = ['export_executorch', 'export_onnx', 'export_program', 'export_to', 'inference_form']
