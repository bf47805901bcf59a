from pipelines.cli import main


def test_import_command_prints_digest(tiny_model, tmp_path, capsys):
    assert main(["import", str(tiny_model), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "digest:      sha256:" in out and "GPT2LMHeadModel" in out


def test_import_command_refusal_is_a_user_error(model_copy, tmp_path, capsys):
    (model_copy / "weights.pt").write_bytes(b"x")
    assert main(["import", str(model_copy), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "llmops import: error:" in err and "--allow-pickle" in err and "Traceback" not in err


def test_evaluate_command_exit_code_follows_the_gate(micro_model, task_data, tmp_path, capsys):
    rc = main(["evaluate", str(micro_model), str(task_data["eval"]), "--out", str(tmp_path / "ev"),
               "--min-accuracy", "50", "--max-examples", "4"])
    assert rc == 1
    assert "gate:        FAILED" in capsys.readouterr().out
    assert main(["evaluate", str(micro_model), str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "ev")]) == 2
    assert "file not found" in capsys.readouterr().err
