"""정리: 이 학습자의 노트북이 만든 것만 지웁니다.

같은 조직의 동료도 같은 접미사(hobanse, baseball-hockey)로 모델을 만들 수 있고, 2027-01-06 이후에는 지운
미세 조정 모델을 다시 만들 수 없습니다. 그래서 live/record 모드의 클라이언트는 이 컴퓨터의 노트북이 만든 파일,
작업, 그 작업이 낳은 모델의 id 를 output/ 의 작은 장부에 적어 두고, 지울 때는 장부에 있는 것만 지웁니다.
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


def _read_ledger() -> dict:
    try:
        ledger = json.loads((paths.OUTPUT_DIR / LEDGER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # 없거나 망가진 장부는 빈 장부: 그러면 아무것도 지우지 않는 쪽으로 안전
        return {}
    return ledger if isinstance(ledger, dict) else {}
