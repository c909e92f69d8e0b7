"""One local server for a class (issue 16, items 1 and 2): a key per student from a key file, each student's files,
jobs, events, checkpoints and models their own (another's are 404, as OpenAI's projects answer), the instructor's
key sees everything; a fair queue (round-robin by owner), a per-key limit on waiting jobs, and queue-place events."""
from __future__ import annotations

import csv
import json
import logging
import os
import sqlite3
import stat

import httpx2
import openai
import pytest

from local_server.keys import INSTRUCTOR, STUDENT, read_keys
from local_server.store import JOB_STARTED, SCHEMA, SCHEMA_VERSION, Store
from tests.net import wait_until
from tests.running_server import RunningServer, wait_for

TRAINING = b"".join(json.dumps({"messages": [{"role": "user", "content": f"질문 {i}"},
                                             {"role": "assistant", "content": f"답 {i}"}]}).encode() + b"\n"
                   for i in range(10))

PREFIX = "sk-local-"  # keys are written as PREFIX + … so this file holds no key-shaped string (the secret scan)


def make_key_file(path, students: int) -> dict[str, str]:
    """`python -m local_server --make-keys` as the instructor runs it; the file's {name: key}."""
    from local_server.__main__ import main

    assert main(["--make-keys", str(students), "--keys", str(path)]) == 0
    with open(path, newline="", encoding="utf-8") as f:
        return {row["name"]: row["key"] for row in csv.DictReader(f)}


@pytest.fixture
def classroom(tiny_model, tmp_path):
    """A server with --keys (two students and the instructor); jobs do not train (finish_without_training)."""
    from local_server.server import Settings

    keys = make_key_file(tmp_path / "keys.csv", 2)
    running = RunningServer(Settings(data_dir=tmp_path / "data", model=str(tiny_model), host="0.0.0.0",
                                     keys=read_keys(tmp_path / "keys.csv")), train=False)
    running.keys = keys
    running.alice, running.bob = running.client(keys["student01"]), running.client(keys["student02"])
    running.teacher = running.client(keys["instructor"])
    yield running
    running.close()


def upload(client):
    return client.files.create(file=("train.jsonl", TRAINING), purpose="fine-tune")


def not_found(call) -> dict:
    with pytest.raises(openai.NotFoundError) as caught:
        call()
    return caught.value.body


# ------------------------------------------------------------------------------------------------ the key file
def test_make_keys_writes_a_private_usable_file_says_how_to_hand_it_out_and_never_overwrites(tmp_path, capsys):
    from local_server.__main__ import main

    path = tmp_path / "keys.csv"
    keys = make_key_file(path, 3)
    said = capsys.readouterr().out
    assert list(keys) == ["student01", "student02", "student03", "instructor"]
    assert all(key.startswith("sk-local-") and len(key) >= 32 for key in keys.values())
    assert len(set(keys.values())) == 4
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    ring = read_keys(path)
    assert ring.identify(f"Bearer {keys['student02']}").name == "student02"
    assert ring.identify(f"Bearer {keys['instructor']}").role == INSTRUCTOR
    assert ring.identify(f"Bearer {keys['student01']}").role == STUDENT
    assert ring.identify(f"Bearer {PREFIX}not-in-the-file") is None
    assert "OPENAI_API_KEY=" in said and "OPENAI_BASE_URL=http://" in said and ":8765/v1" in said
    assert f"--keys {path}" in said
    assert not any(key in said for key in keys.values())  # the keys stay in the file
    assert not any(key in repr(ring) for key in keys.values())

    before = path.read_bytes()
    assert main(["--make-keys", "5", "--keys", str(path)]) == 2
    assert "덮어쓰지 않았습니다" in capsys.readouterr().err
    assert path.read_bytes() == before


@pytest.mark.parametrize("content, problem", [
    (f"name,key\nalice,{PREFIX}aaaaaaaaaaaaaaaa\n", "첫 줄"),
    (f"name,key,role\nalice,{PREFIX}aaaaaaaaaaaaaaaa,teacher\n", "role"),
    ("name,key,role\nalice,short,student\n", "16자"),
    (f"name,key,role\nalice,{PREFIX}aaaaaaaaaaaaaaaa,student\nalice,{PREFIX}bbbbbbbbbbbbbbbb,student\n", "이름"),
    ("name,key,role\n", "하나도"),
])
def test_a_bad_key_file_is_refused_naming_the_line(tmp_path, capsys, content, problem):
    from local_server.__main__ import main

    path = tmp_path / "keys.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(SystemExit) as exited:
        main(["--keys", str(path), "--port", "9"])
    assert exited.value.code == 2 and problem in capsys.readouterr().err


