"""`timm-mobileformer bench`: throughput of Mobile-Former variants next to timm peers, in one process.

Each (mode, batch size) cell builds every model in that mode and times them in rounds, rotating their
order each round, so that the drift of a shared machine falls on all of them alike. A round times each
model for a few calls and keeps the median call; a model's img/s is the median over rounds, and its ratio
to a peer is the median of the per-round ratios (their min..max is printed as the spread). The ratio per
MAdd weighs throughput by work: (img/s x MAdds of the model) / (img/s x MAdds of the peer).

Modes: `eager` (NCHW, eval), `channels_last`, `compile` (torch.compile, inductor), `fused` (the inference
form: `model.fuse()` for Mobile-Former, timm's `reparameterize_model` for the peers) and `train` (one SGD
step: forward, cross-entropy, backward, update; batch sizes of at least 2, BatchNorm needs them).

`runtime='onnxruntime'` times ONNX Runtime sessions instead (one cell per batch size, mode `onnxruntime`):
every model is exported first (Mobile-Former through `export_onnx`, the peers through the same exporter, image
size fixed), then optimized by ORT with the cell's batch fixed (`deploy.ort.save_optimized`: the deployment
form); all sessions get the same options (see `deploy/ort.py`); `profile=True` also prints ORT's kernel time by op type.

Each runtime is a `Runtime` adapter, listed in `RUNTIME_ADAPTERS`; `benchmark` checks the request, measures
MAdds, lets the runtime prepare, times its cells and writes the report the same way for all of them.
"""
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, ClassVar, Optional

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.utils import reparameterize_model

from .deploy import executorch, ort
from .deploy import onnx as onnx_export
from .deploy.export import missing_onnx_packages
from .errors import MobileFormerError, one_line
from .info import count_madds
from .machine import describe, summary_line
from .mobileformer import model_cfgs, paper_results
from .outputs import check_output, staged

MODES = ('eager', 'channels_last', 'compile', 'fused', 'train')
DEFAULT_MODES = ('eager', 'channels_last', 'fused', 'train')
DEFAULT_PEERS = ('mobilenetv3_large_100', 'efficientnet_b0')
# ImageNet-1k top-1 (%) in each peer's paper (MobileNetV3 arXiv:1905.02244, EfficientNet arXiv:1905.11946)
PEER_PAPER_TOP1 = {'mobilenetv3_large_100': 75.2, 'efficientnet_b0': 77.1}

Log = Callable[[str], None]


@dataclass
class Cell:
    """The measurements of one (mode, batch size): per model, img/s of each round."""
    mode: str
    batch_size: int
    calls_per_round: dict[str, int] = field(default_factory=dict)
    rounds: dict[str, list[float]] = field(default_factory=dict)

    def ips(self, name: str) -> float:
        return statistics.median(self.rounds[name])

    def ratio(self, name: str, peer: str) -> tuple[float, float, float]:
        """Median, min and max over rounds of img/s of `name` over img/s of `peer` in the same round."""
        pairs = [a / b for a, b in zip(self.rounds[name], self.rounds[peer])]
        return statistics.median(pairs), min(pairs), max(pairs)


def build(name: str, mode: str) -> nn.Module:
    """A fresh model (random init; speed does not depend on the weights) in the form that `mode` times."""
    model = timm.create_model(name)
    if mode == 'train':
        return model.train()
    model.eval()
    if mode == 'channels_last':
        return model.to(memory_format=torch.channels_last)
    if mode == 'compile':
        return torch.compile(model)
    if mode == 'fused':
        return model.fuse() if name in model_cfgs else reparameterize_model(model, inplace=True)
    return model


def make_call(model: nn.Module, mode: str, batch_size: int, img_size: int) -> Callable[[], None]:
    """What one timed call runs: a forward pass, or for `train` a whole SGD step."""
    x = torch.randn(batch_size, 3, img_size, img_size)
    if mode == 'channels_last':
        x = x.contiguous(memory_format=torch.channels_last)
    if mode != 'train':
        return lambda: model(x)
    target = torch.randint(0, 1000, (batch_size,))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), target).backward()
        optimizer.step()
    return step


