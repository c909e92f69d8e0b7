"""`python -m local_server --prepare`: the model is prepared before class and the command ends (no server)."""
from local_server import __main__ as cli


def test_prepare_readies_the_model_and_exits_without_serving(tiny_model, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "LocalServer", None)  # a server would fail loudly: --prepare must not start one
    assert cli.main(["--prepare", "--model", str(tiny_model), "--model-cache-dir", str(tmp_path / "cache")]) == 0
    shown = capsys.readouterr().out
    assert "모델 준비 끝" in shown and str(tiny_model) in shown and "GB" in shown


def test_the_conversion_parses_the_gguf_once(monkeypatch):
    """transformers opens the GGUF three times (config, weights, tokenizer); each parse of Gemma's 262,144-token
    vocabulary took ~10 s here, so the conversion shares one reader (73.8 s → 47.6 s for --prepare)."""
    import gguf

    from local_server import base_model

    opened = []
    monkeypatch.setattr(gguf, "GGUFReader", lambda path, *args, **kwargs: opened.append(path) or object())
    with base_model._one_gguf_parse():
        first, again, other = gguf.GGUFReader("a.gguf"), gguf.GGUFReader("a.gguf"), gguf.GGUFReader("b.gguf")
    assert first is again and other is not first and opened == ["a.gguf", "b.gguf"]
    assert gguf.GGUFReader("a.gguf") is not first  # the library's own reader is back after the conversion
