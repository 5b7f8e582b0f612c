"""inference: audio files or LibriSpeech ids -> transcripts with a registered model.

kedro run --pipelines inference --params "inference.inputs=1089-134686-0000 my.wav"
"""

from kedro.pipeline import Node, Pipeline

from .nodes import resolve_audio_inputs, transcribe_audio


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                resolve_audio_inputs,
                inputs=["params:inference", "params:librispeech"],
                outputs="audio_inputs",
                name="resolve_audio_inputs",
            ),
            Node(
                transcribe_audio,
                inputs=["inference_model", "audio_inputs", "params:inference"],
                outputs="transcriptions",
                name="transcribe_audio",
            ),
        ]
    )
