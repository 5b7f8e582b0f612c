"""Training an acoustic model with CTC: the loop and, one per module, its parts (configuration,
learning-rate schedule, epoch plan, batches, augmentation, weight averaging, ranks, checkpoints)."""
