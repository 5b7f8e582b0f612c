"""Training an acoustic model with CTC: the loop (``loop``) and, one per module, its parts: the
recipe (``config``), the learning-rate schedule (``schedule``), the epoch plan (``epoch_plan``),
batches and their loss (``batching``), augmentation (``augment``), weight averaging (``ema``),
ranks and collectives (``ranks``), checkpoints (``checkpoint``), validation (``validation``) and
when to stop (``stopping``)."""