def test_keys_and_a_single_api_key_are_mutually_exclusive(tmp_path, capsys):
    from local_server.__main__ import main

    make_key_file(tmp_path / "keys.csv", 1)
    with pytest.raises(SystemExit):
        main(["--keys", str(tmp_path / "keys.csv"), "--api-key", "sk-class-key-123456"])
    assert "not allowed with argument" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ keys on requests
def test_every_request_but_health_needs_a_key_of_the_file(classroom):
    for key in (f"{PREFIX}not-in-the-file-123456", classroom.keys["student01"][:-1]):
        with pytest.raises(openai.AuthenticationError) as caught:
            classroom.client(key).models.list()
        assert caught.value.status_code == 401 and caught.value.body["code"] == "invalid_api_key"
        assert caught.value.body["type"] == "invalid_request_error"
    root = classroom.base_url.removesuffix("/v1")
    assert httpx2.get(f"{classroom.base_url}/files").status_code == 401  # no key at all
    assert httpx2.get(f"{root}/health").status_code == 200
    assert [m.id for m in classroom.alice.models.list()] == [classroom.model]  # the base model is everyone's


def test_a_student_sees_only_their_own_and_the_instructor_sees_everything(classroom, tmp_path):
    alice, bob, teacher = classroom.alice, classroom.bob, classroom.teacher
    store = classroom.local.store
    file = upload(alice)
    job = alice.fine_tuning.jobs.create(model=classroom.model, training_file=file.id, suffix="alice")
    model = classroom.finish_without_training(job.id)
    store.add_checkpoint(job.id, 5, f"{model}:ckpt-step-5", tmp_path / "ckpt", {"train_loss": 1.0})
    waiting = alice.fine_tuning.jobs.create(model=classroom.model, training_file=file.id)
    result_file = alice.fine_tuning.jobs.retrieve(job.id).result_files[0]
    bob_file = upload(bob)

    # alice: all of her own
    assert {f.id for f in alice.files.list()} == {file.id, result_file}
    assert {j.id for j in alice.fine_tuning.jobs.list()} == {job.id, waiting.id}
    assert {m.id for m in alice.models.list()} == {classroom.model, model, f"{model}:ckpt-step-5"}
    assert [c.step_number for c in alice.fine_tuning.jobs.checkpoints.list(job.id)] == [5]
    assert any("New fine-tuned model" in e.message for e in alice.fine_tuning.jobs.list_events(job.id))

    # bob: none of it, each answered exactly as a missing one is
    assert [f.id for f in bob.files.list()] == [bob_file.id]
    assert bob.fine_tuning.jobs.list().data == [] and [m.id for m in bob.models.list()] == [classroom.model]
    for kind, taken, missing in [
        ("file", lambda i: bob.files.retrieve(i), "file-missing000000000000000"),
        ("file", lambda i: bob.files.content(i), "file-missing000000000000000"),
        ("file", lambda i: bob.files.delete(i), "file-missing000000000000000"),
        ("job", lambda i: bob.fine_tuning.jobs.retrieve(i), "ftjob-missing0000000000000"),
        ("job", lambda i: bob.fine_tuning.jobs.cancel(i), "ftjob-missing0000000000000"),
        ("job", lambda i: bob.fine_tuning.jobs.list_events(i), "ftjob-missing0000000000000"),
        ("job", lambda i: bob.fine_tuning.jobs.checkpoints.list(i), "ftjob-missing0000000000000"),
        ("model", lambda i: bob.models.retrieve(i), f"ft:{classroom.model}:local::missing0"),
        ("model", lambda i: bob.models.delete(i), f"ft:{classroom.model}:local::missing0"),
        ("model", lambda i: bob.chat.completions.create(model=i, messages=[{"role": "user", "content": "hi"}]),
         f"ft:{classroom.model}:local::missing0"),
    ]:
        theirs = {"file": file.id, "job": waiting.id, "model": model}[kind]
        refused, absent = not_found(lambda: taken(theirs)), not_found(lambda: taken(missing))
        assert refused["code"] == absent["code"] and refused["message"] == absent["message"].replace(missing, theirs)
    # nor may bob train on her file or continue her model
    for params, param in [({"training_file": file.id}, "training_file"),
                          ({"training_file": bob_file.id, "validation_file": file.id}, "validation_file"),
                          ({"training_file": bob_file.id, "model": model}, "model")]:
        with pytest.raises(openai.BadRequestError) as caught:
            bob.fine_tuning.jobs.create(**{"model": classroom.model, **params})
        assert caught.value.body["param"] == param
    assert bob.fine_tuning.jobs.list().data == []

    # the instructor: everything, and may cancel and delete it
    assert {f.id for f in teacher.files.list()} == {file.id, result_file, bob_file.id}
    assert {j.id for j in teacher.fine_tuning.jobs.list()} == {job.id, waiting.id}
    assert teacher.fine_tuning.jobs.cancel(waiting.id).status == "cancelled"
    assert teacher.models.delete(model).deleted and teacher.files.delete(bob_file.id).deleted
    assert model not in [m.id for m in alice.models.list()] and bob.files.list().data == []
    # the owner is the key's name, never the key
    assert store.job(job.id)["owner"] == store.file(result_file)["owner"] == "student01"
    assert store.model(f"{model}:ckpt-step-5")["owner"] == "student01"
    # alice continues her own model's checkpoint (the model itself was deleted by the instructor)
    alice.fine_tuning.jobs.create(model=f"{model}:ckpt-step-5", training_file=file.id)


