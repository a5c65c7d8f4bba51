"""Training Mobile-Former on the demo set with timm's own components, wired the way timm's train.py wires them:
`create_model` with drop path, `create_optimizer_v2` with layer decay (through `group_matcher` and
`no_weight_decay`), the cosine scheduler stepped per update, Mixup with label smoothing, the classification
task with its ModelEmaV3, bf16 autocast on CPUs that compute bf16 natively (fp32 elsewhere, where bf16 is
emulated and several times slower) and gradient checkpointing; and the same path across two gloo processes
with DistributedDataParallel."""
import os
import socket
from argparse import Namespace
from pathlib import Path
from typing import Optional

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
from conftest_hub import WORKER_THREADS
from timm import create_model, utils
from timm.data import Mixup, create_dataset, create_loader
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.task import ClassificationTask

from timm_mobileformer.demo_data import CLASSES, make_demo_data
from timm_mobileformer.machine import native_bf16
from timm_mobileformer.run import allow_cpu_device_ids

NUM_CLASSES = len(CLASSES)
CHANCE = 100 / NUM_CLASSES  # top-1 in percent
IMG_SIZE = 32
BATCH_SIZE = 32
EPOCHS = 10
TRAIN_PER_CLASS = 800  # 4800 images: 150 updates per epoch, 1500 in all
VAL_PER_CLASS = 50
MIN_TOP1 = 2 * CHANCE  # 33%


@pytest.fixture(scope='module')
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_data(tmp_path_factory.mktemp('demo') / 'shapes', seed=0, train_per_class=TRAIN_PER_CLASS,
                          val_per_class=VAL_PER_CLASS, size=IMG_SIZE)


@pytest.fixture
def threads():
    """This test worker's share of the cores as intra-op threads, restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(WORKER_THREADS)
    yield
    torch.set_num_threads(before)


def make_loader(root: Path, split: str, training: bool, img_size: int = IMG_SIZE, batch_size: int = BATCH_SIZE,
                distributed: bool = False) -> torch.utils.data.DataLoader:
    """timm's dataset and loader without the CUDA prefetcher; random-resized crops are kept mild so that
    the shape stays in the picture, and validation sees the whole image."""
    dataset = create_dataset('', root=str(root), split=split, is_training=training)
    return create_loader(
        dataset, input_size=(3, img_size, img_size), batch_size=batch_size, is_training=training,
        use_prefetcher=False, device=torch.device('cpu'), num_workers=0, distributed=distributed,
        scale=(0.7, 1.0), ratio=(0.9, 1.1), color_jitter=0., interpolation='bilinear', crop_pct=1.0,
    )


def make_model(drop_path_rate: float = 0.05, grad_checkpointing: bool = True) -> nn.Module:
    model = create_model('mobileformer_26m', num_classes=NUM_CLASSES, drop_rate=0.1, drop_path_rate=drop_path_rate)
    model.set_grad_checkpointing(grad_checkpointing)
    return model


def make_optimizer(model: nn.Module, lr: float = 4e-3) -> torch.optim.Optimizer:
    return create_optimizer_v2(model, opt='adamw', lr=lr, weight_decay=0.05, layer_decay=0.95)


def make_mixup() -> Mixup:
    return Mixup(mixup_alpha=0.2, label_smoothing=0.1, num_classes=NUM_CLASSES)


BF16 = native_bf16()


def bf16_autocast(enabled: bool = True) -> torch.autocast:
    return torch.autocast('cpu', dtype=torch.bfloat16, enabled=enabled)


def training_autocast() -> torch.autocast:
    """bf16 autocast where the CPU computes bf16 natively, fp32 elsewhere: the README's CPU recipe's rule."""
    return bf16_autocast(enabled=BF16)


def train_epoch(task: ClassificationTask, loader, optimizer: torch.optim.Optimizer, mixup: Mixup, scheduler,
                num_updates: int, max_updates: Optional[int] = None) -> tuple[int, float]:
    """train.py's `train_one_epoch` without accumulation or logging: (updates done so far, last loss)."""
    task.get_trainable_module().train()
    loss = torch.tensor(float('nan'))
    for input, target in loader:
        if max_updates is not None and num_updates >= max_updates:
            break
        input, target = mixup(input, target)
        with training_autocast():
            loss = task(input, target)['loss']
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        num_updates += 1
        task.update_ema(step=num_updates)
        scheduler.step_update(num_updates=num_updates)
    return num_updates, loss.item()


@torch.no_grad()
def top1(model: nn.Module, loader) -> float:
    model.eval()
    correct = total = 0
    for input, target in loader:
        with training_autocast():
            output = model(input)
        correct += utils.accuracy(output.float(), target, topk=(1,))[0].item() * len(target) / 100
        total += len(target)
    return 100 * correct / total


def test_optimizer_groups_follow_group_matcher():
    """Layer decay scales lr by depth from `group_matcher`; weight decay skips the 1-D params, not the tokens."""
    model = make_model()
    optimizer = make_optimizer(model)
    scales = sorted({g['lr_scale'] for g in optimizer.param_groups})
    assert len(scales) > 10 and scales[-1] == 1.0
    decay_of = {id(p): g['weight_decay'] for g in optimizer.param_groups for p in g['params']}
    for name, param in model.named_parameters():
        assert decay_of[id(param)] == (0. if param.ndim <= 1 else 0.05), name
    assert decay_of[id(model.tokens)] == 0.05


