"""Streaming recognition: features, network state and decoding carried across audio chunks.

Library code (no Kedro, no MLflow): :mod:`.recognizer` is the engine, :mod:`.server` serves it
over WebSocket, :mod:`.client` streams a file or a microphone to such a server.
"""
