"""Output-length predictor for SSJF scheduling: a BERT-family encoder plus a small head.

    from proxy_model import load_predictor, split_of
    p = load_predictor()                      # shipped default checkpoint
    p.predict(["Write a poem"])               # -> [predicted output tokens]
    split_of(prompt, p.info()["split"]["seed"])  # "train" | "val" | "test"
"""
from .data import BUCKET_UPPER_BOUNDS, DataError, split_of
from .predictor import DEFAULT_CHECKPOINT, Predictor, load_predictor

__all__ = ["BUCKET_UPPER_BOUNDS", "DEFAULT_CHECKPOINT", "DataError", "Predictor", "load_predictor", "split_of"]
