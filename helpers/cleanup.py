"""정리: 이 학습자의 노트북이 만든 것만 지웁니다.

같은 조직의 동료도 같은 접미사(hobanse, baseball-hockey)로 모델을 만들 수 있고, 2027-01-06 이후에는 지운
미세 조정 모델을 다시 만들 수 없습니다. 그래서 live/record 모드의 클라이언트는 이 컴퓨터의 노트북이 만든 파일,
작업, 그 작업이 낳은 모델의 id 를 output/ 의 작은 장부에 적어 두고, 지울 때는 장부에 있는 것만 지웁니다
(모델을 지우면 그 작업의 체크포인트 모델과 결과 파일도).
재생 모드에서는 기록들(data/recordings/)이 장부입니다: 강사의 노트북이 기록하면서 만든 것이 '내 것' 입니다.
"""
from __future__ import annotations

import json
import os
from urllib.parse import urlsplit

import openai

from helpers import modes, paths
from helpers.recordings import read_recording, response_body

LEDGER_NAME = "created_by_my_notebooks.json"
CREATING_PATHS = ("/files", "/uploads", "/fine_tuning/jobs")  # POST 하면 서버에 무언가 남는 주소


def endpoint(base_url) -> str:
    """장부의 칸 이름: 주소 속 비밀번호를 뺀 API 주소."""
    parts = urlsplit(str(base_url))
    return f"{parts.scheme}://{modes.where(str(base_url))}{parts.path.rstrip('/')}"


def created_ids(method: str, path: str, status: int, body, known: set[str]) -> list[str]:
    """이 응답으로 '내 것' 이 된 id: 올린 파일, 만든 작업, 그리고 known 에 있는 작업이 낳은 미세 조정 모델."""
    if status >= 400 or not isinstance(body, dict):
        return []
    if method == "POST" and path.rstrip("/").endswith(CREATING_PATHS) and isinstance(body.get("id"), str):
        return [body["id"]]
    jobs = [body] + [j for j in body.get("data") or [] if isinstance(j, dict)]
    return [j["fine_tuned_model"] for j in jobs
            if j.get("object") == "fine_tuning.job" and j.get("id") in known and j.get("fine_tuned_model")]


def note(base_url, method: str, path: str, status: int, body) -> None:
    """live/record 의 응답마다 불립니다: 새로 만든 것이 있으면 장부에 덧붙입니다."""
    ledger = _read_ledger()
    known = set(ledger.get(endpoint(base_url), []))
    new = [i for i in created_ids(method, path, status, body, known) if i not in known]
    if new:
        ledger[endpoint(base_url)] = sorted(known | set(new))
        target = paths.output_file(LEDGER_NAME)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(json.dumps(ledger, ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(tmp, target)  # 중간에 죽어도 장부가 반쯤 쓰이지 않음


def created_here(client: openai.OpenAI, mode: str) -> set[str]:
    """이 학습자의 노트북이 (이 클라이언트의 서버에) 만든 id 들."""
    if mode != "replay":
        return set(_read_ledger().get(endpoint(client.base_url), []))
    known: set[str] = set()
    for path in sorted(paths.RECORDINGS_DIR.glob("*.json")):
        if path.name.endswith(".previous.json"):
            continue
        for interaction in read_recording(path)["interactions"]:
            request, response = interaction["request"], interaction["response"]
            known.update(created_ids(request["method"], request["path"], response["status"],
                                     response_body(response), known))
    return known


def delete_job_outputs(client: openai.OpenAI, job) -> None:
    """'내 것' 인 작업 job 이 남긴 것 중 API 로 지울 수 있는 것: 체크포인트 모델과 결과 파일(학습 지표 CSV).

    OpenAI 는 체크포인트 모델을 지우지 못하게 할 수 있고, 이미 지운 것은 404 입니다: 그럴 때는 그렇다고 적고 넘어갑니다.
    """
    for checkpoint in client.fine_tuning.jobs.checkpoints.list(job.id, limit=100):
        _delete("체크포인트 모델", checkpoint.fine_tuned_model_checkpoint, client.models.delete)
    for file_id in job.result_files or []:
        _delete("결과 파일", file_id, client.files.delete)


def _delete(what: str, object_id: str, delete) -> None:
    try:
        print(f"{what} 삭제:", object_id, delete(object_id).deleted)
    except openai.NotFoundError:
        print(f"{what} {object_id} 은 이미 없습니다.")
    except (openai.BadRequestError, openai.PermissionDeniedError) as err:
        print(f"{what} {object_id} 은 서버가 지우지 못하게 합니다 (HTTP {err.status_code}): 작업의 기록으로 남습니다.")


def _read_ledger() -> dict:
    try:
        ledger = json.loads((paths.OUTPUT_DIR / LEDGER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # 없거나 망가진 장부는 빈 장부: 그러면 아무것도 지우지 않는 쪽으로 안전
        return {}
    return ledger if isinstance(ledger, dict) else {}
