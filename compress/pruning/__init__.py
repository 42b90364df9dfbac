"""Pruning, split along its seams: how important a channel is (``importance``), how a model is cut
(``channels``, ``semistructured``), how far to cut for a budget (``budget``), and which layers can
take it (``sensitivity``). The ``prune`` and ``sparsify`` steps orchestrate these pieces."""
