"""Options, sampling helpers, the error table and the argv parser."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from serving.errors import (
    ContextLengthError,
    InjectedFaultError,
    InvalidRequestError,
    ModelNotFoundError,
    OverloadedError,
    RequestTimeoutError,
    UnsupportedParameterError,
    error_body,
    error_headers,
    http_status,
)
from serving.runtime.config import ConfigError, EngineConfig, FaultConfig, SamplingParams
from serving.runtime.sampling import _top_p_filter, choose_tokens, find_stop, holdback

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_batch_size": 0}, "--max_batch_size must be >= 1"),
        ({"max_queue": 0}, "--max_queue must be >= 1"),
        ({"max_batch_wait_ms": -1}, "--max_batch_wait_ms must be >= 0"),
        ({"request_timeout_s": 0}, "--request_timeout_s must be > 0"),
        ({"max_prompt_tokens": 64, "max_total_tokens": 64}, "must be below --max_total_tokens"),
        ({"kv_cache": "paged"}, "--kv_cache must be one of slots, concat, got 'paged'"),
    ],
)
def test_engine_config_refuses_bad_values(kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        EngineConfig(**kwargs).validate()


@pytest.mark.parametrize("flag, value, message", [
    ("--kv_cache", "paged", "error: --kv_cache must be one of slots, concat, got 'paged'"),
    ("--max_batch_size", "0", "error: --max_batch_size must be >= 1, got 0"),
])  # fmt: skip
def test_a_bad_server_flag_exits_2_with_one_line(tmp_path, flag, value, message):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "serving", "--model_dir", str(tmp_path), flag, value],
                         cwd=REPO, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [message]


def test_engine_config_resolves_limits_from_model_context():
    cfg = EngineConfig().resolved(128)
    assert (cfg.max_total_tokens, cfg.max_prompt_tokens) == (128, 127)
    with pytest.raises(ConfigError, match="exceeds the model's context length 128"):
        EngineConfig(max_total_tokens=500).resolved(128)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"latency_ms": -1}, "--fault_latency_ms"), ({"error_rate": 1.5}, "--fault_error_rate must be within")],
)
def test_fault_config_refuses_bad_values(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        FaultConfig(**kwargs).validate()
    assert not FaultConfig().enabled


@pytest.mark.parametrize(
    "kwargs, param",
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 4, "temperature": 3}, "temperature"),
        ({"max_tokens": 4, "top_p": 0}, "top_p"),
        ({"max_tokens": 4, "stop": ("a", "b", "c", "d", "e")}, "stop"),
        ({"max_tokens": 4, "stop": ("",)}, "stop"),
    ],
)
def test_sampling_params_name_the_bad_parameter(kwargs, param):
    with pytest.raises(InvalidRequestError) as info:
        SamplingParams(**kwargs).validate()
    assert info.value.param == param and param in info.value.message


def test_greedy_and_ignore_eos_rows_in_one_call():
    logits = torch.tensor([[0.0, 5.0, 1.0], [9.0, 1.0, 2.0]])
    params = [SamplingParams(max_tokens=1, temperature=0), SamplingParams(max_tokens=1, temperature=0, ignore_eos=True)]
    assert choose_tokens(logits, params, [torch.Generator(), torch.Generator()], eos_token_id=0) == [1, 2]


def test_seeded_sampling_repeats_and_top_p_keeps_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    p = SamplingParams(max_tokens=1, temperature=1.0, top_p=0.8)
    draws = [choose_tokens(logits.clone(), [p], [torch.Generator().manual_seed(s)], None)[0] for s in range(200)]
    assert set(draws) == {0, 1}  # 0.5 + 0.3 reaches 0.8: tokens 2 and 3 never drawn
    again = [choose_tokens(logits.clone(), [p], [torch.Generator().manual_seed(s)], None)[0] for s in range(200)]
    assert draws == again
    filtered = _top_p_filter(torch.tensor([0.5, 0.3, 0.15, 0.05]), 0.8)
    assert torch.allclose(filtered, torch.tensor([0.625, 0.375, 0.0, 0.0]))


def test_stop_helpers():
    assert find_stop("hello world", ["wor", "lo"]) == 3
    assert find_stop("hello", ["x"]) == -1
    assert holdback("the end is ne", ["near"]) == 2  # "ne" may become "near"
    assert holdback("abc", ["xyz"]) == 0


@pytest.mark.parametrize(
    "exc, status, kind",
    [
        (InvalidRequestError("m"), 400, "invalid_request_error"),
        (UnsupportedParameterError("m"), 400, "invalid_request_error"),
        (ContextLengthError("m"), 400, "invalid_request_error"),
        (ModelNotFoundError("m"), 404, "not_found_error"),
        (OverloadedError("m"), 429, "rate_limit_error"),
        (RequestTimeoutError("m"), 504, "timeout_error"),
        (InjectedFaultError("m"), 500, "server_error"),
    ],
)
def test_error_table(exc, status, kind):
    assert http_status(exc) == (status, kind)
    assert set(error_body(exc)["error"]) == {"message", "type", "param", "code"}


def test_overloaded_carries_retry_after():
    assert error_headers(OverloadedError("full", retry_after_s=3)) == {"Retry-After": "3"}


def test_parser_extends_kserve_and_keeps_the_backend_flags():
    from serving.runtime.server import build_parser

    args = build_parser().parse_args(
        ["--model_dir", "/m", "--model_name", "n", "--model_version", "v", "--http_port", "9000",
         "--fault_latency_ms", "5", "--fault_error_rate", "0.25"]
    )  # fmt: skip
    assert (args.model_dir, args.model_name, args.model_version, args.http_port) == ("/m", "n", "v", 9000)
    assert (args.fault_latency_ms, args.fault_error_rate) == (5.0, 0.25)
    assert args.enable_grpc is False and args.max_batch_size == 16
    assert build_parser().parse_args([]).model_dir == "/mnt/models"


def test_dockerfile_copies_existing_paths_and_runs_an_existing_module():
    text = (REPO / "serving" / "Dockerfile").read_text()
    copies = [line.split()[1:-1] for line in text.splitlines() if line.startswith("COPY") and "--from" not in line]
    sources = [s for srcs in copies for s in srcs if not s.startswith("--")]
    assert sources, "the Dockerfile copies nothing"
    for src in sources:
        assert (REPO / src).exists(), f"Dockerfile COPYs {src}, which does not exist"
    assert 'ENTRYPOINT ["python", "-m", "serving"]' in text
    assert (REPO / "serving" / "__main__.py").is_file()
    assert re.search(r"^USER 1000", text, re.M)
    assert "EXPOSE 8080" in text


def test_model_load_refuses_missing_folder_pickle_weights_and_bad_dtype(tmp_path, model_copy):
    from serving.runtime.model import LLMModel, ModelLoadError

    with pytest.raises(ModelLoadError, match="does not exist; pass --model_dir"):
        LLMModel("m", tmp_path / "nope").load()
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(ModelLoadError, match="loads safetensors only"):
        LLMModel("m", tmp_path / "pickled").load()
    with pytest.raises(ModelLoadError, match="--dtype 'float99' is not a torch dtype"):
        LLMModel("m2", model_copy, torch_dtype="float99").load()


def test_event_loop_choice_follows_uvicorns_auto_rule():
    import uvloop

    from serving.runtime.server import event_loop_factory

    assert event_loop_factory("auto") is uvloop.new_event_loop
    assert event_loop_factory("uvloop") is uvloop.new_event_loop
    assert event_loop_factory("asyncio") is None


def test_asking_for_uvloop_without_it_names_the_fix(monkeypatch):
    import sys

    from serving.runtime.server import event_loop_factory

    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert event_loop_factory("auto") is None  # auto falls back to asyncio
    with pytest.raises(SystemExit, match=r"--event-loop uvloop: uvloop is not installed \(pip install uvloop\)"):
        event_loop_factory("uvloop")
