"""A pretrained BERT encoder fine-tuned with the task heads: MiniLM-L6 (``lakedl data fetch --source
minilm`` → ``data/raw/minilm/model``), loaded offline with ``transformers`` (``AutoModel``, weights from
safetensors; nothing is fetched from a hub).

Its input is the shards' ``ids`` column written by the text ETL with ``tokenize.kind: minilm`` (the
model's own WordPiece vocabulary, ``[CLS] … [SEP]``); the attention mask comes from the lengths, so
padding never changes the result. The encoder's ``config.json`` is copied into this family's config, so
a checkpoint rebuilds the architecture without the pretrained files (the weights come from the
checkpoint). The task heads are ours, not ``AutoModelForSequenceClassification``'s single head, so the
multitask losses and masks work unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from dl.models.base import ModelConfig, TaskHeads, length_mask, masked_pool
from etl.core.errors import InputError, MissingInput


class BertConfig(ModelConfig):
    """A pretrained BERT-style encoder (MiniLM) fine-tuned with the task heads."""

    DATA_FIELDS: ClassVar[tuple[str, ...]] = ("vocab_size", "encoder", "pad_id")
    REQUIRED_DATA: ClassVar[tuple[str, ...]] = ("vocab_size",)
    vocab_size: int | None = Field(None, ge=1, description="ids in the shards' tokenizer (set from the data)")
    pretrained: str | None = Field(None, description="encoder directory (config.json + model.safetensors); "
                                   "default <paths.raw_dir>/minilm/model (`lakedl data fetch --source minilm`)")
    pooling: Literal["mean", "cls"] = Field("mean", description="mean: how all-MiniLM-L6-v2 was trained")
    dropout: float = Field(0.1, ge=0, lt=1, description="before the heads; the encoder keeps its own dropout")
    freeze_layers: int = Field(0, ge=-1, description="freeze the embeddings and the first N layers (-1: all)")
    encoder: dict[str, Any] | None = None  # the encoder's config.json, filled when the pretrained model loads
    pad_id: int = 0


def _encoder(cfg: BertConfig) -> nn.Module:
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # "some weights were not used (the pooler)" is expected, not news
    hf_logging.disable_progress_bar()
    if cfg.encoder is None and not cfg.pretrained:
        raise InputError("bert needs model.bert.pretrained: the directory `lakedl data fetch --source minilm` "
                         "writes (data/raw/minilm/model)")
    if cfg.encoder is not None:  # rebuilding from a checkpoint: the architecture only
        spec = dict(cfg.encoder)
        return AutoModel.from_config(AutoConfig.for_model(spec.pop("model_type"), **spec), add_pooling_layer=False)
    path = Path(cfg.pretrained).expanduser()
    if not (path / "config.json").is_file():
        raise MissingInput(f"model.bert.pretrained={cfg.pretrained}: no config.json there; run "
                                "`lakedl data fetch --source minilm` (it writes data/raw/minilm/model)")
    model = AutoModel.from_pretrained(str(path), local_files_only=True, add_pooling_layer=False)
    cfg.encoder = {k: v for k, v in model.config.to_dict().items()
                   if k not in ("_name_or_path", "architectures", "transformers_version", "torch_dtype", "dtype")}
    return model


class BertClassifier(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = _encoder(cfg)
        size = self.encoder.config.vocab_size
        if cfg.vocab_size != size:
            raise InputError(f"the shards' tokenizer has {cfg.vocab_size} ids but the pretrained encoder has {size}: "
                             "run the text ETL with tokenize.kind=minilm for this model")
        self._freeze(cfg.freeze_layers)
        self.drop = nn.Dropout(cfg.dropout)
        self.heads = TaskHeads(self.encoder.config.hidden_size)

    def _freeze(self, n: int) -> None:
        if n == 0:
            return
        layers = self.encoder.encoder.layer
        frozen = [self.encoder.embeddings, *(layers if n < 0 else layers[:n])]
        for module in frozen:
            module.requires_grad_(False)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        mask = length_mask(ids, lengths)
        h = self.encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # (B, T, H)
        pooled = h[:, 0] if self.cfg.pooling == "cls" else masked_pool(h, mask, "mean")
        return self.heads(self.drop(pooled))
