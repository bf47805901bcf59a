"""Fine-tune a causal LM (full or LoRA) on prompt/completion or chat JSONL.

Public API: :class:`FinetuneConfig`, :func:`finetune`, :class:`FinetuneResult`,
:func:`load_dataset`, and the :class:`FinetuneError` tree (see :mod:`.errors`).
"""

from components.finetune.config import FinetuneConfig
from components.finetune.data import TokenizedDataset, load_dataset, read_records
from components.finetune.errors import CheckpointError, DatasetError, FinetuneConfigError, FinetuneError
from components.finetune.trainer import FinetuneResult, finetune

__all__ = [
    "CheckpointError",
    "DatasetError",
    "FinetuneConfig",
    "FinetuneConfigError",
    "FinetuneError",
    "FinetuneResult",
    "TokenizedDataset",
    "finetune",
    "load_dataset",
    "read_records",
]
