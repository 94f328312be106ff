"""hear_matpac: MATPAC / MATPAC++ audio embeddings through the HEAR 2021 API."""
from .version import __version__
from .api import get_scene_embeddings, get_timestamp_embeddings, load_model

__all__ = ["load_model", "get_scene_embeddings", "get_timestamp_embeddings", "__version__"]
