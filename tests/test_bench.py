"""`timm-mobileformer bench` arithmetic, argument checks, its report's machine record, the runtime adapters and
the chart (its timings are measurements, not tests)."""
import json
from typing import Callable, ClassVar

import pytest
from cli_util import error_line
from PIL import Image

from timm_mobileformer import __version__
from timm_mobileformer.bench import RUNTIME_ADAPTERS, Cell, Runtime, benchmark, draw_chart, summarize, top1
from timm_mobileformer.cli import main
from timm_mobileformer.errors import MobileFormerError
from timm_mobileformer.machine import native_bf16, vector_extensions


def test_ratios_are_per_round_and_per_madd():
    cell = Cell('fused', 1, rounds={'mobileformer_294m': [60., 66., 50.], 'peer': [80., 60., 100.]})
    assert cell.ips('mobileformer_294m') == 60.
    assert cell.ratio('mobileformer_294m', 'peer') == (0.75, 0.5, 1.1)  # median, min, max of 0.75, 1.1, 0.5
    row, peer_row = summarize([cell], ['mobileformer_294m'], ['peer'], {'mobileformer_294m': 300, 'peer': 200})
    assert row['per_madd_peer'] == pytest.approx(0.75 * 300 / 200)
    assert 'ratio_peer' not in peer_row


def test_unknown_variant_is_refused(tmp_path):
    assert "unknown model '999m'" in error_line(['bench', '--model', '999m', '--out', str(tmp_path / 'b')], code=2)
    assert "unknown model '999m'" in error_line(['export', '--model', '999m', '--out', str(tmp_path / 'm.onnx')],
                                                code=2)
    assert not any(tmp_path.iterdir())


def test_a_tiny_run_records_the_machine(tmp_path, capsys):
    out = tmp_path / 'bench'
    assert main(['bench', '--model', '26m', '--peers', '--batch-sizes', '1', '--modes', 'eager', '--rounds', '1',
                 '--round-time', '0.01', '--img-size', '32', '--out', str(out)]) == 0
    env = json.loads((out / 'bench.json').read_text())['machine']
    assert env['vector_extensions'] == vector_extensions()
    assert env['native_bf16'] is native_bf16()
    assert env['timm_mobileformer'].startswith(__version__)
    first_line = capsys.readouterr().out.splitlines()[0]
    assert f"vector extensions: {', '.join(env['vector_extensions']) or 'unknown'}; native bf16: " in first_line
    assert f"timm-mobileformer {env['timm_mobileformer']}" in first_line


class CountingRuntime(Runtime):
    """A runtime whose call does nothing: what `benchmark` asks of an adapter, and in which order."""
    name = 'counting'
    supports_profile = True
    option_names = ('flavour',)
    events: ClassVar[list[str]] = []

    def prepared(self, log):
        self.events.append('prepare')
        self.profiles['x'] = self.request.options['flavour']
        return super().prepared(log)

    def make_call(self, name: str, mode: str, batch_size: int) -> Callable[[], None]:
        self.events.append(f'{name} {mode} {batch_size}')
        return lambda: None

    def environment(self) -> dict[str, object]:
        return {'counting_version': 1}


def test_a_runtime_is_one_adapter_and_one_registry_entry(tmp_path, monkeypatch):
    monkeypatch.setitem(RUNTIME_ADAPTERS, 'counting', CountingRuntime)
    monkeypatch.setattr(CountingRuntime, 'events', [])
    report = benchmark(['mobileformer_26m'], tmp_path / 'b', peers=[], batch_sizes=(1, 2), rounds=2,
                       round_time=0.001, img_size=32, runtime='counting', profile=True,
                       runtime_options={'flavour': 'plain'})
    assert CountingRuntime.events == ['prepare', 'mobileformer_26m counting 1', 'mobileformer_26m counting 2']
    assert [(c['mode'], c['batch_size']) for c in report['cells']] == [('counting', 1), ('counting', 2)]
    assert report['machine']['counting_version'] == 1 and report['profiles'] == {'x': 'plain'}
    assert (tmp_path / 'b' / 'bench.json').is_file()
    with pytest.raises(MobileFormerError, match='flavor: not an option of --runtime torch'):
        benchmark(['mobileformer_26m'], tmp_path / 'c', runtime_options={'flavor': 'x'})
    with pytest.raises(MobileFormerError, match='--profile needs --runtime onnxruntime or executorch or counting'):
        benchmark(['mobileformer_26m'], tmp_path / 'c', profile=True)
    assert not (tmp_path / 'c').exists()


def test_chart_labels_end_inside_their_panel(tmp_path):
    """The fastest model's label at the right of a panel is whole, not cut by the panel's edge."""
    speeds = {1: {'mobileformer_294m': 40., 'mobileformer_508m': 30., 'efficientnet_b0': 60.,
                  'mobilenetv3_large_100': 120.},
              32: {'mobileformer_294m': 300., 'mobileformer_508m': 200., 'efficientnet_b0': 500.,
                   'mobilenetv3_large_100': 900.}}
    rows = [dict(mode='fused', batch_size=bs, model=name, img_s=ips)
            for bs, panel in speeds.items() for name, ips in panel.items()]
    draw_chart(rows, top1, dict(cpu='a CPU', torch_threads=1, torch='2'), tmp_path / 'bench.png')
    with Image.open(tmp_path / 'bench.png') as chart:
        gray = chart.convert('L')
    panel_width, plot_height = gray.width // len(speeds), gray.height - 28  # below it, the machine's note
    for edge in range(panel_width, gray.width + 1, panel_width):
        assert gray.crop((edge - 3, 0, edge, plot_height)).getextrema() == (255, 255), f'ink at x={edge}'
