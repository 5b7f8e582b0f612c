"""Custom Kedro datasets for what kedro-datasets does not hold: tensors, MLflow tags, word lists,
a pronunciation dictionary, a compressed ARPA LM, a Sphinx binary LM and the registered model's
version."""

from .compressed_arpa import CompressedArpaDataset
from .feature_store import FeatureStoreDataset, StaleFeaturesDataset
from .mlflow_tags import MlflowTagsDataset
from .model_bundle import ModelBundleDataset
from .pronunciations import PronunciationDictionaryDataset
from .registered_model import MlflowRegisteredModelDataset
from .sphinx_lm import SphinxLMDataset
from .torch_dataset import TorchDataset
from .word_frequencies import WordFrequencyDataset

__all__ = [
    "CompressedArpaDataset",
    "FeatureStoreDataset",
    "MlflowRegisteredModelDataset",
    "MlflowTagsDataset",
    "ModelBundleDataset",
    "PronunciationDictionaryDataset",
    "SphinxLMDataset",
    "StaleFeaturesDataset",
    "TorchDataset",
    "WordFrequencyDataset",
]
