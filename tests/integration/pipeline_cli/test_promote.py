"""``llmops promote`` against a real (embedded SQLite) MLflow and the Kubernetes API emulator.

The emulator's stand-in KServe controller fills ``status`` after every write;
the canary's metrics come from :class:`ScriptedMetrics`, injected through
:func:`pipelines.promote.promote` (the library the CLI calls).
"""

from __future__ import annotations

import shutil
import uuid

import pytest

from pipelines import promote as lib
from pipelines.cli import main
from serving.backends.factory import make_backend
from serving.isvc import render_isvc
from serving.rollout.controller import predictor_version
from serving.rollout.hooks import MlflowHooks
from tests.support.kube_emulator import KubeEmulator
from tests.support.rollout_fakes import NAME, NS, ScriptedMetrics, strategy

pytestmark = pytest.mark.integration

DIGEST1 = "sha256:" + "1" * 64
DIGEST2 = "sha256:" + "2" * 64
IMAGE1 = f"registry.example.com/llmops/llm@{DIGEST1}"
IMAGE2 = f"registry.example.com/llmops/llm@{DIGEST2}"


@pytest.fixture(scope="module")
def registry(tmp_path_factory, micro_model):
    """v1 (image 1, champion), v2 (image 2, challenger), v3 (no image)."""
    from model_registry import add_lineage, promote, register_model, set_challenger

    uri = f"sqlite:///{(tmp_path_factory.mktemp('mlflow') / 'mlflow.db').as_posix()}"
    name = f"llm-{uuid.uuid4().hex[:8]}"
    versions = []
    for i in (1, 2, 3):
        folder = tmp_path_factory.mktemp(f"v{i}") / "model"
        shutil.copytree(micro_model, folder)
        (folder / "notes.txt").write_text(f"v{i}")  # distinct content digests
        versions.append(register_model(folder, name, tracking_uri=uri, pipeline_run_id=f"run-{i}").version)
    assert versions == ["1", "2", "3"]
    add_lineage(name, "1", tracking_uri=uri, image_ref=IMAGE1)
    add_lineage(name, "2", tracking_uri=uri, image_ref=IMAGE2)
    promote(name, "1", trigger="test setup", tracking_uri=uri)
    set_challenger(name, "2", tracking_uri=uri)
    return uri, name


@pytest.fixture
def kube():
    with KubeEmulator(namespace=NS) as emulator:
        yield emulator


@pytest.fixture
def backend(kube):
    import kubernetes

    return make_backend("kserve", api_client=kubernetes.client.ApiClient(kube.client_configuration()), namespace=NS)


def _seed_v1(backend):
    target = lib.PromoteTarget(model="m", version="1", image_ref=IMAGE1)
    return backend.apply(render_isvc(lib.service_spec(target, NAME, NS, cpu="1", memory="1Gi")))


def _cli(kube, tmp_path, registry, *extra):
    uri, model = registry
    return ["promote", "--model", model, "--name", NAME, "--namespace", NS, "--backend", "kserve",
            "--kubeconfig", kube.write_kubeconfig(tmp_path / "kubeconfig"), "--tracking-uri", uri,
            "--cpu", "1", "--memory", "1Gi", *extra]


def _changed(diff: str) -> tuple[list[str], list[str]]:
    lines = [ln for ln in diff.splitlines() if not ln.startswith(("---", "+++"))]
    return [ln[1:].strip() for ln in lines if ln.startswith("-")], [ln[1:].strip() for ln in lines if ln.startswith("+")]


def test_dry_run_prints_the_exact_diff_and_changes_nothing(kube, backend, registry, tmp_path, capsys):
    seeded = _seed_v1(backend)
    calls_before = len(kube.calls)
    summary = tmp_path / "summary.md"
    rc = main(_cli(kube, tmp_path, registry, "--alias", "challenger", "--steps", "20,60,100", "--interval", "30",
                   "--summary-file", str(summary), "--dry-run"))
    out = capsys.readouterr().out
    assert rc == 0
    assert f"promote {registry[1]} v2 (@challenger) onto inferenceservice {NS}/{NAME}" in out
    assert "steps:      20%, 60%, 100%" in out
    assert "interval:   30s x 1 per step" in out
    assert "max_latency_ratio        1.25" in out and "min_requests             50" in out
    diff = out[out.index(f"--- inferenceservice/{NS}/{NAME} (current)"):out.index("dry run: nothing was changed")]
    assert f"+++ inferenceservice/{NS}/{NAME} (canary at 20%)" in diff
    removed, added = _changed(diff)
    # exactly the predictor's version and image change, the canary weight appears, and the predictor gets the
    # kit's account (its imagePullSecrets pull the private modelcar; the current service was made without it)
    assert sorted(removed) == sorted(["- --model_version=1", "storageUri: oci://" + IMAGE1, "value: '1'"]), diff
    assert sorted(added) == sorted(["- --model_version=2", "canaryTrafficPercent: 20", "storageUri: oci://" + IMAGE2,
                                    "value: '2'", "serviceAccountName: llmops-predictor"]), diff
    # nothing written: same resourceVersion, only reads
    after = kube.object(NAME)
    assert after["metadata"]["resourceVersion"] == seeded["metadata"]["resourceVersion"]
    assert predictor_version(after["spec"]["predictor"]) == "1"
    assert {verb for verb, _ in kube.calls[calls_before:]} == {"get"}
    assert "```diff" in summary.read_text() and "canaryTrafficPercent: 20" in summary.read_text()


