"""hear_matpac: MATPAC / MATPAC++ audio embeddings through the HEAR 2021 API."""
from .api import get_scene_embeddings, get_timestamp_embeddings, load_model

__all__ = ["load_model", "get_scene_embeddings", "get_timestamp_embeddings"]
__version__ = "0.1.0"
