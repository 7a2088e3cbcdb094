"""Backbones (C-RADIO students, frozen teachers), projection heads, and the one checkpoint loader."""

from radio.models.registry import ModelInfo, create_model, get_model_info, list_models, register_model

__all__ = ["ModelInfo", "create_model", "get_model_info", "list_models", "register_model"]
