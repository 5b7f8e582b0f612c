"""The training recipe: ``training`` in ``conf/base/parameters_training.yml``, checked key by key.

The YAML is the one source of every value, so :class:`TrainingConfig` has no defaults: a value
here could silently disagree with it. Tests build their configurations from the YAML too.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from asr_pipeline.common.settings import check_settings
from asr_pipeline.trainer.augment import SpecAugment

# Keys of ``training`` that are not part of the recipe: the model preset, resolved into a
# ModelConfig by the training node.
NON_RECIPE_KEYS = frozenset({"preset", "model", "presets"})
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class TrainingConfig:
    """The recipe in ``parameters_training.yml`` (model sizes are in ``ModelConfig``).

    ``betas[0]`` has no effect: the one-cycle schedule sets AdamW's beta1 at every step
    (see :mod:`asr_pipeline.trainer.schedule`); ``betas[1]`` is used as given.
    """

    epochs: int
    max_minutes: float | None  # None (or 0): no time budget
    batch_seconds: float
    learning_rate: float  # the peak of the one-cycle schedule
    betas: tuple[float, float]
    weight_decay: float
    pct_start: float
    grad_clip: float
    ema_decay: float | None  # None: no weight average
    early_stopping_patience: int
    sortagrad: bool
    spec_augment: Mapping[str, float] | None  # SpecAugment's arguments; empty or None: off
    seed: int
    threads: int | None  # None: torch's default (all cores, or OMP_NUM_THREADS)
    device: str
    precision: str  # fp32, or bf16: autocast of the forward pass (the CTC loss stays fp32)
    checkpoint_dir: str
    checkpoint_every_minutes: float | None  # inside epochs too; None: after each epoch only
    resume: bool
    log_every_steps: int
    loader: Mapping[str, int]  # LoaderSettings: DataLoader workers and prefetch
    # glibc's mmap threshold (asr_pipeline.common.memory); None: the allocator's own default
    malloc_mmap_threshold_mb: float | None
    # oneDNN's cache of compiled CPU kernels (asr_pipeline.common.memory); None: its default
    onednn_primitive_cache: int | None
    # False: Triton stays unloaded where there is no GPU (asr_pipeline.common.memory); None: as is
    load_triton_without_gpu: bool | None

    # Settings a resumed run may change without losing its checkpoint.
    VOLATILE: ClassVar[tuple[str, ...]] = (
        "max_minutes",
        "threads",
        "device",
        "precision",
        "resume",
        "log_every_steps",
        "loader",  # the batches do not depend on how many workers build them
        "malloc_mmap_threshold_mb",
        "onednn_primitive_cache",
        "load_triton_without_gpu",
        "checkpoint_dir",
        "checkpoint_every_minutes",
        "early_stopping_patience",
    )

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TrainingConfig:
        """The recipe of ``params`` (``training``); unknown or missing keys are refused.

        Every field of the recipe is required (conf/base/parameters_training.yml sets every one);
        the model preset's keys (:data:`NON_RECIPE_KEYS`) may be there or not. The
        ``spec_augment`` settings must be SpecAugment's arguments.
        """
        recipe = {f.name for f in fields(cls)}
        check_settings("training", params, known=recipe | NON_RECIPE_KEYS, required=recipe)
        values = {name: params[name] for name in recipe}
        values["betas"] = tuple(float(b) for b in values["betas"])
        if len(values["betas"]) != 2:
            raise ValueError(f"betas must be two numbers, got {params['betas']!r}")
        if values["precision"] not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {values['precision']!r}")
        threshold = values["malloc_mmap_threshold_mb"]
        if threshold is not None and not threshold > 0:  # null turns it off, not 0
            raise ValueError(
                "malloc_mmap_threshold_mb must be a positive number of MB or null, "
                f"got {threshold!r}"
            )
        cache = values["onednn_primitive_cache"]
        if cache is not None and (type(cache) is not int or cache < 0):
            raise ValueError(
                f"onednn_primitive_cache must be 0 or more kernels, or null; got {cache!r}"
            )
        if not isinstance(values["load_triton_without_gpu"], bool | None):
            raise ValueError(
                "load_triton_without_gpu must be true, false or null, "
                f"got {values['load_triton_without_gpu']!r}"
            )
        augment = set(inspect.signature(SpecAugment.__init__).parameters) - {"self"}
        check_settings("spec_augment", values["spec_augment"] or {}, known=augment)
        return cls(**values)

    def fingerprint(self) -> dict[str, Any]:
        """What a resumed run must share with the interrupted one."""
        values = asdict(self)
        for volatile in self.VOLATILE:
            values.pop(volatile)
        return values
