"""Nodes of the evaluation pipeline.

Decoders that give words are scored by WER and CER. A phone model's greedy decoding gives phones:
it is scored by its phone error rate (PER) against the reference's phones (the model's lexicon,
completed by the pronunciation dictionary; utterances with a word neither knows are left out of
the PER and counted), beside the WER/CER of its beam search, which gives words.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import matplotlib
import pandas as pd
from mlflow.tracking import MlflowClient

from asr_pipeline.common.settings import check_settings
from asr_pipeline.decoding.metrics import (
    error_rates,
    unit_error_rates,
    utterance_error_rates,
    utterance_unit_error_rate,
)
from asr_pipeline.model.recognizer import Recognizer
from asr_pipeline.model.scores import acoustic_scores
from asr_pipeline.serving.registry import champion_version, load_bundle
from asr_pipeline.units.base import Units, UnitsError
from asr_pipeline.units.phones import PhoneUnits

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

logger = logging.getLogger(__name__)

# The ``evaluation`` parameters (parameters_evaluation.yml); any other key is refused, so that a
# misspelt setting fails the run instead of being ignored.
EVALUATION_SETTINGS = frozenset(
    {"split", "decoders", "batch_seconds", "champion_alias", "promotion_metric", "threads"}
)


def _scoring_units(
    units: Units, pronunciations: pd.DataFrame | None, references: pd.Series
) -> Units:
    """The units that turn ``references`` into the model's units: a phone model's own lexicon
    (the words of its LM) completed by the dictionary, so that test words outside it are scored
    too. Only the references' words are kept: both lexicons whole (~125,000 words) would hold
    ~50 MB while the test split decodes, for the few thousand words a test split has."""
    if isinstance(units, PhoneUnits) and pronunciations is not None:
        words = {word for text in references for word in text.split()}
        wanted = pronunciations.word.astype(str).str.strip().str.lower().isin(words)
        entries = pronunciations.loc[wanted, ["word", "pronunciation"]]
        return units.restricted_to(words).with_pronunciations(
            entries.itertuples(index=False, name=None)
        )
    return units


def _reference_units(units: Units, text: str) -> str:
    """``text`` in the model's units, or "" when a word has no pronunciation (not scored)."""
    try:
        return units.reference_units(text)
    except UnitsError:
        return ""


