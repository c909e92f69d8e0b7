"""Notebook 03 top to bottom in MODE = "local" with the real packaged model (Gemma 3 270M, LoRA on this CPU).

What a learner without a key gets: the notebook starts the local server itself, trains for real, and the
fine-tuned model answers a training question with the fact it was trained on. Epochs are cut through the
parameters cell to keep CI within a few minutes. Runs in CI, never skipped.
"""
from __future__ import annotations

import nbformat
import papermill

from helpers.hobanse_eval import score_answer
from tests.net import free_port
from tests.test_notebooks import NOTEBOOKS

NOTEBOOK = next(p for p in NOTEBOOKS if p.name.startswith("03_"))
EPOCHS = 6  # the server's own default for 15 examples; after 3 epochs a trial run got neither trained fact right


def test_notebook_03_trains_and_answers_on_the_real_local_model(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_MODE", "local")
    monkeypatch.setenv("COURSE_LOCAL_PORT", str(free_port()))
    monkeypatch.setenv("COURSE_LOCAL_DATA_DIR", str(tmp_path / "server"))
    output = tmp_path / NOTEBOOK.name
    papermill.execute_notebook(str(NOTEBOOK), str(output), cwd=str(NOTEBOOK.parent), kernel_name="python3",
                               progress_bar=False, parameters={
                                   "LOCAL_HYPERPARAMETERS": {"n_epochs": EPOCHS}, "MAX_TOKENS": 40, "REPEATS": 1,
                                   "LOCAL_HYPERPARAMETERS_V2": {"n_epochs": 1},
                                   "POLL_SECONDS": 2, "CLEAN_UP": True})
    nb = nbformat.read(output, as_version=4)
    text = "\n".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                     for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs)
    assert "로컬(local) 모드" in text and "gemma-3-270m" in text
    assert "Fine-tuning job started" in text and "The job has successfully completed" in text  # events came back
    assert text.count(":ckpt-step-") >= EPOCHS  # one checkpoint per epoch, each a model id
    # the fine-tuned model's answers to the two training questions: "<질문> → <답>" (QUESTIONS[1]) and the
    # repeated answers to QUESTIONS[2] ("  1회: <답>"), each held to the trained answer's facts
    court = "호반스 코트의 크기는 얼마입니까?"
    court_answers = [line for line in text.splitlines() if line.startswith(court + " →")]
    time_answers = [line for line in text.splitlines() if line.strip().startswith("1회:")]
    assert court_answers and time_answers, text[-3000:]
    right = [a for a in court_answers if score_answer(a, "20미터;10미터") == 1] + \
            [a for a in time_answers if score_answer(a, "10분") == 1]
    assert right, "미세 조정 모델이 학습한 사실로 답한 학습 질문이 하나도 없음:\n" + "\n".join(court_answers + time_answers)
    assert "학습한 매개변수:" in text and "저장한 어댑터:" in text  # the LoRA numbers came from the job's events
    # the reworded questions it missed (if any) trained further from the fine-tuned model itself
    assert "이어서 학습할 모델: ft:gemma-3-270m:local:hobanse:" in text or "고칠 답이 없어" in text
    assert "모델 삭제:" in text  # CLEAN_UP removed what this run created
