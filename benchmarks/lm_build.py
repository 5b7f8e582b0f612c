"""Benchmark: building the transcript LM (`lm_source: transcripts`) as the corpus grows.

    python benchmarks/lm_build.py [--sizes 1,10,100] [--prune 0,1,1]

The shared sample's transcripts (every subset) are the 1x corpus; an Nx corpus holds N times as
many sentences, each the first part of one transcript and the rest of another (seeded): the
words and most n-grams are LibriSpeech's, and every sentence adds n-grams at its seam, so the
number of distinct n-grams grows with the corpus as it does in real text (re-sampling whole
sentences would only repeat the same n-grams). Each build runs in a fresh process the way the
language_model pipeline runs it: order 3, the 50,000 most common English words as background.
Prints sentences, words, n-grams per order, ARPA megabytes, seconds, the build's own peak memory
(``tracemalloc``, a second traced build) and the process's peak RSS;
writes ``data/08_reporting/benchmarks/lm_build.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

from common import REPORT_DIR, librispeech_dir, project_params, write_report


def transcripts(root: Path) -> list[str]:
    from asr_pipeline.units.characters import normalise

    lines = []
    for path in sorted(root.glob("*/*/*/*.trans.txt")):
        for line in path.read_text().splitlines():
            text, unknown = normalise(line.split(" ", 1)[1])
            if text and not unknown:
                lines.append(text)
    return lines


def corpus(sentences: list[str], size: int, seed: int = 0) -> list[str]:
    """``size`` times as many sentences, each spliced from two transcripts (the first is kept
    whole at 1x)."""
    if size == 1:
        return sentences
    rng = random.Random(seed)
    out = []
    for _ in range(size * len(sentences)):
        head, tail = rng.choice(sentences).split(), rng.choice(sentences).split()
        out.append(
            " ".join(head[: rng.randint(1, len(head))] + tail[rng.randint(0, len(tail) - 1) :])
        )
    return out


def build(args: argparse.Namespace) -> dict:
    """In a fresh process: one LM build, timed, with its peak RSS."""
    from asr_pipeline.datasets.word_frequencies import WordFrequencyDataset
    from asr_pipeline.decoding.language_model import build_arpa, common_words

    beam = project_params("beam_search")["beam_search"]
    table = WordFrequencyDataset(language="en").load()
    background = common_words(
        table[["word", "frequency"]].itertuples(index=False, name=None), beam["background_words"]
    )
    sentences = corpus(transcripts(args.root), args.size)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    arpa = build_arpa(sentences, order=beam["lm_order"], background=background, prune=args.prune)
    seconds = time.perf_counter() - start
    del arpa
    # again, traced: the memory the build itself allocates at its peak (the process's RSS also
    # holds the word-frequency table and the sentences)
    tracemalloc.start()
    arpa = build_arpa(sentences, order=beam["lm_order"], background=background, prune=args.prune)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    header = [line for line in arpa[:400].splitlines() if line.startswith("ngram ")]
    return {
        "size": args.size,
        "prune": args.prune,
        "sentences": len(sentences),
        "words": sum(len(s.split()) for s in sentences),
        "ngrams": [int(line.split("=")[1]) for line in header],
        "arpa_mb": len(arpa.encode()) / 2**20,
        "seconds": seconds,
        "build_peak_mb": traced_peak / 2**20,
        "rss_before_mb": before,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--librispeech-dir")
    parser.add_argument("--sizes", default="1,10,100")
    parser.add_argument("--prune", default="0,1,1", help="the pruned builds' thresholds")
    parser.add_argument("--out", type=Path, default=REPORT_DIR / "lm_build.json")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args()
    if args.one:
        args.prune = [int(x) for x in args.prune.split(",")] if args.prune else []
        print(json.dumps(build(args)))
        return
    root = librispeech_dir(args.librispeech_dir)
    builds = []
    for size in [int(s) for s in args.sizes.split(",")]:
        for prune in ("", args.prune):
            command = [sys.executable, __file__, "--one", "--root", str(root),
                       "--size", str(size), "--prune", prune]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode:
                sys.exit(done.stderr[-3000:])
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            builds.append(figures)
            print(f"{size:4d}x prune {prune or 'none':6s} {figures['sentences']:8,d} sentences "
                  f"{figures['words']:10,d} words  n-grams {figures['ngrams']}  "
                  f"ARPA {figures['arpa_mb']:7.1f} MB  {figures['seconds']:6.1f} s  build's peak "
                  f"{figures['build_peak_mb']:6.0f} MB (process RSS {figures['rss_before_mb']:.0f}"
                  f" -> {figures['peak_rss_mb']:.0f} MB)", flush=True)  # fmt: skip
    write_report({"builds": builds}, args.out)


if __name__ == "__main__":
    sys.exit(main())