def time_calls(call: Callable[[], None], n: int) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def run_cell(
        names: Sequence[str],
        mode: str,
        batch_size: int,
        rounds: int,
        round_time: float,
        log: Log,
        call_for: Callable[[str], Callable[[], None]],
) -> Cell:
    """Make every model's call (`call_for(name)`), warm it up, then time all of them alternately for `rounds`
    rounds."""
    cell = Cell(mode, batch_size)
    grad = torch.enable_grad() if mode == 'train' else torch.inference_mode()
    with grad:
        calls = {}
        for name in names:
            t0 = time.perf_counter()
            call = call_for(name)
            call()  # compiles under `compile`
            warm = min(time_calls(call, 2))
            calls[name] = call
            cell.calls_per_round[name] = max(3, math.ceil(round_time / warm))
            cell.rounds[name] = []
            log(f'  {name}: ready in {time.perf_counter() - t0:.1f} s, {batch_size / warm:.1f} img/s warm')
        for r in range(rounds):
            order = list(names[r % len(names):]) + list(names[:r % len(names)])
            for name in order:
                t = statistics.median(time_calls(calls[name], cell.calls_per_round[name]))
                cell.rounds[name].append(batch_size / t)
            log(f'  round {r + 1}/{rounds}: ' + '  '.join(f'{n} {cell.rounds[n][-1]:.1f}' for n in names))
    return cell


class ForeignLoad:
    """CPU time that other processes used while we ran, as a share of the machine (Linux /proc/stat)."""

    def __init__(self) -> None:
        self.start = self._sample()

    @staticmethod
    def _sample() -> Optional[tuple[float, float, float]]:
        try:
            with open('/proc/stat') as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except OSError:
            return None
        hz = os.sysconf('SC_CLK_TCK')
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / hz  # all but idle and iowait
        own = sum(os.times()[:4])
        return busy, own, time.monotonic()

    def share(self) -> Optional[float]:
        end = self._sample()
        if self.start is None or end is None:
            return None
        busy, own, wall = (e - s for e, s in zip(end, self.start))
        return max(0., busy - own) / (wall * (os.cpu_count() or 1))


def load_average() -> Optional[tuple[float, float, float]]:
    return os.getloadavg() if hasattr(os, 'getloadavg') else None


def machine() -> dict[str, object]:
    """bench.json's machine record: `machine.describe()` (CPU, vector extensions, native bf16, versions and the
    package's commit), torch's thread count and the load average at the start."""
    return dict(describe(), torch_threads=torch.get_num_threads(), loadavg_start=load_average())


def machine_line(env: dict[str, object]) -> str:
    return (f"{summary_line(env)}; {env['torch_threads']} torch threads, torch {env['torch']}, timm {env['timm']}; "
            f"load average {env['loadavg_start']}")


def summarize(cells: list[Cell], variants: Sequence[str], peers: Sequence[str], madds: dict[str, int]) -> list[dict]:
    """One row per (mode, batch size, model): img/s and, for Mobile-Former, ratios to every peer."""
    rows = []
    for cell in cells:
        for name in list(variants) + list(peers):
            row = dict(mode=cell.mode, batch_size=cell.batch_size, model=name, img_s=cell.ips(name),
                       madds=madds[name])
            if name in variants:
                for peer in peers:
                    ratio, lo, hi = cell.ratio(name, peer)
                    row[f'ratio_{peer}'] = ratio
                    row[f'spread_{peer}'] = (lo, hi)
                    row[f'per_madd_{peer}'] = ratio * madds[name] / madds[peer]
            rows.append(row)
    return rows


