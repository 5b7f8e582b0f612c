"""Custom Kedro datasets for what kedro-datasets does not hold: tensors and MLflow tags."""

from .feature_store import FeatureStore, FeatureStoreDataset
from .mlflow_tags import MlflowTagsDataset
from .model_bundle import ModelBundleDataset
from .torch_dataset import TorchDataset

__all__ = [
    "FeatureStore",
    "FeatureStoreDataset",
    "MlflowTagsDataset",
    "ModelBundleDataset",
    "TorchDataset",
]
