"""from_lightning against a real Lightning 2.6.6 Trainer: the lr each group had before every optimizer
step (a callback) equals the imported plan's reference trace at 1e-12 relative (float64 both sides)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch")

import optbridge  # noqa: E402
from optbridge.errors import ConfigError  # noqa: E402
from optbridge_adapters.torch.lightning import from_lightning  # noqa: E402

STEPS_PER_EPOCH, MAX_STEPS = 4, 22


class Recorder(pl.Callback):
    def __init__(self):
        self.lrs = []

    def on_before_optimizer_step(self, trainer, module, optimizer):
        self.lrs.append([g["lr"] for g in optimizer.param_groups])


def make(returned_fn):
    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(2, 2, dtype=torch.float64)
            self.b = torch.nn.Linear(2, 1, dtype=torch.float64)

        def training_step(self, batch, idx):
            return self.b(self.a(batch[0])).sum()

        def train_dataloader(self):
            x = torch.zeros(STEPS_PER_EPOCH, 2, dtype=torch.float64)
            return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=1)

        def configure_optimizers(self):
            opt = torch.optim.SGD([{"params": self.a.parameters()}, {"params": self.b.parameters(), "lr": 0.01}],
                                  lr=0.1)
            return returned_fn(opt)
    return Module()


FORMATS = {
    "optimizer": lambda o: o,
    "lists": lambda o: ([o], [torch.optim.lr_scheduler.StepLR(o, 2, 0.5)]),
    "dict-step": lambda o: {"optimizer": o, "lr_scheduler": {
        "scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10), "interval": "step"}},
    "dict-bare": lambda o: {"optimizer": o, "lr_scheduler": torch.optim.lr_scheduler.ExponentialLR(o, 0.9)},
    "list-of-dicts": lambda o: [{"optimizer": o, "lr_scheduler": {
        "scheduler": torch.optim.lr_scheduler.LinearLR(o, 0.2, total_iters=6), "interval": "step", "name": "w"}}],
}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_from_lightning_equals_trainer(fmt):
    module, rec = make(FORMATS[fmt]), Recorder()
    trainer = pl.Trainer(max_steps=MAX_STEPS, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[rec])
    plan = from_lightning(make(FORMATS[fmt]).configure_optimizers(), steps_per_epoch=STEPS_PER_EPOCH)
    trainer.fit(module)
    native = np.array(rec.lrs).T
    np.testing.assert_allclose(optbridge.trace(plan, MAX_STEPS)["lr"], native, rtol=1e-12, atol=0)


def test_frequency_above_one_is_refused():
    o = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    conf = {"optimizer": o, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.StepLR(o, 2), "frequency": 3}}
    with pytest.raises(ConfigError, match=r"^lr_scheduler\[0\].frequency: is not supported yet"):
        from_lightning(conf)


def test_two_optimizers_are_refused():
    o1 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    o2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ConfigError, match=r"must return exactly one optimizer"):
        from_lightning([o1, o2])