def test_keys_appear_in_no_log_and_nowhere_in_the_data_folder(classroom, caplog):
    keys = classroom.keys
    with caplog.at_level(logging.DEBUG):
        file = upload(classroom.alice)
        classroom.alice.fine_tuning.jobs.create(model=classroom.model, training_file=file.id)
        not_found(lambda: classroom.bob.files.retrieve(file.id))
        with pytest.raises(openai.AuthenticationError):
            classroom.client(keys["student01"] + "x").files.list()
    assert caplog.records  # the 404 and the 401 were logged, each in one line
    assert not any(key in caplog.text for key in keys.values())
    data = classroom.local.store.data_dir
    stored = b"".join(p.read_bytes() for p in data.rglob("*") if p.is_file())
    assert b"student01" in stored  # the owner's name is there (the check can see the database's bytes) ...
    assert not any(key.encode() in stored for key in keys.values())  # ... the keys are not


# ------------------------------------------------------------------------------------------------ the fair queue
def test_start_order_is_round_robin_by_owner_least_recently_started_first():
    from local_server.jobs import start_order

    queued = [{"id": f"{owner}{n}", "owner": owner, "seq": seq}
              for seq, (owner, n) in enumerate([("a", 1), ("a", 2), ("a", 3), ("b", 1), ("c", 1), ("c", 2)])]
    assert [j["id"] for j in start_order(queued, {})] == ["a1", "b1", "c1", "a2", "c2", "a3"]
    # c started a job just now, a before it, b never: b, a, c
    assert [j["id"] for j in start_order(queued, {"a": 10, "c": 20})] == ["b1", "a1", "c1", "a2", "c2", "a3"]
    without_keys = [{**job, "owner": None} for job in queued]  # one owner: creation order
    assert [j["id"] for j in start_order(without_keys, {None: 5})] == [j["id"] for j in queued]


def test_a_key_may_keep_only_so_many_jobs_waiting(classroom):
    alice, bob = classroom.alice, classroom.bob
    file = upload(alice)
    jobs = [alice.fine_tuning.jobs.create(model=classroom.model, training_file=file.id) for _ in range(3)]
    with pytest.raises(openai.RateLimitError) as caught:
        alice.fine_tuning.jobs.create(model=classroom.model, training_file=file.id)
    error = caught.value.body
    assert caught.value.status_code == 429 and error["code"] == "rate_limit_exceeded"
    assert "3개" in error["message"] and "cancel" in error["message"]
    assert len(alice.fine_tuning.jobs.list().data) == 3
    bob.fine_tuning.jobs.create(model=classroom.model, training_file=upload(bob).id)  # another key's own limit
    alice.fine_tuning.jobs.cancel(jobs[0].id)
    alice.fine_tuning.jobs.create(model=classroom.model, training_file=file.id)  # room again


