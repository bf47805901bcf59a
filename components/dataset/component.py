"""KFP component of the dataset step: calls :func:`components.dataset.prepare_dataset`."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from components.images import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def prepare_dataset(source: str, train: Output[Dataset], eval_data: Output[Dataset]) -> str:
    """Materialise ``source`` (bootstrap://tasks, folder, s3://, gs://) as train/eval JSONL; returns the train sha256."""
    import shutil

    from components.dataset import prepare_dataset as run_prepare

    ds = run_prepare(source, train.path + ".d")
    shutil.move(str(ds.train), train.path)
    shutil.move(str(ds.eval), eval_data.path)
    train.metadata.update({"source": source, "sha256": ds.train_sha256})
    eval_data.metadata.update({"source": source, "sha256": ds.eval_sha256})
    return ds.train_sha256