def format_table(rows: list[dict], peers: Sequence[str]) -> str:
    header = ['mode', 'batch', 'model', 'img/s'] + [h for p in peers for h in (f'x {p}', f'per MAdd vs {p}')]
    lines = [header]
    for r in rows:
        line = [r['mode'], str(r['batch_size']), r['model'], f"{r['img_s']:.1f}"]
        for p in peers:
            if f'ratio_{p}' in r:
                lo, hi = r[f'spread_{p}']
                line += [f"{r[f'ratio_{p}']:.2f} ({lo:.2f}-{hi:.2f})", f"{r[f'per_madd_{p}']:.2f}"]
            else:
                line += ['', '']
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ['  '.join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    out.insert(1, '  '.join('-' * w for w in widths))
    return '\n'.join(out)


def top1(name: str) -> Optional[float]:
    if name in paper_results:
        return paper_results[name][2]
    return PEER_PAPER_TOP1.get(name)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering [lo, hi], about n of them."""
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    step *= next(m for m in (1, 2, 5, 10) if (hi - lo) / (step * m) <= n)
    return [i * step for i in range(math.ceil(lo / step), math.floor(hi / step) + 1)]


LABEL_GAP = 7  # pixels between a point and its label, which starts to its right


def chart_label(name: str) -> str:
    return name.replace('mobileformer_', 'MF-') if name in model_cfgs else name


def x_axis_end(points: Sequence[tuple[float, float]], x0: float, x1: float, limit: float) -> float:
    """The img/s at the right end of a panel's axis (pixels x0..x1): 15% past the fastest model, and far enough
    that every label (`points`: img/s and label width in pixels) ends by the pixel `limit`. A label wider than
    three quarters of the axis gets no more room than that."""
    plot = x1 - x0
    end = max(ips for ips, _ in points) * 1.15
    for ips, width in points:
        room = max(limit - x0 - LABEL_GAP - width, plot / 4)
        end = max(end, plot * ips / room)
    return end


def draw_chart(rows: list[dict], top1: Callable[[str], Optional[float]], env: dict[str, object], path: Path) -> None:
    """Paper top-1 against img/s, one panel per batch size, in the manner of the paper's speed figures:
    Mobile-Former variants joined by a line, peers as squares; every label whole, inside its panel."""
    from PIL import Image, ImageDraw, ImageFont

    sizes = sorted({r['batch_size'] for r in rows})
    pw, ph, left, right, top, bottom = 560, 430, 64, 24, 44, 56
    image = Image.new('RGB', (pw * len(sizes), ph + 28), 'white')
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=13)
    accs = [top1(r['model']) for r in rows]
    y_lo, y_hi = math.floor(min(accs)) - 1, math.ceil(max(accs)) + 1
    for i, bs in enumerate(sizes):
        panel = [r for r in rows if r['batch_size'] == bs]
        x0, x1, y0, y1 = i * pw + left, (i + 1) * pw - right, top, ph - bottom
        widths = [(r['img_s'], draw.textlength(chart_label(r['model']), font=font)) for r in panel]
        x_hi = x_axis_end(widths, x0, x1, (i + 1) * pw - 4)

        def at(ips: float, acc: float, x0=x0, x1=x1, y0=y0, y1=y1, x_hi=x_hi) -> tuple[float, float]:
            return x0 + (x1 - x0) * ips / x_hi, y1 - (y1 - y0) * (acc - y_lo) / (y_hi - y_lo)

        draw.rectangle((x0, y0, x1, y1), outline='black')
        for t in _ticks(0, x_hi):
            x, _ = at(t, y_lo)
            draw.line((x, y1, x, y1 + 4), fill='black')
            draw.text((x, y1 + 6), f'{t:g}', fill='black', font=font, anchor='mt')
        for t in _ticks(y_lo, y_hi):
            _, y = at(0, t)
            draw.line((x0 - 4, y, x0, y), fill='black')
            draw.line((x0, y, x1, y), fill=(225, 225, 225))
            draw.text((x0 - 6, y), f'{t:g}', fill='black', font=font, anchor='rm')
        draw.text(((x0 + x1) / 2, y1 + 24), f'img/s, batch {bs} ({panel[0]["mode"]}, fp32)', fill='black',
                  font=font, anchor='mt')
        draw.text((x0, y0 - 8), 'ImageNet top-1 (%, paper)', fill='black', font=font, anchor='ls')
        ours = sorted((r for r in panel if r['model'] in model_cfgs), key=lambda r: r['img_s'])
        if len(ours) > 1:
            draw.line([at(r['img_s'], top1(r['model'])) for r in ours], fill=(200, 40, 40), width=2)
        for r in panel:
            x, y = at(r['img_s'], top1(r['model']))
            mine = r['model'] in model_cfgs
            box = (x - 4, y - 4, x + 4, y + 4)
            (draw.ellipse if mine else draw.rectangle)(box, fill=(200, 40, 40) if mine else (40, 90, 200))
            draw.text((x + LABEL_GAP, y), chart_label(r['model']), fill='black', font=font, anchor='lm')
    note = f"{env['cpu']}, {env['torch_threads']} threads, torch {env['torch']}"
    draw.text((8, ph + 8), note, fill=(90, 90, 90), font=font)
    image.save(path)


@dataclass(frozen=True)
class BenchRequest:
    """What `benchmark` was asked to time; `options` holds what only some runtime reads (its adapter checks it)."""
    variants: tuple[str, ...]
    peers: tuple[str, ...] = DEFAULT_PEERS
    batch_sizes: tuple[int, ...] = (1, 32)
    modes: tuple[str, ...] = DEFAULT_MODES
    rounds: int = 5
    round_time: float = 1.0
    img_size: int = 224
    chart_mode: str = 'fused'
    threads: Optional[int] = None
    profile: bool = False
    options: Mapping[str, object] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """Every model timed: the variants, then the peers that are not variants."""
        return list(self.variants) + [p for p in self.peers if p not in self.variants]


class Runtime:
    """One runtime's part of a bench run. `benchmark` drives every runtime the same way:

    1. `check()` refuses, before any work, what this runtime can't do (MobileFormerError);
    2. `cells()` lists the (mode, batch size) cells to time, in order; `chart_mode()` is the mode bench.png plots;
    3. `prepared(log)` is a context for the work done once before timing (exports, lowering, sessions,
       profiles into `self.profiles`), cleaned up after the last cell;
    4. `make_call(name, mode, batch_size)`, when a cell starts, gives one timed call of one model;
    5. `environment()` adds to the report's machine record (the runtime's version and threads).
    """
    name: ClassVar[str]
    supports_profile: ClassVar[bool] = False
    option_names: ClassVar[tuple[str, ...]] = ()  # the keys of `request.options` this runtime reads

    def __init__(self, request: BenchRequest) -> None:
        self.request = request
        self.profiles: dict[str, object] = {}  # per model and batch size, for bench.json

    def check(self) -> None:
        if self.request.profile and not self.supports_profile:
            profiling = [name for name, runtime in RUNTIME_ADAPTERS.items() if runtime.supports_profile]
            raise MobileFormerError(f'--profile needs --runtime {" or ".join(profiling)}')
        unknown = sorted(set(self.request.options) - set(self.option_names))
        if unknown:
            raise MobileFormerError(f'{", ".join(unknown)}: not an option of --runtime {self.name}')

    def cells(self) -> list[tuple[str, int]]:
        return [(self.name, b) for b in self.request.batch_sizes]

    def chart_mode(self) -> str:
        return self.name

    @contextmanager
    def prepared(self, log: Log) -> Iterator[None]:
        yield

    def make_call(self, name: str, mode: str, batch_size: int) -> Callable[[], None]:
        raise NotImplementedError

    def environment(self) -> dict[str, object]:
        return {}


class TorchRuntime(Runtime):
    """PyTorch, in every mode of `request.modes`; each cell builds its models afresh, so that only one cell's
    models are in memory at a time."""
    name = 'torch'

    def check(self) -> None:
        super().check()
        unknown = [m for m in list(self.request.modes) + [self.request.chart_mode] if m not in MODES]
        if unknown:
            raise MobileFormerError(f'unknown mode {", ".join(unknown)}: choose from {", ".join(MODES)}')
        if not self.cells():
            raise MobileFormerError('nothing to time: train needs a batch size of at least 2')

    def cells(self) -> list[tuple[str, int]]:
        return [(m, b) for m in self.request.modes for b in self.request.batch_sizes if not (m == 'train' and b < 2)]

    def chart_mode(self) -> str:
        return self.request.chart_mode

    def make_call(self, name: str, mode: str, batch_size: int) -> Callable[[], None]:
        return make_call(build(name, mode), mode, batch_size, self.request.img_size)


class OnnxRuntime(Runtime):
    """ONNX Runtime (`deploy/ort.py`): every model exported once, then per batch size ORT's optimized model with that
    batch fixed in its own session, `request.threads` intra-op threads; one cell per batch size."""
    name = 'onnxruntime'
    supports_profile = True

    def __init__(self, request: BenchRequest) -> None:
        super().__init__(request)
        self.sessions: dict[tuple[str, int], object] = {}

    def check(self) -> None:
        super().check()
        missing = missing_onnx_packages()
        if missing:
            raise MobileFormerError(f'--runtime onnxruntime needs {", ".join(missing)}: '
                                    f'pip install "timm-mobileformer[onnx]"')

    @contextmanager
    def prepared(self, log: Log) -> Iterator[None]:
        with tempfile.TemporaryDirectory(prefix='mf-bench-') as folder:
            files = {}
            for name in self.request.names:
                t0 = time.perf_counter()
                files[name] = onnx_export.export_for_bench(name, Path(folder), self.request.img_size)
                log(f'  exported {name} in {time.perf_counter() - t0:.0f} s')
            for batch_size in self.request.batch_sizes:
                for name in self.request.names:
                    self.sessions[name, batch_size] = self._session(name, files[name], batch_size, log)
            yield

    def _session(self, name: str, path: Path, batch_size: int, log: Log) -> object:
        """The session of ORT's optimized model with `batch_size` fixed; its op profile with `request.profile`."""
        threads, img_size = self.request.threads, self.request.img_size
        optimized, rewritten = ort.optimize_for_batch(path, batch_size)
        session = ort.make_session(optimized, threads)
        if rewritten:
            log(f'  {name}, batch {batch_size}: {rewritten} dynamic ReLUs in the blocked layout')
        if self.request.profile:
            rows, n_nodes = ort.profile_ops(optimized, batch_size, img_size, threads)
            self.profiles[f'{name} batch {batch_size}'] = dict(nodes=n_nodes, ops=rows)
            log(ort.format_profile(f'{name}, batch {batch_size}', rows, n_nodes))
        return session

    def make_call(self, name: str, mode: str, batch_size: int) -> Callable[[], None]:
        return ort.make_call(self.sessions[name, batch_size], batch_size, self.request.img_size)

    def environment(self) -> dict[str, object]:
        import onnxruntime
        return dict(onnxruntime=onnxruntime.__version__, ort_threads=self.request.threads or os.cpu_count())


