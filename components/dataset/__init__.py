"""Dataset preparation: resolve a dataset source into train/eval JSONL files.

Sources::

    bootstrap://tasks[?train=N&eval=M&seed=S]   generated task data (offline)
    /path/to/folder or file:///path             a folder with train.jsonl and eval.jsonl
    s3://bucket/prefix, gs://bucket/prefix      the same layout in object storage (extras s3/gcs)

Errors::

    DatasetSourceError (ValueError)   unknown scheme, missing files, bad query
"""

from components.dataset.prepare import DatasetSourceError, PreparedDataset, prepare_dataset

__all__ = ["DatasetSourceError", "PreparedDataset", "prepare_dataset"]
