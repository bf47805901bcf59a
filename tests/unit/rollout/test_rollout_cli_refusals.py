"""``llmops rollout`` refuses bad input with exit code 2 and a message that names the fix."""

from __future__ import annotations

import pytest

from pipelines.cli import main

BASE = ["rollout", "--name", "chat", "--model-version", "2", "--storage-uri", "/models/v2"]


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--steps", "10,50"], "the last step must be 100"),
        (["--steps", "10,x,100"], "comma-separated list of integers"),
        (["--on-inconclusive", "maybe"], "unknown policy 'maybe'"),
        (["--interval", "60", "--lease-ttl", "10"], "shorter than one interval"),
        (["--backend", "kserve", "--kubeconfig", "/nonexistent/kubeconfig"], "--metrics scrape reads the model servers directly"),
        (["--metrics", "prometheus"], "--metrics prometheus needs --prometheus-url"),
        (["--metrics", "graphite"], "unknown metrics provider 'graphite'; known: prometheus, scrape"),
        (["--deployment-mode", "edge"], "unknown mode 'edge'"),
        (["--min-requests", "0"], "min_requests must be a positive integer"),
    ],
)
def test_refusals_exit_2_with_the_fix(extra, message, capsys, tmp_path):
    rc = main(BASE + ["--state-dir", str(tmp_path / "s"), "--no-quality"] + extra)
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err, err


def test_image_must_be_pinned_by_digest(capsys, tmp_path):
    rc = main(["rollout", "--name", "chat", "--model-version", "2", "--image", "ghcr.io/acme/llm:latest",
               "--state-dir", str(tmp_path), "--no-quality"])
    assert rc == 2 and "is not pinned by digest" in capsys.readouterr().err


def test_unknown_backend_lists_the_known_ones(capsys, tmp_path):
    rc = main(BASE + ["--backend", "nomad", "--no-quality"])
    assert rc == 2 and "unknown serving backend 'nomad'; known backends: kserve, local" in capsys.readouterr().err


def test_storage_uri_or_image_is_required(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["rollout", "--name", "chat", "--model-version", "2"])
    assert exc.value.code == 2
    assert "one of the arguments --storage-uri --image is required" in capsys.readouterr().err
