"""The training step: one optimizer step of the network on one batch of the device-resident
training set (augmented and normalised on the device: :class:`tdgs.data.inputs.Inputs`; the
learning rate of the step: :class:`tdgs.optim.LearningRates`), in one of three precisions and three
modes, with the epoch's totals kept on the device (no host sync per step).

Precisions (``trainer.precision``): ``32`` (float32), ``bf16-mixed`` and ``16-mixed``
(``torch.autocast`` to bfloat16 / float16; 16-mixed adds a gradient scaler, whose overflowing
steps are skipped and counted, see :class:`TrainStep`).

Modes (``trainer.compile``): ``none`` (eager), ``inductor`` (``torch.compile`` of the model:
forward and backward compiled, optimizer eager) and ``graph`` (CUDA only: the whole step, batch
gather to epoch totals, captured once in a ``torch.cuda.CUDAGraph`` and replayed; PyTorch's
"whole network capture", https://docs.pytorch.org/docs/stable/notes/cuda.html#whole-network-capture).
``auto`` picks ``graph`` on CUDA and ``none`` on the CPU.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .data.inputs import Inputs
from .errors import describe
from .optim import LearningRates

log = logging.getLogger(__name__)

PRECISIONS = {"32": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}  # autocast dtype
MODES = ("none", "inductor", "graph")
COMPILE_CHOICES = ("auto", *MODES)
WARMUP_STEPS = 3  # eager steps before a graph is captured (cuDNN benchmarking, lazy optimizer and scaler state)
CAPTURABLE_WARNING = (
    "This instance was constructed with capturable=True"  # torch's, for eager steps of a capturable Adam
)


def resolve_mode(choice: str, device: torch.device) -> str:
    """The mode a ``trainer.compile`` choice runs: ``auto`` -> ``graph`` on CUDA, ``none`` on the CPU."""
    if choice != "auto":
        return choice
    return "graph" if device.type == "cuda" else "none"


def autocast(precision: str, device: torch.device) -> torch.autocast:
    """The forward pass's autocast context for ``precision`` (disabled for ``32``). The weight-cast
    cache is off: graph capture needs it off, and one forward per step gains nothing from it."""
    dtype = PRECISIONS[precision]
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None, cache_enabled=False)


@contextlib.contextmanager
def uncaptured_steps_allowed():
    """Silence torch's warning that a capturable Adam steps outside a graph: graph mode's warm-up
    steps and partial batches do so on purpose."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=CAPTURABLE_WARNING)
        yield


class StepTotals(NamedTuple):
    """An epoch's training totals over its counted (not skipped) steps."""

    loss_sum: float  # sum over counted images of the batch-mean cross-entropy
    correct: int  # counted images classified correctly
    images: int  # counted images
    skipped_steps: int  # 16-mixed steps skipped for a non-finite loss or overflowing gradients