class ExecutorchRuntime(Runtime):
    """ExecuTorch with XNNPACK (`deploy/executorch.py`): per batch size every model lowered to a program (Mobile-Former
    through the package's export, the peers through the stock path), fp32 or int8 (`options['quantize']`), every
    model calibrated on the same images (`options['calibration']`, default: images that demo-data draws), XNNPACK's
    thread pool at `request.threads`; one cell per batch size."""
    name = 'executorch'
    supports_profile = True
    option_names = ('quantize', 'calibration')
    calibration_images_per_class = 4

    def __init__(self, request: BenchRequest) -> None:
        super().__init__(request)
        self.modules: dict[tuple[str, int], object] = {}

    @property
    def quantize(self) -> Optional[str]:
        return self.request.options.get('quantize')

    def check(self) -> None:
        super().check()
        executorch.require_executorch()
        if self.quantize not in (None,) + executorch.QUANTIZE:
            raise MobileFormerError(f'--quantize {self.quantize}: choose from {", ".join(executorch.QUANTIZE)}')
        folder = self.request.options.get('calibration')
        if folder is not None and not self.quantize:
            raise MobileFormerError('--calibration goes with --quantize int8')
        if folder is not None and not executorch.image_files(Path(folder)):
            raise MobileFormerError(f'--calibration {folder}: holds no images: give a folder of images (JPEG, PNG, '
                                    f'...), e.g. one made by timm-mobileformer demo-data')

    def cells(self) -> list[tuple[str, int]]:
        return [(self.name + (f' {self.quantize}' if self.quantize else ''), b) for b in self.request.batch_sizes]

    @contextmanager
    def prepared(self, log: Log) -> Iterator[None]:
        from .demo_data import make_demo_data
        with tempfile.TemporaryDirectory(prefix='mf-bench-') as folder:
            images = self.request.options.get('calibration')
            if self.quantize and images is None:
                images = Path(folder) / 'calibration'
                make_demo_data(images, train_per_class=self.calibration_images_per_class, val_per_class=1)
            executorch.set_threads(self.request.threads)
            for batch_size in self.request.batch_sizes:
                for name in self.request.names:
                    self.modules[name, batch_size] = self._program(name, batch_size, Path(folder), images, log)
            yield

    def _program(self, name: str, batch_size: int, folder: Path, images: Optional[Path], log: Log) -> object:
        """The loaded program of `name` at `batch_size` (random weights: speed does not depend on them); its op
        profile with `request.profile`."""
        t0 = time.perf_counter()
        model = timm.create_model(name).eval()
        path = folder / f'{name}_b{batch_size}.pte'
        calibration = (executorch.calibration_images(images, model, batch_size, self.request.img_size)
                       if self.quantize else None)
        # random weights: the int8 agreement check means nothing there (every program is still fully delegated)
        executorch.export_executorch(model, path, self.request.img_size, batch_size, self.quantize, calibration,
                                     check=not self.quantize)
        log(f'  lowered {name}, batch {batch_size}, in {time.perf_counter() - t0:.0f} s '
            f'({path.stat().st_size / 1e6:.1f} MB)')
        if self.request.profile:
            rows, n_ops = executorch.profile_ops(path, batch_size, self.request.img_size, self.request.threads)
            self.profiles[f'{name} batch {batch_size}'] = dict(nodes=n_ops, ops=rows)
            log(executorch.format_profile(f'{name}, batch {batch_size}', rows, n_ops))
        return executorch.load_program(path)

    def make_call(self, name: str, mode: str, batch_size: int) -> Callable[[], None]:
        return executorch.make_call(self.modules[name, batch_size], batch_size, self.request.img_size)

    def environment(self) -> dict[str, object]:
        from importlib.metadata import version
        return dict(executorch=version('executorch'), xnnpack_threads=self.request.threads or os.cpu_count(),
                    quantize=self.quantize or 'fp32')


