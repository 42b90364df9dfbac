"""Train a WordPiece vocabulary on train texts when a text model comes without a tokenizer.

BERT's recipe (uncased normalisation, whitespace-and-punctuation pre-tokenizer, ``[CLS] A [SEP]
B [SEP]`` with token type ids), trained with the `tokenizers` library and saved as a Hugging Face
tokenizer directory that ``transformers.AutoTokenizer`` loads offline.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from compress.errors import InputError, MissingDependency

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def train_wordpiece(
    texts: Sequence[str],
    out_dir: str | Path,
    *,
    vocab_size: int = 8000,
    min_frequency: int = 2,
    lowercase: bool = True,
    model_max_length: int = 512,
):
    """Train on ``texts`` (the train split only: never held-out), save to ``out_dir``, return it
    loaded as a ``PreTrainedTokenizerFast``."""
    try:
        from tokenizers import (
            Tokenizer,
            decoders,
            models,
            normalizers,
            pre_tokenizers,
            processors,
            trainers,
        )
    except ImportError as err:
        raise MissingDependency("tokenizers", "transformers", "Training a WordPiece tokenizer") from err
    try:
        from transformers import PreTrainedTokenizerFast
    except ImportError as err:
        raise MissingDependency("transformers", "transformers", "Saving a trained tokenizer") from err
    if not texts:
        raise InputError("cannot train a tokenizer on no texts: the train split is empty")
    if vocab_size <= len(SPECIAL_TOKENS):
        raise InputError(f"tokenizer vocab_size must exceed {len(SPECIAL_TOKENS)}, got {vocab_size}")
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=model_max_length,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out_dir))
    return fast
