"""Export a model bundle as ONNX, and run the exported files without the project's model code.

:mod:`~asr_pipeline.export.writer` writes the acoustic model (fp32 and an int8 dynamically
quantised copy) with everything that turns audio into its input and its output into text;
:mod:`~asr_pipeline.export.runner` computes CTC log-probabilities from audio with those files,
ONNX Runtime and NumPy alone. The ``asr-export`` command is :mod:`asr_pipeline.export_cli`
(glue, beside ``cli.py``).

Nothing is imported here, so that importing the runner does not import torch.
"""
