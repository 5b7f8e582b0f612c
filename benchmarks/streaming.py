"""Streaming recognition through the real server: accuracy against offline decoding, latency.

    python benchmarks/streaming.py --streaming-model models:/asr-librispeech@streaming \
        --offline-model models:/asr-librispeech@champion [--env shared] [--limit N] \
        [--streams 1,4,8] [--speed 1.0] [--seconds-per-stream 60] [--cores 2] [--out FILE]

Utterances: the held-out test speakers of ``--env`` (its ``data_engineering``, read as ``kedro
run`` reads it, split by the pipeline's own ``split_by_speaker``) in ``--subsets`` (default: the
env's test subsets); ``--limit`` keeps N, spread evenly. Models: bundle files or ``models:/`` URIs.

- Accuracy (the project's ``error_rates``): every utterance streamed through ``asr-stream-server``
  (a subprocess on a free port, pinned to ``--cores`` CPUs, ``--chunk-s`` chunks, one stream, as
  fast as it goes), its finals joined; against the same bundle decoded offline (``Recognizer``:
  its beam search when it carries one, as ``asr-transcribe``) and against ``--offline-model``
  (the default preset trained under the same budget; without it, null and why). The same pass
  gives the real-time factor: first chunk sent to the server's ``end``, over the audio's seconds.
- Latency with 1, 4, 8 concurrent streams at ``--speed`` (1: real time, a chunk is sent once its
  audio has been spoken); each stream plays utterances, one connection each, until it has played
  ``--seconds-per-stream`` (starts staggered within a chunk). Final latency: last chunk sent (then
  ``end``) to the server's ``end``, which follows the last final at once. Partial delay: received
  minus when the chunk holding its ``end`` was sent. Partial gaps: between consecutive partials of
  a segment, in audio (``end``) and wall time. First partial: after the start (the warm-up).

Goals: final p95 <= 300 ms with 8 streams on 2 cores; a partial at least every 250 ms of audio
(p95 of the gaps over every utterance of the accuracy pass: audio gaps do not depend on the load);
streaming CER within 5 points of the offline default. Writes data/08_reporting/benchmarks/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PROJECT_ROOT, REPORT_DIR, free_port, librispeech_dir, write_report  # noqa: E402
from streaming_clients import (  # noqa: E402
    concurrent,
    cpu_seconds_of,
    level,
    measures,
    quantiles,
    stream_one,
)

GOALS = {  # key: (limit, what)
    "final_latency_p95_s_8_streams": (0.300, "final p95 after the audio, 8 streams (s)"),
    "partial_interval_p95_s": (0.250, "partial interval p95, audio (s)"),
    "cer_gap_streaming_minus_offline": (0.05, "streaming CER - offline default CER"),
}


def conf_parameters(env: str) -> dict:
    """The project's parameters for ``env``, as ``kedro run --env`` reads them."""
    from asr_pipeline.settings import CONFIG_LOADER_ARGS, CONFIG_LOADER_CLASS

    conf = str(PROJECT_ROOT / "conf")
    return CONFIG_LOADER_CLASS(conf_source=conf, env=env, **CONFIG_LOADER_ARGS)["parameters"]


def held_out_utterances(root: Path, params: dict, subsets: list[str]):
    """The pipeline's test split of ``subsets``, by id. Its speakers are drawn from the test
    subsets alone (and first), so only those are scanned."""
    from asr_pipeline.pipelines.data_engineering import nodes

    params = {**params, "test_subsets": subsets}
    inventory = nodes.scan_librispeech(str(root), {**params, "train_subsets": []})
    manifest, _ = nodes.validate_utterances(inventory, params)
    test = nodes.split_by_speaker(manifest, params).query("split == 'test'")
    return test.sort_values("utterance_id").reset_index(drop=True)


def offline(uri: str, paths: list[str]) -> tuple[list[str], str, dict]:
    """Whole-utterance transcripts as ``asr-transcribe`` gives them, the decoder, the info."""
    from asr_pipeline.model.recognizer import Recognizer
    from asr_pipeline.serving.registry import default_cache_dir, load_bundle

    bundle = load_bundle(uri, cache_dir=default_cache_dir())
    recognizer = Recognizer(bundle)
    texts = [recognizer.transcribe_file(p, "auto") for p in paths]
    return texts, recognizer.decoder_name(), bundle.get("info", {})