def test_bf16_autocast_training_step():
    """The bf16 path runs on every CPU: bf16 activations, a finite loss, fp32 gradients on fp32 weights."""
    torch.manual_seed(0)
    model = make_model()
    x, y = torch.randn(4, 3, IMG_SIZE, IMG_SIZE), torch.randint(0, NUM_CLASSES, (4,))
    with bf16_autocast():
        output = model(x)
        loss = nn.functional.cross_entropy(output, y)
    loss.backward()
    assert output.dtype == torch.bfloat16 and torch.isfinite(loss)
    assert all(p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all() for p in model.parameters())


def test_mobileformer_26m_learns_the_demo_task(demo: Path, threads):
    """From scratch, 10 epochs (1500 updates) over 4800 32-px images: validation top-1 at least 2x chance, EMA
    included."""
    utils.random_seed(42)
    train_loader = make_loader(demo, 'train', training=True)
    val_loader = make_loader(demo, 'validation', training=False)
    # gradient checkpointing only recomputes the forward (test_model_contract.py checks the gradients are the same)
    model = make_model(grad_checkpointing=False)
    task = ClassificationTask(model, SoftTargetCrossEntropy(), device=torch.device('cpu'), verbose=False)
    optimizer = make_optimizer(model)
    task.setup_ema(decay=0.998, use_warmup=True)
    scheduler, num_epochs = create_scheduler_v2(
        optimizer, sched='cosine', num_epochs=EPOCHS, warmup_epochs=1, warmup_lr=1e-4, min_lr=1e-5,
        step_on_epochs=False, updates_per_epoch=len(train_loader))
    mixup = make_mixup()
    with training_autocast():
        assert model(torch.randn(2, 3, IMG_SIZE, IMG_SIZE)).dtype == (torch.bfloat16 if BF16 else torch.float32)

    num_updates = 0
    for epoch in range(num_epochs):
        num_updates, loss = train_epoch(task, train_loader, optimizer, mixup, scheduler, num_updates)
        scheduler.step(epoch + 1)
    model_top1 = top1(task.get_eval_model(), val_loader)
    ema_top1 = top1(task.get_eval_model(ema=True), val_loader)
    print(f'mobileformer_26m after {num_updates} updates: top-1 {model_top1:.1f}%, EMA {ema_top1:.1f}% '
          f'(chance {CHANCE:.1f}%)')
    assert model_top1 >= MIN_TOP1
    assert ema_top1 >= MIN_TOP1


# ---- two processes, gloo, DistributedDataParallel: the path train.py takes under torchrun ----

DDP_UPDATES = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def ddp_worker(rank: int, world_size: int, port: int, root: str, out_dir: str) -> None:
    """One torchrun-like process: env vars, timm's init_distributed_device, random_seed(seed, rank) as in
    train.py (so the ranks start from different weights until DDP broadcasts rank 0's), the task wrapped with
    train.py's `device_ids=[device]`, a DistributedSampler loader, then train.py's end-of-epoch BN reduce."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.set_num_threads(1)
    args = Namespace(device='cpu', dist_backend=None, dist_url=None)
    device = utils.init_distributed_device(args)
    assert args.distributed and dist.get_backend() == 'gloo' and args.world_size == world_size
    utils.random_seed(42, args.rank)

    model = make_model(drop_path_rate=0.1)
    task = ClassificationTask(model, SoftTargetCrossEntropy(), device=device, verbose=False)
    optimizer = make_optimizer(task.get_trainable_module())
    allow_cpu_device_ids()  # what `timm-mobileformer run` does before running train.py
    task.prepare_distributed(device_ids=[device])
    loader = make_loader(Path(root), 'train', training=True, img_size=32, batch_size=8, distributed=True)
    scheduler, _ = create_scheduler_v2(optimizer, sched='cosine', num_epochs=1, warmup_epochs=0,
                                       step_on_epochs=False, updates_per_epoch=DDP_UPDATES)
    loader.sampler.set_epoch(0)
    start = {k: v.clone() for k, v in model.state_dict().items()}  # rank 0's weights, broadcast by DDP
    train_epoch(task, loader, optimizer, make_mixup(), scheduler, 0, max_updates=DDP_UPDATES)
    utils.distribute_bn(task.get_trainable_module(), args.world_size, reduce=True)
    torch.save(dict(start=start, end=model.state_dict(), indices=list(loader.sampler)),
               Path(out_dir) / f'rank{rank}.pt')
    dist.destroy_process_group()


def test_two_process_gloo_ddp_ends_with_identical_weights(demo: Path, tmp_path: Path):
    mp.spawn(ddp_worker, args=(2, free_port(), str(demo), str(tmp_path)), nprocs=2, join=True)
    ranks: dict[int, dict] = {r: torch.load(tmp_path / f'rank{r}.pt', weights_only=True) for r in (0, 1)}
    assert set(ranks[0]['indices']).isdisjoint(ranks[1]['indices'])  # each rank trains on its own shard
    for key in ('start', 'end'):
        state0, state1 = ranks[0][key], ranks[1][key]
        assert state0.keys() == state1.keys()
        for name in state0:
            assert torch.equal(state0[name], state1[name]), f'{key}: {name}'
    assert not torch.equal(ranks[0]['start']['tokens'], ranks[0]['end']['tokens'])
