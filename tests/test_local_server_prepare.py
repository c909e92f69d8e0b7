"""`python -m local_server --prepare`: the model is prepared before class and the command ends (no server)."""
from local_server import __main__ as cli


def test_prepare_readies_the_model_and_exits_without_serving(tiny_model, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "LocalServer", None)  # a server would fail loudly: --prepare must not start one
    assert cli.main(["--prepare", "--model", str(tiny_model), "--model-cache-dir", str(tmp_path / "cache")]) == 0
    shown = capsys.readouterr().out
    assert "모델 준비 끝" in shown and str(tiny_model) in shown and "GB" in shown