def test_dry_run_for_a_new_service_prints_the_whole_object(kube, registry, tmp_path, capsys):
    rc = main(_cli(kube, tmp_path, registry, "--version", "2", "--dry-run"))
    out = capsys.readouterr().out
    assert rc == 0
    assert f"inferenceservice {NS}/{NAME} does not exist; it would be created with v2" in out
    assert "+kind: InferenceService" in out and f"+      storageUri: oci://{IMAGE2}" in out
    assert "canaryTrafficPercent" not in out
    assert ("create", "inferenceservices") not in kube.calls
    with pytest.raises(KeyError):
        kube.object(NAME)


def test_promote_drives_the_canary_to_the_end(kube, backend, registry):
    uri, model = registry
    _seed_v1(backend)
    target = lib.resolve_target(model, alias="challenger", tracking_uri=uri)
    assert (target.version, target.storage_uri) == ("2", "oci://" + IMAGE2)
    spec = lib.service_spec(target, NAME, NS, cpu="1", memory="1Gi")
    clock = [1_000_000.0]
    weights = []

    def sleep(s):
        clock[0] += s
        spec_now = kube.object(NAME)["spec"]["predictor"]
        if spec_now.get("canaryTrafficPercent") not in (None, *weights[-1:]):
            weights.append(spec_now["canaryTrafficPercent"])

    result = lib.promote(
        target, backend, spec, strategy(quality_probe=False), ScriptedMetrics(backend, NAME, NS, standin=kube.standin),
        hooks=MlflowHooks(model, uri), holder="ci", clock=lambda: clock[0], sleep=sleep,
    )
    try:
        assert (result.outcome, result.exit_code) == ("promoted", 0), result.reason
        assert weights == [10, 25, 50, 100]
        final = kube.object(NAME)
        assert predictor_version(final["spec"]["predictor"]) == "2"
        assert final["spec"]["predictor"]["model"]["storageUri"] == "oci://" + IMAGE2
        assert "canaryTrafficPercent" not in final["spec"]["predictor"]
        from model_registry import get_champion

        assert get_champion(model, tracking_uri=uri).version == "2"
        rows = dict(lib.summary_lines(target, spec, result))
        assert rows["outcome"] == "PROMOTED" and rows["exit code"] == "0"
    finally:
        from model_registry import promote, set_challenger

        promote(model, "1", trigger="test reset", tracking_uri=uri)  # back for the other tests
        set_challenger(model, "2", tracking_uri=uri)


def test_cli_first_deployment_promotes_and_writes_the_summary(kube, registry, tmp_path, capsys):
    uri, model = registry
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    rc = main(_cli(kube, tmp_path, registry, "--version", "1", "--metrics", "prometheus",
                   "--prometheus-url", "http://127.0.0.1:9", "--no-quality", "--report-dir", str(tmp_path / "r"),
                   "--summary-file", str(summary)))
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "outcome   : PROMOTED" in out and f"model     : {model} v1" in out
    assert predictor_version(kube.object(NAME)["spec"]["predictor"]) == "1"
    md = summary.read_text()
    assert md.startswith("earlier step\n") and "### llmops promote: PROMOTED" in md and f"| model | {model} v1 |" in md


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--version", "3"], "v3 has no image recorded (lineage key 'image_ref'); run the pipeline's image step or `llmops build-image`"),
        (["--version", "2", "--alias", "challenger"], "give exactly one of --version N or --alias NAME (e.g. --alias challenger), not both"),
        ([], "give exactly one of --version N or --alias NAME (e.g. --alias challenger), none was given"),
        (["--version", "9"], "9"),
        (["--alias", "nope"], "has no version or alias '@nope'"),
    ],
)
def test_bad_input_exits_2_with_the_fix(kube, registry, tmp_path, capsys, extra, message):
    rc = main(_cli(kube, tmp_path, registry, *extra, "--dry-run"))
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("llmops promote: error: ") and message in err, err
    assert kube.calls == []


def test_unknown_model_exits_2(kube, registry, tmp_path, capsys):
    argv = _cli(kube, tmp_path, registry, "--version", "1", "--dry-run")
    argv[argv.index("--model") + 1] = "no-such-model"
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "no-such-model" in err and "llmops promote: error:" in err