class TrainStep:
    """One training step on the batch ``images[index]``, ``labels[index]`` of a dataset held on
    ``device`` (uint8 images, made the network's inputs here by ``inputs``): the step's learning
    rate, forward under autocast, cross-entropy (with ``label_smoothing``), backward (scaled by a
    ``GradScaler`` for 16-mixed), optimizer step, and the epoch's totals accumulated on the
    device; :meth:`take_totals` reads them (the one host sync of an epoch).

    Only batches of ``batch_size`` take the compiled path (inductor, graph); another size (the
    last, partial batch of an epoch) runs eagerly on the same model, optimizer and scaler, so a
    second compilation or capture is never paid for one step per epoch.

    Graph mode: the first ``WARMUP_STEPS`` full batches are ordinary training steps, run eagerly
    on a side stream; the next one is captured (capture records without running) and then
    replayed, and every later full batch is ``static_index.copy_(index)`` + ``graph.replay()``.
    So a graph run trains on exactly the batches of an eager run, each once. The graph reads the
    learning rates from device tensors set before each replay, and draws its augmentation (as
    its poolers' noise) from the CUDA generator, which advances at every replay. If capture
    fails, one warning, and the run goes on eagerly from that batch.

    16-mixed: a step whose loss is not finite, or whose gradients overflow (the scaler then skips
    the optimizer step and halves its scale), is skipped: its batch is left out of the totals and
    counted in ``skipped_steps``.

    Args:
        model: the network (trained in place).
        optimizer: over ``model``'s parameters, from :func:`tdgs.optim.make_optimizer` with the same mode.
        images: (N, C, H, W) uint8 training images on ``device``.
        labels: (N,) int64 labels on ``device``.
        batch_size: the full batch size.
        precision: a key of :data:`PRECISIONS`.
        mode: one of :data:`MODES` (resolved: not ``auto``).
        device: where everything lives.
        inputs: uint8 batch -> network input (default: scaled to [0, 1], nothing else).
        label_smoothing: of the training loss (``F.cross_entropy``'s).
        learning_rates: each step's learning rates (default: the optimizer's own, constant).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        precision: str,
        mode: str,
        device: torch.device,
        inputs: Inputs | None = None,
        label_smoothing: float = 0.0,
        learning_rates: LearningRates | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, but got {precision!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))}, but got {mode!r}")
        if mode == "graph" and device.type != "cuda":
            raise ValueError(f"mode 'graph' (CUDA graphs) needs a CUDA device, but got {device}")
        self.model, self.optimizer, self.images, self.labels = model, optimizer, images, labels
        self.batch_size = min(batch_size, len(labels))
        self.precision, self.mode, self.device = precision, mode, device
        self.inputs, self.label_smoothing = inputs or Inputs(), label_smoothing
        self.rates = learning_rates or LearningRates(optimizer)
        self.steps_done = 0  # where the schedule is: a resumed run sets it
        self.scaler = torch.amp.GradScaler(device.type) if precision == "16-mixed" else None
        self.compiled = torch.compile(model) if mode == "inductor" else None
        self.totals = torch.zeros(4, dtype=torch.float64, device=device)  # loss sum, correct, images, skipped steps
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_index: torch.Tensor | None = None  # (batch_size,) the graph's input
        self.warmup_left = WARMUP_STEPS
        self.stream = torch.cuda.Stream(device) if mode == "graph" else None  # warm-up and capture

    def __call__(self, index: torch.Tensor) -> None:
        """Train on the batch ``index`` (a slice of the epoch's order, on the device)."""
        if self.rates.varies:
            self.rates.set(self.steps_done)
        self.steps_done += 1
        if len(index) != self.batch_size or self.mode == "none":
            self.eager(index, self.model)
        elif self.mode == "inductor":
            self.eager(index, self.compiled)
        elif self.graph is not None:
            self.static_index.copy_(index)
            self.graph.replay()
        elif self.warmup_left > 0:
            self.warmup_left -= 1
            self.warm_up(index)
        else:
            self.capture(index)

    def take_totals(self) -> StepTotals:
        """The totals of the steps since the last call (one host sync), then zero them."""
        loss_sum, correct, images, skipped = self.totals.tolist()
        self.totals.zero_()
        return StepTotals(loss_sum, int(correct), int(images), int(skipped))

    def run(self, index: torch.Tensor, forward) -> None:
        """The step's work, run eagerly or recorded into the graph: gradients must be zeroed (or
        None) before it."""
        x = self.inputs(self.images[index], training=True)  # (b, C, H, W) float32
        y = self.labels[index]  # (b,)
        with autocast(self.precision, self.device):
            logits = forward(x)  # (b, classes)
            loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)  # float32 under autocast too
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
            skipped = torch.zeros((), dtype=torch.bool, device=self.device)
        else:
            self.scaler.scale(loss).backward()
            scale = self.scaler._get_scale_async()  # the scale tensor, updated in place by update()
            before = scale.clone()
            self.scaler.step(self.optimizer)
            self.scaler.update()  # halves the scale exactly when it skipped the step
            skipped = (scale < before) | ~torch.isfinite(loss)
        loss = loss.detach().double()
        count = torch.full_like(loss, len(y))
        correct = (logits.detach().argmax(1) == y).sum().double()
        counted = torch.where(
            skipped, 0.0, torch.stack([loss * count, correct, count])
        )  # not a product: loss may be inf
        self.totals += torch.cat([counted, skipped.double().view(1)])  # (4,)

    def eager(self, index: torch.Tensor, forward) -> None:
        """One step without a graph. Once a graph exists its gradient tensors are zeroed in place,
        not replaced, because the graph reads and writes those very tensors."""
        self.optimizer.zero_grad(set_to_none=self.graph is None)
        capturable = self.optimizer.param_groups[0].get("capturable", False)
        with uncaptured_steps_allowed() if capturable else contextlib.nullcontext():
            self.run(index, forward)

    def warm_up(self, index: torch.Tensor) -> None:
        """A real training step, eagerly on the capture stream (as torch's recipe says), so that
        cuDNN, cuBLAS, the optimizer's and the scaler's lazy state exist before capture."""
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            self.eager(index, self.model)
        torch.cuda.current_stream(self.device).wait_stream(self.stream)

    def capture(self, index: torch.Tensor) -> None:
        """Capture the step into the graph, then replay it once: that trains on ``index``."""
        self.static_index = index.clone()
        self.optimizer.zero_grad(set_to_none=True)  # the graph allocates its own gradients
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, stream=self.stream):
                self.run(self.static_index, self.model)
        except Exception as error:  # an op that cannot be captured: nothing ran, so nothing is lost
            log.warning(f"CUDA graph capture failed ({describe(error)}); training eagerly")
            self.mode = "none"
            if self.scaler is not None:  # forget the half-finished step's bookkeeping, keep the scale
                state = self.scaler.state_dict()
                self.scaler = torch.amp.GradScaler(self.device.type)
                self.scaler.load_state_dict(state)
            self.eager(index, self.model)
            return
        self.graph = graph
        graph.replay()