def transcribe_split(
    acoustic_model: dict[str, Any],
    manifest_splits: pd.DataFrame,
    params: dict[str, Any],
    pronunciations: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Transcribe every utterance of the evaluated split from its audio, with each decoder.

    Features are computed from the audio with the model's own feature settings, exactly as when
    serving, so any registered model can be evaluated on any LibriSpeech folder. The beam search
    is the model's own: its LM and the settings tuned for it when it was trained. A decoder that
    gives phones gets ``<name>_per`` instead of ``_wer`` / ``_cer``, and the reference's phones
    (``reference_units``) are kept beside it.
    """
    check_settings("evaluation", params, EVALUATION_SETTINGS)
    recognizer = Recognizer(acoustic_model, threads=params.get("threads"))
    by_units = [name for name in params["decoders"] if not recognizer.gives_words(name)]
    test = manifest_splits[manifest_splits.split == params["split"]].reset_index(drop=True)
    if test.empty:
        raise ValueError(f"the manifest has no {params['split']!r} utterances to evaluate")
    scoring = _scoring_units(recognizer.units, pronunciations, test.text) if by_units else None
    decoders = {name: recognizer.decoder(name) for name in params["decoders"]}
    rows = []
    for kept, log_probs, lengths in acoustic_scores(
        recognizer, test, params["batch_seconds"], "evaluating"
    ):
        hypotheses = {name: decode(log_probs, lengths) for name, decode in decoders.items()}
        for i, item in enumerate(kept):
            row = {
                "utterance_id": item.utterance_id,
                "subset": item.subset,
                "speaker_id": item.speaker_id,
                "duration_s": item.duration_s,
                "reference": item.text,
            }
            if scoring is not None:
                row["reference_units"] = _reference_units(scoring, item.text)
            for name, texts in hypotheses.items():
                row[f"{name}_hypothesis"] = texts[i]
                if name in by_units:
                    row[f"{name}_per"] = utterance_unit_error_rate(row["reference_units"], texts[i])
                else:
                    wer, cer = utterance_error_rates(item.text, texts[i])
                    row |= {f"{name}_wer": wer, f"{name}_cer": cer}
            rows.append(row)
    if not rows:
        raise ValueError(f"none of the {len(test)} {params['split']!r} utterances could be read")
    return pd.DataFrame(rows)


# The corpus error rates a decoder is scored by: words and characters, or phones.
SCORES = ("wer", "cer", "per")


def _decoder_names(transcripts: pd.DataFrame) -> list[str]:
    return [c.removesuffix("_hypothesis") for c in transcripts.columns if c.endswith("_hypothesis")]


def _rates(part: pd.DataFrame, name: str) -> dict[str, Any]:
    """Corpus WER/CER of decoder ``name`` on ``part``, or its PER when it gives phones (over the
    utterances whose reference has phones; how many had none is said)."""
    hypotheses = part[f"{name}_hypothesis"]
    if f"{name}_per" not in part:
        return error_rates(part.reference.tolist(), hypotheses.tolist()).to_dict()
    scored = part.reference_units.str.strip().astype(bool)
    unscored = {"utterances_without_pronunciation": int((~scored).sum())}
    if not scored.any():
        return {"per": float("nan"), **unscored}
    rates = unit_error_rates(part.reference_units[scored].tolist(), hypotheses[scored].tolist())
    return rates.to_dict() | unscored


def score_transcripts(
    evaluation_transcripts: pd.DataFrame, acoustic_model: dict[str, Any], params: dict[str, Any]
) -> tuple[dict[str, Any], pd.DataFrame, dict[str, list[dict[str, float]]]]:
    """Corpus WER/CER per decoder (PER for one that gives phones), overall and by subset and
    speaker, and the MLflow metrics."""
    t = evaluation_transcripts.fillna("")
    report: dict[str, Any] = {
        "model": acoustic_model.get("source", ""),
        "split": params["split"],
        "utterances": len(t),
        "audio_hours": float(t.duration_s.sum() / 3600),
        "test_data": _test_data_id(t),
        "decoders": {},
    }
    breakdown = []
    for name in _decoder_names(t):
        rates = report["decoders"][name] = _rates(t, name)
        for level in ("subset", "speaker_id"):
            for value, part in t.groupby(level):
                breakdown.append(
                    {
                        "decoder": name,
                        "level": level,
                        "value": str(value),
                        "utterances": len(part),
                        **_rates(part, name),
                    }
                )
        logger.info(
            "%s decoding: %s on %d %s utterances",
            name,
            ", ".join(f"{m.upper()} {100 * rates[m]:.1f}%" for m in SCORES if m in rates),
            len(t),
            params["split"],
        )
    metrics = {
        f"{params['split']}_{name}_{metric}": [{"value": float(values[metric]), "step": 0}]
        for name, values in report["decoders"].items()
        for metric in SCORES
        if metric in values
    }
    return report, pd.DataFrame(breakdown), metrics


def _test_data_id(transcripts: pd.DataFrame) -> str:
    """Identifies the evaluation data, so that only scores on the same data are compared."""
    payload = "\n".join(sorted(transcripts.utterance_id + "|" + transcripts.reference))
    return hashlib.sha1(payload.encode()).hexdigest()[:16]


def plot_evaluation(evaluation_transcripts: pd.DataFrame) -> plt.Figure:
    """CER by speaker and CER against duration, for the first decoder (greedy by default; PER
    when it gives phones)."""
    t = evaluation_transcripts
    name = _decoder_names(t)[0]
    metric = "per" if f"{name}_per" in t else "cer"
    rate = pd.to_numeric(t[f"{name}_{metric}"], errors="coerce") * 100  # unscored: NaN
    label = metric.upper()
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4), constrained_layout=True)
    by_speaker = rate.groupby(t.speaker_id).mean().sort_values()
    left.bar([str(s) for s in by_speaker.index], by_speaker.values)
    left.set(xlabel="speaker", ylabel=f"mean {label} %", title=f"{label} by speaker ({name})")
    left.tick_params(axis="x", rotation=60)
    right.scatter(t.duration_s, rate, s=8, alpha=0.6)
    right.set(xlabel="duration (s)", ylabel=f"{label} %", title=f"{label} against duration")
    return figure


def promote_model(
    evaluation_report: dict[str, Any],
    registered_model: dict[str, Any] | None,
    manifest_splits: pd.DataFrame,
    params: dict[str, Any],
) -> dict[str, Any]:
    """Tag the evaluated version with its scores; move the champion alias if it is better.

    ``registered_model`` is the version the report is about (``{"name", "version", ...}``, from
    the ``registered_model`` dataset), ``None`` when nothing was registered: then there is nothing
    to promote. Scores are compared only on the same test data (``test_data`` id); a champion never
    scored on it is scored now, so the decision is always like for like.
    """
    if registered_model is None:
        source = evaluation_report["model"]
        logger.warning("No registered version for %s: nothing to promote", source)
        return {"promoted": False, "reason": "no registered model version for this run"}
    client = MlflowClient()
    metric, alias = params["promotion_metric"], params["champion_alias"]
    name, version = registered_model["name"], registered_model["version"]
    data_id = evaluation_report["test_data"]
    # the first decoder scored by the metric (a phone model's greedy decoding has no WER)
    decoder = next((d for d, r in evaluation_report["decoders"].items() if metric in r), None)
    if decoder is None:
        reason = f"no decoder of this evaluation is scored by {metric}: nothing to compare"
        logger.warning("%s version %s: %s", name, version, reason)
        return {"promoted": False, "reason": reason}
    score = evaluation_report["decoders"][decoder][metric]
    tag = f"{evaluation_report['split']}.{data_id}.{decoder}.{metric}"
    client.set_model_version_tag(name, version, tag, f"{score:.6f}")
    for key, value in evaluation_report["decoders"][decoder].items():
        client.set_model_version_tag(
            name, version, f"{evaluation_report['split']}_{key}", f"{value:.6f}"
        )
    current = champion_version(client, name, alias)
    decision = {
        "model": name,
        "version": version,
        "metric": metric,
        "score": score,
        "decoder": decoder,
        "test_data": data_id,
        "previous_champion": current,
    }
    if current is None:
        reason = "first model: it becomes the champion"
    elif current == version:
        reason = "it already is the champion"
    else:
        champion_tags = client.get_model_version(name, current).tags
        if tag not in champion_tags:
            champion_score = _score_champion(name, current, decoder, manifest_splits, params)
            if champion_score is not None:
                client.set_model_version_tag(name, current, tag, f"{champion_score:.6f}")
        else:
            champion_score = float(champion_tags[tag])
        decision["champion_score"] = champion_score
        if champion_score is None:
            reason = (
                f"the champion (version {current}) gives no words with the {decoder} decoder "
                f"(a phone model): not compared; put beam first in evaluation.decoders"
            )
            logger.warning("Champion stays version %s: %s", current, reason)
            return decision | {"promoted": False, "reason": reason}
        if score < champion_score:
            reason = f"{metric} {score:.4f} beats the champion's {champion_score:.4f}"
        else:
            decision |= {
                "promoted": False,
                "reason": f"{metric} {score:.4f} does not beat the champion "
                f"(version {current}) with {champion_score:.4f}",
            }
            logger.info("Champion stays version %s: %s", current, decision["reason"])
            return decision
    if current != version:
        client.set_registered_model_alias(name, alias, version)
    logger.info("%s version %s is @%s: %s", name, version, alias, reason)
    return decision | {"promoted": current != version, "reason": reason}


def _score_champion(
    name: str,
    version: str,
    decoder: str,
    manifest_splits: pd.DataFrame,
    params: dict[str, Any],
) -> float | None:
    """The champion's metric on the same data, computed now (it was never scored on it); None
    when its ``decoder`` gives no words to score by it (a phone model's greedy decoding)."""
    uri = f"models:/{name}/{version}"
    logger.info("Scoring the champion %s on the same data to compare like for like", uri)
    bundle = load_bundle(uri)
    only_that = {**params, "decoders": [decoder]}  # its own beam search, as the challenger's
    transcripts = transcribe_split(bundle, manifest_splits, only_that)
    report, _, _ = score_transcripts(transcripts, bundle, only_that)
    return report["decoders"][decoder].get(params["promotion_metric"])
