"""Benchmark: the feature store and the training loader as the corpus grows, side by side with
the store and loader of ``--baseline-ref`` (one ``.pt`` file per utterance in one folder, keys from
path and modification time, every chunk submitted to the pool at once, batches built between
steps), all in one run.

    python benchmarks/scale.py [--sizes 1,4,16] [--baseline-ref f103772] [--workers 2]

For each size N it builds a LibriSpeech-layout corpus of N copies of the shared sample in a
temporary folder (symbolic links to the real audio under new speaker ids, transcripts rewritten
to the new utterance ids: the keys differ, the audio is real), then, each step in a fresh process
so that its peak RSS is its own:

- extraction into the new store and into the old one: audio-s per wall-s, peak RSS of the
  process and of its largest worker, files, bytes and the most files in one folder;
- one epoch of batches (the project's ``batch_seconds``) through the DataLoader over the new store
  with 0, 1 and 2 workers and through the old loader over the old store: audio-s per second, time
  to the first batch, peak RSS.

Then it projects disk, files and extraction time per core to 100 h and 960 h of training audio
with the default speed perturbation (0.9/1.1: 3.02x the audio). Writes
``data/08_reporting/benchmarks/scale.json``. Space: about 58 MB per audio-hour per store (16x:
about 3 GB each, deleted at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from common import (
    PROJECT_ROOT,
    REPORT_DIR,
    librispeech_dir,
    old_module,
    project_params,
    write_report,
)

SUBSETS = ("train-clean-100", "dev-clean", "dev-clean-2")
EXTENSIONS = ("flac", "mp3")
SPEED_FACTOR = 1 + 1 / 0.9 + 1 / 1.1  # the audio extracted with speed_perturbation [0.9, 1.1]


def audio_headers(source: Path, subsets: list[str]) -> dict[str, tuple[int, int]]:
    """``(num_samples, sample_rate)`` of each usable utterance of ``source``, read once (an MP3's
    length takes a pass over the file: re-reading the copies' would dominate the benchmark)."""
    from asr_pipeline.corpus.librispeech import scan

    items = scan(source, subsets, list(EXTENSIONS))
    return {
        i.utterance_id: (i.num_samples, i.sample_rate)
        for i in items
        if i.path and i.transcript and not i.audio_issue
    }


def build_corpus(
    source: Path, subsets: list[str], copies: int, target: Path, headers: dict
) -> None:
    """``copies`` copies of ``source``'s subsets as one LibriSpeech subset under ``target``:
    speaker ``s`` of copy ``c`` becomes ``c * 10000 + s``, each file a symbolic link; and
    ``manifest.json``, what the steps read instead of scanning the copies again."""
    manifest = []
    for subset in subsets:
        for chapter in sorted((source / subset).glob("*/*")):
            speaker_id, chapter_id = chapter.parent.name, chapter.name
            lines = (chapter / f"{speaker_id}-{chapter_id}.trans.txt").read_text().splitlines()
            for copy in range(copies):
                speaker = str(copy * 10000 + int(speaker_id))
                folder = target / "train-clean-100" / speaker / chapter_id
                folder.mkdir(parents=True, exist_ok=True)
                renamed = []
                for line in lines:
                    old_id, text = line.split(" ", 1)
                    new_id = f"{speaker}-{chapter_id}-{old_id.rsplit('-', 1)[1]}"
                    audio = next(chapter.glob(f"{old_id}.*"), None)
                    if audio is None or old_id not in headers:
                        continue
                    link = folder / f"{new_id}{audio.suffix}"
                    link.symlink_to(audio.resolve())
                    renamed.append(f"{new_id} {text}")
                    num_samples, sample_rate = headers[old_id]
                    manifest.append(
                        {"utterance_id": new_id, "path": str(link), "transcript": text,
                         "num_samples": num_samples, "sample_rate": sample_rate}
                    )  # fmt: skip
                (folder / f"{speaker}-{chapter_id}.trans.txt").write_text("\n".join(renamed) + "\n")
    (target / "manifest.json").write_text(json.dumps(manifest))


def corpus_items(corpus: Path) -> list[SimpleNamespace]:
    """The corpus's utterances, as :func:`build_corpus` listed them."""
    return [SimpleNamespace(**item) for item in json.loads((corpus / "manifest.json").read_text())]


def peak_rss() -> dict[str, float]:
    """Peak RSS (MB) of this process, and of its largest child process (workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"rss_mb": own, "worker_rss_mb": children, "peak_rss_mb": max(own, children)}


def store_files(store: Path) -> dict[str, float]:
    files, size, most = 0, 0, 0
    for folder, _, names in os.walk(store):
        most = max(most, len(names))
        files += len(names)
        size += sum(os.path.getsize(os.path.join(folder, name)) for name in names)
    return {"files": files, "bytes": size, "max_files_per_dir": most}


def extract_stage(args: argparse.Namespace) -> dict:
    """In a fresh process: extract the corpus into a new or an old store."""
    import asr_pipeline.datasets  # noqa: F401 - the same modules loaded for both stores
    from asr_pipeline.audio.extraction import ExtractionJob, ExtractionPlan, cache_key
    from asr_pipeline.audio.features import FeatureConfig
    from asr_pipeline.datasets.feature_store import FeatureStoreDataset

    extraction = old_module(args.baseline_ref, "audio/extraction.py", "old_extraction")
    old_store = old_module(args.baseline_ref, "datasets/feature_store.py", "old_feature_store")

    config = FeatureConfig.from_params(project_params("feature_engineering")["features"])
    items = corpus_items(args.corpus)
    audio_s = sum(i.num_samples / i.sample_rate for i in items)
    start = time.perf_counter()
    if args.store_kind == "new":
        shard_mb = project_params("feature_engineering")["features"]["shard_mb"]
        jobs = tuple(
            ExtractionJob(
                cache_key(i.utterance_id, i.path, config), i.path, i.num_samples / i.sample_rate
            )
            for i in items
        )
        FeatureStoreDataset(str(args.store)).save(
            ExtractionPlan(jobs, config, args.workers, shard_mb)
        )
    else:
        jobs = [
            extraction.ExtractionJob(
                extraction.cache_key(i.utterance_id, i.path, config), i.path,
                i.num_samples / i.sample_rate,
            )
            for i in items
        ]  # fmt: skip
        dataset = old_store.FeatureStoreDataset(str(args.store))
        for results in extraction.extract_in_workers(jobs, config, args.workers, 16):
            dataset.save({r.key: r.features for r in results if r.features is not None})
    wall = time.perf_counter() - start
    return {"audio_s": audio_s, "wall_s": wall, "audio_s_per_wall_s": audio_s / wall,
            **peak_rss(), **store_files(args.store)}  # fmt: skip


def load_stage(args: argparse.Namespace) -> dict:
    """In a fresh process: one epoch of training batches from a store."""
    import pandas as pd
    import torch

    from asr_pipeline.audio.features import FeatureConfig, NormalisationStats
    from asr_pipeline.corpus.buckets import bucket_batches
    from asr_pipeline.datasets.feature_store import FeatureStoreDataset
    from asr_pipeline.trainer.augment import SpecAugment
    from asr_pipeline.trainer.batching import UtteranceDataset
    from asr_pipeline.trainer.loader import LoaderSettings, batch_loader
    from asr_pipeline.units.characters import normalise

    config = FeatureConfig.from_params(project_params("feature_engineering")["features"])
    training = project_params("training")["training"]
    items = {i.utterance_id: i for i in corpus_items(args.corpus)}
    stats = NormalisationStats([0.0] * config.n_features, [1.0] * config.n_features, 1, True)
    old_store = old_module(args.baseline_ref, "datasets/feature_store.py", "old_feature_store")
    batching = old_module(args.baseline_ref, "trainer/batching.py", "old_batching")
    old_augment = old_module(args.baseline_ref, "trainer/augment.py", "old_augment")
    start = time.perf_counter()
    if args.store_kind == "new":
        features = FeatureStoreDataset(str(args.store)).load()
        keys = list(features)
        frames = features.num_frames(keys).tolist()
    else:
        features = old_store.FeatureStoreDataset(str(args.store)).load()
        keys = list(features)
        frames = [features[key].shape[-1] for key in keys]  # the old index step: a read each
    index_s = time.perf_counter() - start
    ids = [key.split(".")[0] for key in keys]
    index = pd.DataFrame(
        {"utterance_id": ids, "feature_key": keys, "num_frames": frames,
         "text": [normalise(items[i].transcript)[0] for i in ids], "speed": 1.0}
    )  # fmt: skip
    fps = config.sample_rate / config.hop_length
    batches = bucket_batches(index.num_frames.tolist(), int(training["batch_seconds"] * fps), 1)
    torch.set_num_threads(1)  # loading alone: one core per worker, the parent on one
    if args.loader == "old":
        loader = batching.BatchLoader(
            index, features, stats, old_augment.SpecAugment(**training["spec_augment"])
        )
        stream = loader.iterate(batches)
    else:
        augment = SpecAugment(**training["spec_augment"])
        dataset = UtteranceDataset(index, features, stats, augment, seed=1)
        stream = batch_loader(dataset, batches, LoaderSettings(args.loader_workers, 2))
    start = time.perf_counter()
    first, total, after_first = None, 0, 0
    for batch in stream:
        frames_in_batch = int(batch.feature_lengths.sum())
        if first is None:
            first = time.perf_counter()
        else:
            after_first += frames_in_batch
        total += frames_in_batch
    end = time.perf_counter()
    return {
        "index_s": index_s,
        "batches": len(batches),
        "audio_s_per_s": total / fps / (end - start),
        "steady_audio_s_per_s": after_first / fps / (end - first),
        "first_batch_s": first - start,
        **peak_rss(),
    }


def run_stage(*arguments: str) -> dict:
    """This script in a fresh process for one step; its JSON line back."""
    command = [sys.executable, __file__, *arguments]
    output = subprocess.run(command, capture_output=True, text=True, check=False)
    if output.returncode:
        sys.exit(f"{' '.join(arguments)} failed:\n{output.stderr[-4000:]}")
    return json.loads(output.stdout.strip().splitlines()[-1])


def projection(extraction: dict, workers: int) -> dict:
    """Disk, files and extraction time for 100 h and 960 h of training audio with speed copies."""
    hours = extraction["audio_s"] / 3600
    per_core = extraction["audio_s_per_wall_s"] / workers
    return {
        f"{target}h": {
            "disk_gb": extraction["bytes"] / hours * target * SPEED_FACTOR / 1e9,
            "files": round(extraction["files"] / hours * target * SPEED_FACTOR),
            "extraction_core_hours": target * SPEED_FACTOR * 3600 / per_core / 3600,
        }
        for target in (100, 960)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--librispeech-dir")
    parser.add_argument("--sizes", default="1,4,16")
    parser.add_argument("--subsets", default=",".join(SUBSETS), help="what one copy holds")
    parser.add_argument("--baseline-ref", default="f103772", help="the commit of the old store")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPORT_DIR / "scale.json")
    # one step, in a fresh process (used by the benchmark itself)
    parser.add_argument("--stage", choices=("extract", "load"))
    parser.add_argument("--store-kind", choices=("new", "old"))
    parser.add_argument("--loader", choices=("new", "old"))
    parser.add_argument("--loader-workers", type=int, default=0)
    parser.add_argument("--corpus", type=Path)
    parser.add_argument("--store", type=Path)
    args = parser.parse_args()
    if args.stage:
        stage = extract_stage if args.stage == "extract" else load_stage
        print(json.dumps(stage(args)))
        return

    root = librispeech_dir(args.librispeech_dir)
    sizes = [int(size) for size in args.sizes.split(",")]
    common = ["--baseline-ref", args.baseline_ref, "--workers", str(args.workers)]
    report: dict = {"baseline_ref": args.baseline_ref, "workers": args.workers, "sizes": {}}
    headers = audio_headers(root, args.subsets.split(","))
    with tempfile.TemporaryDirectory(prefix="scale-benchmark-", dir=PROJECT_ROOT / "data") as tmp:
        for size in sizes:
            corpus = Path(tmp) / f"corpus-{size}x"
            build_corpus(root, args.subsets.split(","), size, corpus, headers)
            figures: dict = {}
            for kind in ("new", "old"):
                store = Path(tmp) / f"store-{kind}-{size}x"
                where = ["--corpus", str(corpus), "--store", str(store), "--store-kind", kind]
                figures[f"extract_{kind}"] = run_stage("--stage", "extract", *where, *common)
                hours = figures[f"extract_{kind}"]["audio_s"] / 3600
                figures[f"extract_{kind}"]["files_per_audio_hour"] = (
                    figures[f"extract_{kind}"]["files"] / hours
                )
                figures[f"extract_{kind}"]["mb_per_audio_hour"] = (
                    figures[f"extract_{kind}"]["bytes"] / hours / 2**20
                )
                loaders = [("new", w) for w in (0, 1, 2)] if kind == "new" else [("old", 0)]
                for loader, workers in loaders:
                    name = f"load_{loader}_w{workers}" if loader == "new" else "load_old"
                    figures[name] = run_stage(
                        "--stage", "load", *where, "--loader", loader,
                        "--loader-workers", str(workers), *common,
                    )  # fmt: skip
                subprocess.run(["rm", "-rf", str(store)], check=True)
            report["sizes"][f"{size}x"] = figures
            new, old = figures["extract_new"], figures["extract_old"]
            print(
                f"{size:3d}x {new['audio_s'] / 3600:6.1f} h | extraction audio-s/s new "
                f"{new['audio_s_per_wall_s']:6.0f} old {old['audio_s_per_wall_s']:6.0f} | peak RSS "
                f"new {new['peak_rss_mb']:5.0f} MB old {old['peak_rss_mb']:5.0f} MB | files new "
                f"{new['files']} (max {new['max_files_per_dir']}/dir) old {old['files']} | MB per "
                f"audio-h new {new['mb_per_audio_hour']:.1f} old {old['mb_per_audio_hour']:.1f}",
                flush=True,
            )
            print(
                "     loading audio-s/s: "
                + ", ".join(
                    f"{name[5:]} {figures[name]['audio_s_per_s']:.0f} (first batch "
                    f"{figures[name]['first_batch_s']:.2f} s, "
                    f"RSS {figures[name]['peak_rss_mb']:.0f} MB)"
                    for name in ("load_new_w0", "load_new_w1", "load_new_w2", "load_old")
                ),
                flush=True,
            )

    def most_files(step: str) -> int:
        return max(figures[step]["max_files_per_dir"] for figures in report["sizes"].values())

    smallest, largest = report["sizes"][f"{sizes[0]}x"], report["sizes"][f"{sizes[-1]}x"]
    ratio_label = f"{sizes[-1]}x_over_{sizes[0]}x"
    report.update(
        {
            f"rss_ratio_extraction_{ratio_label}": largest["extract_new"]["peak_rss_mb"]
            / smallest["extract_new"]["peak_rss_mb"],
            f"rss_ratio_loading_{ratio_label}": largest["load_new_w0"]["peak_rss_mb"]
            / smallest["load_new_w0"]["peak_rss_mb"],
            f"old_rss_ratio_extraction_{ratio_label}": largest["extract_old"]["peak_rss_mb"]
            / smallest["extract_old"]["peak_rss_mb"],
            f"old_rss_ratio_loading_{ratio_label}": largest["load_old"]["peak_rss_mb"]
            / smallest["load_old"]["peak_rss_mb"],
            "max_files_per_dir": most_files("extract_new"),
            "old_max_files_per_dir": most_files("extract_old"),
            "loader_audio_s_per_s_per_worker": largest["load_new_w1"]["steady_audio_s_per_s"],
            "loader_speedup_new_over_old": largest["load_new_w2"]["audio_s_per_s"]
            / largest["load_old"]["audio_s_per_s"],
            "projection_new": projection(largest["extract_new"], args.workers),
            "projection_old": projection(largest["extract_old"], args.workers),
        }
    )  # fmt: skip
    for key in (f"rss_ratio_extraction_{ratio_label}", f"rss_ratio_loading_{ratio_label}",
                f"old_rss_ratio_extraction_{ratio_label}", f"old_rss_ratio_loading_{ratio_label}",
                "max_files_per_dir", "old_max_files_per_dir", "loader_audio_s_per_s_per_worker",
                "loader_speedup_new_over_old"):  # fmt: skip
        print(
            f"{key}: {report[key]:.3f}"
            if isinstance(report[key], float)
            else f"{key}: {report[key]}"
        )
    for kind in ("new", "old"):
        for target, p in report[f"projection_{kind}"].items():
            print(f"projection {kind} {target}: {p['disk_gb']:.0f} GB, {p['files']:,} files, "
                  f"{p['extraction_core_hours']:.1f} core-hours of extraction")  # fmt: skip
    write_report(report, args.out)


if __name__ == "__main__":
    sys.exit(main())
