"""The model lifecycle: data, training, evaluation, export and safe loading."""

from sentiment_model.artifact import (
    ArtifactNotFoundError,
    ChecksumMismatchError,
    CorruptArtifactError,
    MetadataError,
    ModelLoadError,
    ModelVersionWarning,
    Prediction,
    SentimentModel,
    UntrustedTypeError,
    default_model_dir,
    export_model,
    load_model,
)

__all__ = [
    "ArtifactNotFoundError",
    "ChecksumMismatchError",
    "CorruptArtifactError",
    "MetadataError",
    "ModelLoadError",
    "ModelVersionWarning",
    "Prediction",
    "SentimentModel",
    "UntrustedTypeError",
    "default_model_dir",
    "export_model",
    "load_model",
]
