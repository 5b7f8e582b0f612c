"""The word LM held gzip-compressed (asr_pipeline.decoding.compressed_arpa): in the catalog, in the
model bundle and on its way to KenLM, never whole as text."""

from __future__ import annotations

import gzip
import io

import pytest
import torch
from kedro.io import DatasetError

from asr_pipeline.datasets import CompressedArpaDataset
from asr_pipeline.decoding.compressed_arpa import CompressedArpa
from asr_pipeline.decoding.ctc import BeamSearchConfig, BeamSearchDecoder
from asr_pipeline.decoding.language_model import arpa_vocabulary, build_arpa, write_arpa
from asr_pipeline.decoding.sphinx_lm import SphinxLM, SphinxNgrams
from asr_pipeline.model.bundle import LM_KEY, bundle_lm, with_beam_search
from asr_pipeline.units.characters import CharacterUnits

CORPUS = ["the cat sat on the mat", "a dog sat", "the dog ran"]


@pytest.fixture(scope="module")
def arpa() -> str:
    return build_arpa(CORPUS, order=3)


def test_compressed_text_reads_back_exactly_and_is_a_gzip_file(arpa, tmp_path) -> None:
    packed = CompressedArpa.from_text(arpa)
    assert packed.text() == arpa
    assert gzip.decompress(packed.data).decode("utf-8") == arpa  # what zcat reads
    # compressed piece by piece (a writer's chunks) it is the same bytes: a reproducible bundle
    pieces = [arpa[i : i + 7] for i in range(0, len(arpa), 7)]
    assert CompressedArpa.from_chunks(pieces) == packed
    assert write_arpa(packed, tmp_path / "lm.arpa").read_text(encoding="utf-8") == arpa
    assert arpa_vocabulary(packed) == arpa_vocabulary(arpa)
    assert sorted(arpa_vocabulary(packed)) == ["a", "cat", "dog", "mat", "on", "ran", "sat", "the"]


def test_a_large_lm_compresses_to_a_fraction_of_its_text() -> None:
    words = [f"w{i}" for i in range(20_000)]
    text = build_arpa([" ".join(words[i : i + 12]) for i in range(0, len(words), 3)], order=3)
    assert len(CompressedArpa.from_text(text)) < len(text) / 3


def test_damaged_or_foreign_bytes_are_clear_errors(arpa, tmp_path) -> None:
    with pytest.raises(ValueError, match="damaged gzip-compressed ARPA"):
        list(CompressedArpa(b"not gzip at all").lines())
    cut = CompressedArpa(CompressedArpa.from_text(arpa).data[:-30])
    with pytest.raises(ValueError, match="damaged gzip-compressed ARPA"):
        cut.write(tmp_path / "cut.arpa")
    with pytest.raises(ValueError, match="no \\\\1-grams: section"):
        arpa_vocabulary(CompressedArpa.from_text("just some words\n"))
    with pytest.raises(ValueError, match="no \\\\1-grams: section"):
        arpa_vocabulary("just some words\n")


def test_every_damaged_byte_is_a_clear_error_or_harmless(arpa, tmp_path) -> None:
    # a flipped byte trips gzip's CRC, its header checks or zlib itself (zlib.error is no
    # OSError): whichever, the caller gets the one ValueError
    data = CompressedArpa.from_text(arpa).data
    for at in range(len(data)):
        damaged = CompressedArpa(data[:at] + bytes([data[at] ^ 0x55]) + data[at + 1 :])
        for read in (lambda lm: lm.write(tmp_path / "lm.arpa"), lambda lm: list(lm.lines())):
            try:
                read(damaged)
            except ValueError as error:
                assert "damaged gzip-compressed ARPA" in str(error)
    assert "data=" not in repr(CompressedArpa(data))  # 30 MB never lands in a log line


def test_the_dataset_saves_atomically_and_refuses_what_is_not_gzip(arpa, tmp_path) -> None:
    path = tmp_path / "models" / "word_lm.arpa.gz"
    dataset = CompressedArpaDataset(filepath=str(path))
    with pytest.raises(DatasetError, match="does not exist"):
        dataset.load()
    dataset.save(CompressedArpa.from_text(arpa))
    assert dataset.load().text() == arpa
    assert [p.name for p in path.parent.iterdir()] == ["word_lm.arpa.gz"]  # no temporary left
    with pytest.raises(DatasetError, match="expected a CompressedArpa"):
        dataset.save(arpa)
    path.write_text(arpa)
    with pytest.raises(DatasetError, match="not gzip-compressed"):
        dataset.load()


def test_sphinx_lm_chunks_join_to_the_same_arpa_whatever_their_size() -> None:
    vocabulary = ["<s>", "</s>", "the", "cat", "sat"]
    unigrams = SphinxNgrams(
        torch.arange(5)[:, None].numpy(), -torch.arange(1.0, 6.0).numpy(), -torch.ones(5).numpy()
    )
    bigrams = SphinxNgrams(
        torch.tensor([[0, 2], [2, 3], [3, 4], [4, 1]]).numpy(), -torch.ones(4).numpy(), None
    )
    lm = SphinxLM(vocabulary, [unigrams, bigrams])
    whole = "".join(lm.arpa_chunks(ngrams_per_chunk=10**6))
    assert "".join(lm.arpa_chunks(ngrams_per_chunk=1)) == whole == lm.arpa()
    assert whole.startswith("\\data\\\nngram 1=5\nngram 2=4\n\n\\1-grams:\n-1.0000\t<s>\t-1.0000\n")
    assert whole.endswith("-1.0000\tsat </s>\n\n\\end\\\n")


def test_the_bundle_carries_the_lm_compressed_and_old_bundles_still_decode(arpa) -> None:
    bundle = {"format": 3, "units": CharacterUnits().to_dict(), "vocabulary": []}
    config = BeamSearchConfig(
        beam_size=4, lm_weight=1.0, word_score=0.0, lm_order=3, background_words=0, lexicon=True
    )
    kept = with_beam_search(bundle, config, arpa, {"split": None})
    packed = kept["decoder"][LM_KEY]
    assert packed.dtype == torch.uint8 and "lm_arpa" not in kept["decoder"]
    # a tensor travels through torch.save / weights_only loading byte for byte
    buffer = io.BytesIO()
    torch.save(kept, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    assert bundle_lm(loaded["decoder"]).text() == arpa
    # bundles saved before kept the text itself: they are read as they are
    assert bundle_lm({"beam": {}, "lm_arpa": arpa}) == arpa
    with pytest.raises(ValueError, match="carries no language model"):
        bundle_lm({"beam": {}})
    # the decoder reads both alike
    emissions = torch.log_softmax(torch.randn(1, 20, 29), dim=-1)
    lengths = torch.tensor([20])
    from_packed = BeamSearchDecoder.from_arpa(config, bundle_lm(loaded["decoder"]))
    from_text = BeamSearchDecoder.from_arpa(config, arpa)
    assert from_packed(emissions, lengths) == from_text(emissions, lengths)
