"""Hugging Face ``datasets`` as text sources: ``hf-disk:DIR[@SPLIT]`` (``load_from_disk``) and
``hf-dataset:NAME[/CONFIG]@SPLIT`` (``load_dataset``: the local cache, or the Hub when reachable)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compress.errors import InputError, MissingDependency
from compress.sources.text import TextSamples, _label_ids
from compress.sources.text_splits import _check_columns, _columns


def open_dataset(scheme: str, ref: str, base_dir, where: str):
    """The ``datasets.Dataset`` of an ``hf-disk:`` or ``hf-dataset:`` reference (one split)."""
    try:
        import datasets
    except ImportError as err:
        raise MissingDependency("datasets", "datasets", f"Reading {scheme}: data") from err
    if scheme == "hf-disk":
        from compress.sources.models import resolve

        directory, _, split = ref.partition("@")
        path = resolve(directory, base_dir)
        if not path.is_dir():
            raise InputError(f"{where}: dataset directory {str(path)!r} does not exist")
        try:
            ds = datasets.load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as err:
            raise InputError(f"{where}: {path} is not a dataset saved with save_to_disk: {err}") from err
    else:
        name, at, split = ref.partition("@")
        if not at or not split:
            raise InputError(f"{where}: hf-dataset:{ref} needs a split: hf-dataset:NAME[/CONFIG]@SPLIT, "
                             "e.g. hf-dataset:glue/sst2@validation")
        # NAME/CONFIG (glue/sst2), or OWNER/NAME/CONFIG for a Hub id with an owner
        name, _, config = name.rpartition("/") if "/" in name else (name, "", "")
        try:
            return datasets.load_dataset(name, config or None, split=split)
        except Exception as err:  # offline, unknown name or split: the library's reason, and the way out
            raise InputError(
                f"{where}: cannot load the Hugging Face dataset {name!r}"
                f"{f' (config {config!r})' if config else ''} split {split!r}: {type(err).__name__}: "
                f"{str(err).splitlines()[0][:300]}. It is read from the local cache (~/.cache/huggingface) "
                "or the Hub when reachable; offline, save it once with dataset.save_to_disk(DIR) on a "
                "connected machine and use hf-disk:DIR@SPLIT"
            ) from None
    if isinstance(ds, datasets.DatasetDict):
        if not split:
            raise InputError(f"{where}: {ref} holds splits {', '.join(ds)}: name one, hf-disk:DIR@SPLIT")
        if split not in ds:
            raise InputError(f"{where}: {ref.partition('@')[0]} has no split {split!r}; splits: {', '.join(ds)}")
        return ds[split]
    if split:
        raise InputError(f"{where}: {ref.partition('@')[0]} is a single dataset, not a dict of splits: drop @{split}")
    return ds


def from_dataset(ds, source: str, text_cfg, names, where: str, labelled: bool) -> TextSamples:
    """The samples of a dataset's text column(s) and label column (a ClassLabel's names kept)."""
    columns = _columns(text_cfg.column)
    label_column = text_cfg.label_column if labelled or text_cfg.label_column in ds.column_names else None
    _check_columns(ds.column_names, columns, label_column, source, where)
    if len(ds) == 0:
        raise InputError(f"{where}: {source} has no samples")
    texts = [str(t) for t in ds[columns[0]]]
    pairs = [str(t) for t in ds[columns[1]]] if len(columns) == 2 else None
    if label_column is None:
        return TextSamples(Path(source), texts, pairs, np.zeros(len(texts), np.int64), list(names or ["0"]))
    feature = ds.features[label_column]
    raw = list(ds[label_column])
    if getattr(feature, "names", None):  # a ClassLabel: ids with names
        raw = [feature.names[i] if isinstance(i, int) and i >= 0 else str(i) for i in raw]
        names = names if names is not None else list(feature.names)
    labels, names = _label_ids([str(v).strip() for v in raw], names, Path(source), where)
    return TextSamples(Path(source), texts, pairs, labels, names)