@contextlib.contextmanager
def stream_server(model: str, args, max_streams: int, tracking_uri: str):
    """``asr-stream-server`` on a free port, pinned to the first ``cores`` CPUs: URL, pid."""
    port, cpus = free_port(), sorted(os.sched_getaffinity(0))
    command = [sys.executable, "-m", "asr_pipeline.serving.stream_server", "--model", model]
    command += ["--conf", str(PROJECT_ROOT / "conf"), "--env", args.env, "--port", str(port)]
    command += ["--max-streams", str(max_streams), "--tracking-uri", tracking_uri]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT_ROOT / "src")}
    with tempfile.TemporaryFile("w+") as log:  # a file: a pipe nobody reads fills and blocks it
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=log)
        os.sched_setaffinity(process.pid, cpus[: args.cores])
        if len(cpus) > args.cores:  # the clients on the other cores
            os.sched_setaffinity(0, cpus[args.cores :])
        try:
            for _ in range(360):
                if process.poll() is not None:
                    break
                with contextlib.suppress(OSError):
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
                    break
                time.sleep(0.5)
            else:
                process.kill()
                process.wait()
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"the server did not start:\n{log.read()[-3000:]}")
            yield f"ws://127.0.0.1:{port}/stream", process.pid
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def scores(references: list[str], texts: list[str], **extra) -> dict:
    from asr_pipeline.decoding.metrics import error_rates

    return {**error_rates(references, texts).to_dict(), **extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streaming-model", required=True, help="bundle file or models:/ URI")
    parser.add_argument("--offline-model", help="the offline default: bundle file or models:/")
    parser.add_argument("--env", default="shared", help="conf env of the split and the server")
    parser.add_argument("--librispeech-dir")
    parser.add_argument("--subsets", help="comma-separated (default: the env's test subsets)")
    parser.add_argument("--limit", type=int, help="at most N test utterances, spread evenly")
    parser.add_argument("--streams", default="1,4,8", help="concurrent streams, in turn")
    parser.add_argument("--speed", type=float, default=1.0, help="1: real time, 0: at once")
    parser.add_argument("--seconds-per-stream", type=float, default=60.0)
    parser.add_argument("--chunk-s", type=float, default=0.1)
    parser.add_argument("--cores", type=int, default=2, help="CPUs the server is pinned to")
    parser.add_argument("--out", type=Path, default=REPORT_DIR / "streaming.json")
    args = parser.parse_args()
    root = librispeech_dir(args.librispeech_dir)
    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}")
    if any(m and m.startswith("models:/") for m in (args.streaming_model, args.offline_model)):
        import mlflow

        mlflow.set_tracking_uri(tracking_uri)
    params = conf_parameters(args.env)
    split = params["data_engineering"]
    subsets = args.subsets.split(",") if args.subsets else split["test_subsets"]
    every = held_out_utterances(root, split, subsets)
    test = every
    if args.limit and args.limit < len(every):
        test = every.iloc[[k * len(every) // args.limit for k in range(args.limit)]]
    paths, references = test.path.tolist(), test.text.tolist()
    audio = [sf.read(p, dtype="int16") for p in paths]  # mono 16-bit, as LibriSpeech is
    audio_s = sum(len(pcm) / rate for pcm, rate in audio)
    print(
        f"{len(test)} of the {len(every)} test utterances of {every.speaker_id.nunique()} held-out "
        f"speakers ({','.join(subsets)}, --env {args.env}), {audio_s / 60:.1f} min of audio"
    )
    accuracy, infos = {"offline_default": None}, {}
    texts, decoder, infos["streaming"] = offline(args.streaming_model, paths)
    accuracy["own_offline"] = scores(references, texts, decoder=decoder)
    if args.offline_model:
        texts, decoder, infos["offline"] = offline(args.offline_model, paths)
        accuracy["offline_default"] = scores(references, texts, decoder=decoder)
    else:
        accuracy["offline_default_reason"] = "no --offline-model given"

    counts, levels = [int(s) for s in args.streams.split(",")], {}
    with stream_server(args.streaming_model, args, max(counts), tracking_uri) as (url, pid):
        asyncio.run(stream_one(url, *audio[0], args.chunk_s, 0.0))  # warm-up
        streamed = [measures(asyncio.run(stream_one(url, *a, args.chunk_s, 0.0))) for a in audio]
        for streams in counts:
            cpu, start = cpu_seconds_of(pid), time.perf_counter()
            runs = asyncio.run(concurrent(url, audio, streams, args))
            wall = time.perf_counter() - start
            levels[str(streams)] = level(runs, cpu_seconds_of(pid) - cpu, wall)
    accuracy["streamed"] = scores(references, [r["text"] for r in streamed])
    gaps = quantiles([g for r in streamed for g in r["partial_gap_audio_s"]])
    cer, offline_cer = accuracy["streamed"]["cer"], (accuracy["offline_default"] or {}).get("cer")
    values = {
        "final_latency_p95_s_8_streams": levels.get("8", {}).get("final_latency_s", {}).get("p95"),
        "partial_interval_p95_s": gaps["p95"],
        "cer_gap_streaming_minus_offline": None if offline_cer is None else cer - offline_cer,
    }
    report = {
        **{k: getattr(args, k) for k in ("env", "streaming_model", "offline_model", "speed")},
        **{k: getattr(args, k) for k in ("cores", "chunk_s", "seconds_per_stream")},
        "librispeech_dir": str(root),
        "subsets": subsets,
        "test_speakers": sorted(int(s) for s in every.speaker_id.unique()),
        "utterances": len(test),
        "audio_seconds": audio_s,
        "machine_cpus": os.cpu_count(),
        "models_info": {  # "trained under the same budget": compare their training seconds
            name: {k: info.get(k) for k in ("preset", "train_seconds", "epochs_trained")}
            for name, info in infos.items()
        },
        "recognizer_settings": params["streaming"]["recognizer"],
        "accuracy": accuracy,
        "cer_gap_streaming_minus_own_offline": cer - accuracy["own_offline"]["cer"],
        "rtf_1_stream": sum(r["processing_s"] for r in streamed) / audio_s,
        "partial_interval_audio_s_all_utterances": gaps,
        "by_streams": levels,
        **values,
        "goals": {
            key: {"limit": limit, "value": v, "passed": None if v is None else v <= limit}
            for key, (limit, _) in GOALS.items()
            for v in [values[key]]
        },
    }
    write_report(report, args.out)  # first: a figure is never lost to the table
    print_table(report)


def print_table(report: dict) -> None:
    accuracy = report["accuracy"]
    print(f"\n{'':<28} {'CER':>8} {'WER':>8}")
    for name, key in [
        ("streamed (server finals)", "streamed"),
        (f"own offline ({accuracy['own_offline']['decoder']})", "own_offline"),
        ("offline default", "offline_default"),
    ]:
        rates = [f"{100 * accuracy[key][m]:7.1f}%" for m in ("cer", "wer")] if accuracy[key] else []
        print(f"{name:<28} {' '.join(rates) or '       -        -'}")
    print(f"real-time factor, 1 stream as fast as possible: {report['rtf_1_stream']:.4f}")
    columns = ("final", "partial delay", "gap audio", "gap wall", "1st partial")
    keys = ("final_latency_s", "partial_delay_s", "partial_gap_audio_s", "partial_gap_wall_s")
    print(f"\n{'streams':>7} {'utts':>5}" + "".join(f" {c:>13}" for c in columns) + "  cpu")
    for streams, r in report["by_streams"].items():
        cells = [r[k] for k in (*keys, "first_partial_s")]
        row = "".join(
            " " + " ".join("     -" if v is None else f"{v:6.3f}" for v in (c["p50"], c["p95"]))
            for c in cells
        )
        print(f"{streams:>7} {r['utterances']:>5}{row} {r['server_cpu_share']:4.2f}")
    print("(seconds, p50 and p95; cpu: the server's CPU-seconds per second)")
    for key, (limit, what) in GOALS.items():
        goal = report["goals"][key]
        value = "n/a" if goal["value"] is None else f"{goal['value']:.3f}"
        verdict = {None: "n/a", True: "PASS", False: "FAIL"}[goal["passed"]]
        print(f"goal {what} <= {limit:g}: {value} {verdict}")


if __name__ == "__main__":
    main()
