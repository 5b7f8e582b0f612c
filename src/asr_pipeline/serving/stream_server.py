"""``asr-stream-server``: serve a streaming model over WebSocket (asr_pipeline.streaming.server).

    asr-stream-server --model models:/asr-librispeech@streaming      # a registered model
    asr-stream-server --model data/06_models/acoustic_model.pt --port 8765

The glue between the registry and the streaming library (which imports neither Kedro nor
MLflow): it resolves the model (a bundle file or ``models:/NAME@ALIAS``, downloaded once into
the model cache as ``asr-transcribe`` does) and reads ``streaming`` from the project's conf
(``conf/base/parameters_streaming.yml``, with ``--env``'s overrides) with Kedro's config loader;
the options given here override the conf's host, port and limits.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

import uvicorn

from asr_pipeline.serving.registry import default_cache_dir, load_bundle
from asr_pipeline.streaming.recognizer import StreamingRecognizer, StreamingSettings
from asr_pipeline.streaming.server import ServerSettings, create_app

logger = logging.getLogger(__name__)


def streaming_params(conf: Path, env: str | None) -> dict[str, Any]:
    """``streaming`` of the project's parameters (base, then ``env``), as ``kedro run`` reads it."""
    from asr_pipeline.settings import CONFIG_LOADER_ARGS, CONFIG_LOADER_CLASS

    loader = CONFIG_LOADER_CLASS(conf_source=str(conf), env=env, **CONFIG_LOADER_ARGS)
    return loader["parameters"]["streaming"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="asr-stream-server", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a bundle file or models:/NAME@ALIAS")
    parser.add_argument("--conf", type=Path, default=Path("conf"), help="the project's conf")
    parser.add_argument("--env", default=os.environ.get("KEDRO_ENV"), help="conf environment")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLflow's)")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--max-streams", type=int)
    parser.add_argument("--max-stream-s", type=float)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    params = streaming_params(args.conf, args.env)
    overrides = {
        "host": args.host,
        "port": args.port,
        "max_streams": args.max_streams,
        "max_stream_s": args.max_stream_s,
    }
    server = ServerSettings.from_params(
        {**params["server"], **{k: v for k, v in overrides.items() if v is not None}}
    )
    if args.tracking_uri:
        import mlflow

        mlflow.set_tracking_uri(args.tracking_uri)
    bundle = load_bundle(args.model, cache_dir=default_cache_dir())
    settings = StreamingSettings.from_params(params["recognizer"])
    recognizer = StreamingRecognizer(bundle, settings, threads=1)
    logger.info("Serving %s on ws://%s:%d/stream", args.model, server.host, server.port)
    uvicorn.run(create_app(recognizer, server), host=server.host, port=server.port)


if __name__ == "__main__":
    main()