# a new runtime: a `Runtime` subclass and its entry here (the command's --runtime choices follow)
RUNTIME_ADAPTERS: dict[str, type[Runtime]] = {
    'torch': TorchRuntime, 'onnxruntime': OnnxRuntime, 'executorch': ExecutorchRuntime,
}
RUNTIMES = tuple(RUNTIME_ADAPTERS)


def check_peers(peers: Sequence[str]) -> list[str]:
    """timm model names, checked before any work."""
    unknown = [p for p in peers if not timm.is_model(p)]
    if unknown:
        raise MobileFormerError(f'unknown timm model {", ".join(unknown)} in --peers: use names that '
                                f"timm.list_models() lists, e.g. {' '.join(DEFAULT_PEERS)}")
    return list(peers)


def make_runtime(name: str, request: BenchRequest) -> Runtime:
    if name not in RUNTIME_ADAPTERS:
        raise MobileFormerError(f'unknown runtime {name}: choose from {", ".join(RUNTIME_ADAPTERS)}')
    return RUNTIME_ADAPTERS[name](request)


def check_request(runtime: Runtime, out: Path, overwrite: bool) -> Path:
    """The output folder, once everything that can be checked before any work is: the folder, the peers, the
    numbers, then what the runtime itself needs."""
    request = runtime.request
    out = check_output(out, kind='dir', overwrite=overwrite)
    check_peers(request.peers)
    for name, value in (('rounds', request.rounds), ('img_size', request.img_size)):
        if value < 1:
            raise MobileFormerError(f'{name} is {value}: give a whole number of at least 1')
    if any(b < 1 for b in request.batch_sizes):
        raise MobileFormerError(f'batch sizes {request.batch_sizes}: give whole numbers of at least 1')
    runtime.check()
    return out