def test_jobs_of_two_students_interleave_and_queued_jobs_say_their_place(tiny_model, tmp_path):
    """Student A submits three jobs, then B one: B's starts second. The queued ones say their place and, once a job
    on this server has finished, an estimated start."""
    from local_server.server import Settings

    keys = make_key_file(tmp_path / "keys.csv", 2)
    running = RunningServer(Settings(data_dir=tmp_path / "data", model=str(tiny_model),
                                     keys=read_keys(tmp_path / "keys.csv")))
    try:
        a, b = running.client(keys["student01"]), running.client(keys["student02"])
        a_file, b_file = upload(a), upload(b)
        first = a.fine_tuning.jobs.create(model=running.model, training_file=a_file.id,
                                          hyperparameters={"n_epochs": 50})  # trains until cancelled
        short = {"n_epochs": 1, "batch_size": 10}
        a2, a3 = (a.fine_tuning.jobs.create(model=running.model, training_file=a_file.id, hyperparameters=short)
                  for _ in range(2))
        b1 = b.fine_tuning.jobs.create(model=running.model, training_file=b_file.id, hyperparameters=short)
        wait_for(a, first.id, ("running",))

        def place(client, job_id):
            events = [e for e in client.fine_tuning.jobs.list_events(job_id, limit=100) if e.message.startswith("대기열")]
            return (events[0].data["queue_position"], events[0].message) if events else None

        wait_until(lambda: place(b, b1.id) and place(a, a3.id) and place(a, a3.id)[0] == 3, 60, "queue events")
        assert place(b, b1.id)[0] == 1 and place(a, a2.id)[0] == 2 and place(a, a3.id)[0] == 3
        assert "첫 작업이 끝나면" in place(a, a3.id)[1]  # nothing has finished on this server yet

        a.fine_tuning.jobs.cancel(first.id)
        assert wait_for(b, b1.id, ("succeeded", "failed"), timeout=180).status == "succeeded"
        starts = {job_id: seq for seq, job_id in running.local.store.db.execute(
            "SELECT seq, job_id FROM events WHERE message = ?", (JOB_STARTED,))}
        assert starts[first.id] < starts[b1.id] < starts.get(a2.id, float("inf"))
        # A3 moved up when B1 and then A2 started; by then B1 had finished: an estimate from its duration
        wait_until(lambda: place(a, a3.id)[0] == 1, 120, "A3 to be first in the queue")
        assert "예상 시작 약" in place(a, a3.id)[1]
        for job in (a2, a3):
            a.fine_tuning.jobs.cancel(job.id)
    finally:
        running.close()


# ------------------------------------------------------------------------------------------------ the store
def test_a_store_of_version_1_migrates_keeping_its_rows_owned_by_no_key(tmp_path):
    from local_server.keys import SOLE_USER, Principal

    with sqlite3.connect(tmp_path / "state.sqlite3") as old:
        old.executescript(SCHEMA)
        old.execute("INSERT INTO files VALUES ('file-old', 'fine-tune', 'a.jsonl', 3, 1, 'file-old', 1)")
        old.execute("INSERT INTO jobs (id, seq, created_at, model, training_file, seed, status, hyperparameters)"
                    " VALUES ('ftjob-old', 1, 1, 'm', 'file-old', 0, 'succeeded', '{}')")
        old.execute("INSERT INTO models VALUES ('ft:m:local::old', 1, 'ftjob-old', 'fine-tuned', '/nowhere')")
        old.execute("PRAGMA user_version = 1")
    store = Store(tmp_path)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    rows = store.file("file-old"), store.job("ftjob-old"), store.model("ft:m:local::old")
    assert all(row is not None and row["owner"] is None for row in rows)
    assert all(SOLE_USER.sees(row) for row in rows)  # a server without keys sees them as before
    assert not Principal("student01", STUDENT).sees(rows[0])  # with keys, they are the instructor's
    assert Principal("teacher", INSTRUCTOR).sees(rows[0])
    assert store.add_file(b"x", "b.jsonl", "fine-tune", "student01")["owner"] == "student01"
