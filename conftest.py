"""pytest 전체 설정: 테스트는 언제나 재생 모드로, 키 없이, 네트워크 없이 돕니다.

개발자 컴퓨터에 OPENAI_API_KEY 가 있어도 노트북(papermill, nbval 커널 포함)은 기록만 재생합니다.
"""
import os

os.environ["COURSE_MODE"] = "replay"
os.environ.pop("OPENAI_API_KEY", None)