def measure_madds(names: Sequence[str], img_size: int) -> dict[str, int]:
    """MAdds per image of every model; also a first forward of each, so a model that can't run fails here."""
    madds = {}
    for name in names:
        try:
            madds[name] = count_madds(timm.create_model(name), (3, img_size, img_size))
        except Exception as err:  # a peer that can't take this input size, or doesn't build
            raise MobileFormerError(f'{name} does not run on {img_size} px images ({type(err).__name__}: '
                                    f'{one_line(err)[:160]}): choose another peer or --img-size') from err
    return madds


def time_cells(runtime: Runtime, log: Log) -> tuple[list[Cell], Optional[float]]:
    """Every cell of `runtime`, timed once it is prepared; and the share of the CPUs that other processes used
    meanwhile (None where it can't be read)."""
    request, todo = runtime.request, runtime.cells()
    cells = []
    with runtime.prepared(log):
        load = ForeignLoad()
        for i, (mode, batch_size) in enumerate(todo):
            log(f'[{i + 1}/{len(todo)}] {mode}, batch {batch_size}')
            call_for = partial(runtime.make_call, mode=mode, batch_size=batch_size)
            cells.append(run_cell(request.names, mode, batch_size, request.rounds, request.round_time, log, call_for))
        return cells, load.share()


