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
size fixed), then optimized by ORT with the cell's batch fixed (`export.save_optimized`: the deployment form);
all sessions get the same options (see `ort.py`); `profile=True` also prints ORT's kernel time by op type.
"""
import json
import math
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

import timm
from timm.utils import reparameterize_model

from .errors import MobileFormerError
from .info import count_madds
from .mobileformer import model_cfgs, paper_results
from .outputs import check_output, staged

MODES = ('eager', 'channels_last', 'compile', 'fused', 'train')
RUNTIMES = ('torch', 'onnxruntime')
DEFAULT_MODES = ('eager', 'channels_last', 'fused', 'train')
DEFAULT_PEERS = ('mobilenetv3_large_100', 'efficientnet_b0')
# ImageNet-1k top-1 (%) in each peer's paper (MobileNetV3 arXiv:1905.02244, EfficientNet arXiv:1905.11946)
PEER_PAPER_TOP1 = {'mobilenetv3_large_100': 75.2, 'efficientnet_b0': 77.1}


@dataclass
class Cell:
    """The measurements of one (mode, batch size): per model, img/s of each round."""
    mode: str
    batch_size: int
    calls_per_round: Dict[str, int] = field(default_factory=dict)
    rounds: Dict[str, List[float]] = field(default_factory=dict)

    def ips(self, name: str) -> float:
        return statistics.median(self.rounds[name])

    def ratio(self, name: str, peer: str) -> Tuple[float, float, float]:
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


def time_calls(call: Callable[[], None], n: int) -> List[float]:
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
        img_size: int,
        log: Callable[[str], None],
        sessions: Optional[Dict[str, object]] = None,
) -> Cell:
    """Build every model in `mode`, warm it up, then time all of them alternately for `rounds` rounds (with
    `sessions`, ONNX Runtime sessions by name, time those instead)."""
    cell = Cell(mode, batch_size)
    grad = torch.enable_grad() if mode == 'train' else torch.inference_mode()
    with grad:
        calls = {}
        for name in names:
            t0 = time.perf_counter()
            if sessions is not None:
                from .ort import make_call as ort_call
                call = ort_call(sessions[name], batch_size, img_size)
            else:
                call = make_call(build(name, mode), mode, batch_size, img_size)
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
    def _sample() -> Optional[Tuple[float, float, float]]:
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


def machine() -> Dict[str, object]:
    cpu = platform.processor()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), cpu)
    except OSError:
        pass
    return dict(
        cpu=cpu, logical_cpus=os.cpu_count(), torch_threads=torch.get_num_threads(), python=platform.python_version(),
        torch=torch.__version__, timm=timm.__version__, platform=platform.platform(),
        loadavg_start=os.getloadavg() if hasattr(os, 'getloadavg') else None,
    )


def summarize(cells: List[Cell], variants: Sequence[str], peers: Sequence[str], madds: Dict[str, int]) -> List[dict]:
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


def format_table(rows: List[dict], peers: Sequence[str]) -> str:
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


def _ticks(lo: float, hi: float, n: int = 5) -> List[float]:
    """Round tick values covering [lo, hi], about n of them."""
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    step *= next(m for m in (1, 2, 5, 10) if (hi - lo) / (step * m) <= n)
    return [i * step for i in range(math.ceil(lo / step), math.floor(hi / step) + 1)]


def draw_chart(rows: List[dict], top1: Callable[[str], Optional[float]], env: Dict[str, object], path: Path) -> None:
    """Paper top-1 against img/s, one panel per batch size, in the manner of the paper's speed figures:
    Mobile-Former variants joined by a line, peers as squares."""
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
        x_hi = max(r['img_s'] for r in panel) * 1.15
        x0, x1, y0, y1 = i * pw + left, (i + 1) * pw - right, top, ph - bottom

        def at(ips: float, acc: float) -> Tuple[float, float]:
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
            label = r['model'].replace('mobileformer_', 'MF-') if mine else r['model']
            draw.text((x + 7, y), label, fill='black', font=font, anchor='lm')
    note = f"{env['cpu']}, {env['torch_threads']} threads, torch {env['torch']}"
    draw.text((8, ph + 8), note, fill=(90, 90, 90), font=font)
    image.save(path)


def check_peers(peers: Sequence[str]) -> List[str]:
    """timm model names, checked before any work."""
    unknown = [p for p in peers if not timm.is_model(p)]
    if unknown:
        raise MobileFormerError(f'unknown timm model {", ".join(unknown)} in --peers: use names that '
                                f"timm.list_models() lists, e.g. {' '.join(DEFAULT_PEERS)}")
    return list(peers)


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
        log: Callable[[str], None] = lambda message: None,
        settings: Optional[dict] = None,
        runtime: str = 'torch',
        profile: bool = False,
        threads: Optional[int] = None,
) -> dict:
    """Time `variants` next to `peers` and write bench.json (and bench.png when the chart has points) to the
    folder `out`, which is checked before any timing and written only when the run completes.

    With `runtime='onnxruntime'`, `modes` is ignored: exported models run in ONNX Runtime sessions with
    `threads` intra-op threads (default: all logical CPUs); `profile` adds ORT's op-type breakdown per model
    and batch size (to the log and bench.json)."""
    if runtime not in RUNTIMES:
        raise MobileFormerError(f'unknown runtime {runtime}: choose from {", ".join(RUNTIMES)}')
    if runtime == 'onnxruntime':
        from .export import missing_onnx_packages
        missing = missing_onnx_packages()
        if missing:
            raise MobileFormerError(f'--runtime onnxruntime needs {", ".join(missing)}: '
                                    f'pip install "timm-mobileformer[onnx]"')
        modes, chart_mode = (), 'fused'
    elif profile:
        raise MobileFormerError('--profile needs --runtime onnxruntime')
    out = check_output(out, kind='dir', overwrite=overwrite)
    peers = check_peers(peers)
    for name, value in (('rounds', rounds), ('img_size', img_size)):
        if value < 1:
            raise MobileFormerError(f'{name} is {value}: give a whole number of at least 1')
    if any(b < 1 for b in batch_sizes):
        raise MobileFormerError(f'batch sizes {batch_sizes}: give whole numbers of at least 1')
    unknown = [m for m in list(modes) + [chart_mode] if m not in MODES]
    if runtime == 'onnxruntime':
        chart_mode = 'onnxruntime'
    if unknown:
        raise MobileFormerError(f'unknown mode {", ".join(unknown)}: choose from {", ".join(MODES)}')
    variants = list(variants)
    names = variants + [p for p in peers if p not in variants]
    cells_todo = [(m, b) for m in modes for b in batch_sizes if not (m == 'train' and b < 2)]
    if runtime == 'onnxruntime':
        cells_todo = [('onnxruntime', b) for b in batch_sizes]
    if not cells_todo:
        raise MobileFormerError('nothing to time: train needs a batch size of at least 2')
    env = machine()
    log(f"{env['cpu']}, {env['logical_cpus']} logical CPUs, {env['torch_threads']} torch threads, "
        f"torch {env['torch']}, timm {env['timm']}; load average {env['loadavg_start']}")
    madds = {}
    for name in names:  # also a first forward of every model, before any timing
        try:
            madds[name] = count_madds(timm.create_model(name), (3, img_size, img_size))
        except Exception as err:  # a peer that can't take this input size, or doesn't build
            detail = ' '.join(str(err).split())[:160]
            raise MobileFormerError(f'{name} does not run on {img_size} px images ({type(err).__name__}: {detail}): '
                                    f'choose another peer or --img-size') from err
    log('MAdds (M): ' + ', '.join(f'{n} {madds[n] / 1e6:.1f}' for n in names))

    sessions, profiles, tmpdir = {}, {}, None
    if runtime == 'onnxruntime':
        import tempfile
        from . import ort
        tmpdir = tempfile.TemporaryDirectory(prefix='mf-bench-')
        files = {}
        for name in names:
            t0 = time.perf_counter()
            files[name] = ort.export_for_bench(name, Path(tmpdir.name), img_size)
            log(f'  exported {name} in {time.perf_counter() - t0:.0f} s')
        for batch_size in batch_sizes:
            sessions[batch_size] = {}
            for name in names:
                optimized, rewritten = ort.optimize_for_batch(files[name], batch_size)
                sessions[batch_size][name] = ort.make_session(optimized, threads)
                if rewritten:
                    log(f'  {name}, batch {batch_size}: {rewritten} dynamic ReLUs in the blocked layout')
                if profile:
                    rows, n_nodes = ort.profile_ops(optimized, batch_size, img_size, threads)
                    profiles[f'{name} batch {batch_size}'] = dict(nodes=n_nodes, ops=rows)
                    log(ort.format_profile(f'{name}, batch {batch_size}', rows, n_nodes))
        env['onnxruntime'] = __import__('onnxruntime').__version__
        env['ort_threads'] = threads or os.cpu_count()

    load = ForeignLoad()
    cells = []
    try:
        for i, (mode, batch_size) in enumerate(cells_todo):
            log(f'[{i + 1}/{len(cells_todo)}] {mode}, batch {batch_size}')
            cells.append(run_cell(names, mode, batch_size, rounds, round_time, img_size, log,
                                  sessions.get(batch_size)))
    finally:
        if tmpdir is not None:
            tmpdir.cleanup()
    env['loadavg_end'] = os.getloadavg() if hasattr(os, 'getloadavg') else None
    env['foreign_cpu_share'] = load.share()

    rows = summarize(cells, variants, peers, madds)
    log(format_table(rows, peers))
    share = env['foreign_cpu_share']
    if share is not None:
        log(f'other processes used {share:.0%} of the CPUs during the run; load average {env["loadavg_end"]}')
    report = dict(machine=env, settings=settings or {}, madds=madds, cells=[asdict(c) for c in cells], rows=rows)
    if profiles:
        report['profiles'] = profiles
    chart_rows = [r for r in rows if r['mode'] == chart_mode and top1(r['model']) is not None]
    with staged(out, 'dir', overwrite=overwrite) as tmp:
        (tmp / 'bench.json').write_text(json.dumps(report, indent=1))
        if chart_rows:
            draw_chart(chart_rows, top1, env, tmp / 'bench.png')
    log(f'wrote {out / "bench.json"}' + (f' and {out / "bench.png"}' if chart_rows else ''))
    return report
