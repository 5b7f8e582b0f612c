"""Audio in, features out: decoding files into signals, the feature transform and its statistics,
and parallel extraction."""
