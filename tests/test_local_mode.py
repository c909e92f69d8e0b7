"""MODE = "local": connect() 가 이 과정의 로컬 서버를 하위 프로세스로 띄우고(작은 무작위 Gemma 3), 다음 connect() 는
그 서버를 다시 쓰고, 띄운 쪽이 표준 입력 파이프를 닫으면(커널이 끝나면) 서버도 끝납니다."""
from helpers import course, local, modes, paths
from tests.net import free_port, wait_until


def test_local_mode_starts_the_server_once_reuses_it_and_it_ends_with_its_stdin(tiny_model, tmp_path, monkeypatch,
                                                                                 capsys):
    for name in (*modes.SETTING_NAMES, modes.MODE_ENV):
        monkeypatch.delenv(name, raising=False)
    port = free_port()
    monkeypatch.setenv("COURSE_LOCAL_PORT", str(port))
    monkeypatch.setenv("COURSE_LOCAL_DATA_DIR", str(tmp_path / "server-data"))
    monkeypatch.setenv("COURSE_LOCAL_MODEL", str(tiny_model))
    monkeypatch.setattr(paths, "OUTPUT_DIR", tmp_path / "output")
    monkeypatch.setattr(local, "_started", [])  # 이 테스트가 띄운 것만
    try:
        client = course.connect("local", "nb")
        shown = capsys.readouterr().out
        assert "로컬 서버를 띄우고" in shown
        assert f"▶ 로컬(local) 모드: 이 컴퓨터의 오픈 웨이트 모델 {tiny_model.name} (장치: cpu)" in shown
        (process,) = local._started
        assert process.poll() is None and course.mode_of(client) == "local"
        assert str(client.base_url) == f"http://127.0.0.1:{port}/v1/"
        assert course.base_model(client, "auto") == ("tiny-gemma0", True)
        assert (tmp_path / "server-data" / "state.sqlite3").is_file()  # COURSE_LOCAL_DATA_DIR 를 씀

        again = course.connect("local", "nb2")  # 다음 노트북(또는 같은 커널의 다시 실행)
        shown = capsys.readouterr().out
        assert "로컬 서버를 띄우고" not in shown and "▶ 로컬(local) 모드" in shown and "tiny-gemma0" in shown
        assert local._started == [process]  # 두 번째 프로세스는 없음
        assert [m.id for m in again.models.list()] == ["tiny-gemma0"]

        process.stdin.close()  # 커널이 끝나면(강제로 죽어도) 운영체제가 닫는 파이프
        assert process.wait(timeout=60) == 0
        assert local.health(port) is None
        assert "로컬 미세 조정 서버" in (tmp_path / "output" / "local_server.log").read_text(encoding="utf-8")
    finally:
        for started in local._started:
            if started.poll() is None:
                started.kill()
                started.wait()


def test_local_mode_waits_for_the_previous_server_to_let_go_of_the_data_dir(tiny_model, tmp_path, monkeypatch, capsys):
    """After a kernel restart the old kernel's server may still be ending (it holds the data dir): start again."""
    import threading

    from local_server.server import lock_data_dir

    for name in (*modes.SETTING_NAMES, modes.MODE_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COURSE_LOCAL_PORT", str(free_port()))
    monkeypatch.setenv("COURSE_LOCAL_DATA_DIR", str(tmp_path / "server-data"))
    monkeypatch.setenv("COURSE_LOCAL_MODEL", str(tiny_model))
    monkeypatch.setattr(paths, "OUTPUT_DIR", tmp_path / "output")
    monkeypatch.setattr(local, "_started", [])
    held = lock_data_dir(tmp_path / "server-data")  # the "previous server"
    log = tmp_path / "output" / "local_server.log"

    def let_go_once_refused():  # the previous server ends only after the new one was refused once
        wait_until(lambda: log.is_file() and local.DATA_DIR_BUSY in log.read_text(encoding="utf-8", errors="replace"),
                   60, "the new server to be refused")
        held.close()

    threading.Thread(target=let_go_once_refused, daemon=True).start()
    try:
        server = local.ensure_server()
        assert server.started_here and capsys.readouterr().out.count("로컬 서버를 띄우고") >= 2  # refused, then started
        (process,) = local._started
        assert process.poll() is None
    finally:
        for process in local._started:
            process.stdin.close()
            process.wait(30)
