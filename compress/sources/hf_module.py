"""The torch wrappers of Hugging Face classifiers (``hf:`` sources): forward returns logits."""

from __future__ import annotations

from torch import nn


class HFClassifier(nn.Module):
    """A Hugging Face text classifier whose forward returns the logits tensor (not a ModelOutput)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    @property
    def config(self):
        return self.model.config

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None):
        # named parameters (not **kwargs), so that tracing for ONNX export binds inputs by name
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        return self.model(**{k: v for k, v in given.items() if v is not None}, return_dict=True).logits


class HFImageClassifier(HFClassifier):
    """A Hugging Face image classifier: one input, ``pixel_values``, given positionally or by name."""

    def forward(self, pixel_values):
        return self.model(pixel_values=pixel_values, return_dict=True).logits
