import pytest

from components.dataset import DatasetSourceError, prepare_dataset


def test_bootstrap_tasks_with_sizes(tmp_path):
    ds = prepare_dataset("bootstrap://tasks?train=50&eval=10&seed=3", tmp_path)
    assert len(ds.train.read_text().splitlines()) == 50
    assert len(ds.eval.read_text().splitlines()) == 10
    again = prepare_dataset("bootstrap://tasks?train=50&eval=10&seed=3", tmp_path / "again")
    assert again.train_sha256 == ds.train_sha256


def test_local_folder_is_copied(tmp_path):
    src = tmp_path / "src"
    prepare_dataset("bootstrap://tasks?train=5&eval=5", src)
    ds = prepare_dataset(str(src), tmp_path / "out")
    assert ds.train.read_text() == (src / "train.jsonl").read_text()
    assert prepare_dataset(f"file://{src}", tmp_path / "out2").eval_sha256 == ds.eval_sha256


@pytest.mark.parametrize(
    "source, message",
    [
        ("ftp://x/y", "unknown dataset scheme 'ftp://'.*known: bootstrap://tasks"),
        ("bootstrap://tasks?size=3", "unknown option\\(s\\) size"),
        ("bootstrap://tasks?train=abc", "train='abc'.*is not an integer"),
        ("bootstrap://tasks?train=0", "must be positive"),
        ("bootstrap://other", "use bootstrap://tasks"),
    ],
)
def test_bad_sources_are_refused(tmp_path, source, message):
    with pytest.raises(DatasetSourceError, match=message):
        prepare_dataset(source, tmp_path)


def test_missing_split_named(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.jsonl").write_text("{}\n")
    with pytest.raises(DatasetSourceError, match="has no eval.jsonl"):
        prepare_dataset(str(tmp_path / "src"), tmp_path / "out")
    with pytest.raises(DatasetSourceError, match="does not exist"):
        prepare_dataset(str(tmp_path / "nope"), tmp_path / "out")