def write_report(out: Path, report: dict, chart_mode: str, overwrite: bool, log: Log) -> None:
    """bench.json, and bench.png when rows of `chart_mode` have a paper top-1: staged, so written whole or not at
    all."""
    chart_rows = [r for r in report['rows'] if r['mode'] == chart_mode and top1(r['model']) is not None]
    with staged(out, 'dir', overwrite=overwrite) as tmp:
        (tmp / 'bench.json').write_text(json.dumps(report, indent=1))
        if chart_rows:
            draw_chart(chart_rows, top1, report['machine'], tmp / 'bench.png')
    log(f'wrote {out / "bench.json"}' + (f' and {out / "bench.png"}' if chart_rows else ''))


def benchmark(
        variants: Sequence[str],
        out: Path,
        peers: Sequence[str] = DEFAULT_PEERS,
        batch_sizes: Sequence[int] = (1, 32),
        modes: Sequence[str] = DEFAULT_MODES,
        rounds: int = 5,
        round_time: float = 1.0,
        img_size: int = 224,
        chart_mode: str = 'fused',
        overwrite: bool = False,
        log: Log = lambda message: None,
        settings: Optional[dict] = None,
        runtime: str = 'torch',
        profile: bool = False,
        threads: Optional[int] = None,
        runtime_options: Optional[Mapping[str, object]] = None,
) -> dict:
    """Time `variants` next to `peers` and write bench.json (and bench.png when the chart has points) to the
    folder `out`, which is checked before any timing and written only when the run completes.

    `runtime` names a `Runtime` adapter (RUNTIMES). With 'onnxruntime', `modes` and `chart_mode` are ignored:
    exported models run in ONNX Runtime sessions with `threads` intra-op threads (default: all logical CPUs);
    `profile` adds ORT's op-type breakdown per model and batch size (to the log and bench.json).
    `runtime_options`: what only that runtime reads."""
    request = BenchRequest(tuple(variants), tuple(peers), tuple(batch_sizes), tuple(modes), rounds, round_time,
                           img_size, chart_mode, threads, profile, dict(runtime_options or {}))
    adapter = make_runtime(runtime, request)
    out = check_request(adapter, out, overwrite)
    env = machine()
    log(machine_line(env))
    madds = measure_madds(request.names, img_size)
    log('MAdds (M): ' + ', '.join(f'{n} {madds[n] / 1e6:.1f}' for n in request.names))
    cells, foreign_share = time_cells(adapter, log)
    env.update(adapter.environment(), loadavg_end=load_average(), foreign_cpu_share=foreign_share)

    rows = summarize(cells, request.variants, request.peers, madds)
    log(format_table(rows, request.peers))
    if foreign_share is not None:
        log(f'other processes used {foreign_share:.0%} of the CPUs during the run; load average {env["loadavg_end"]}')
    report = dict(machine=env, settings=settings or {}, madds=madds, cells=[asdict(c) for c in cells], rows=rows)
    if adapter.profiles:
        report['profiles'] = adapter.profiles
    write_report(out, report, adapter.chart_mode(), overwrite, log)
    return report
