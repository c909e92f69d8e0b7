"""pytest 전체 설정: 테스트는 언제나 재생 모드로, 키 없이, 네트워크 없이 돕니다.

개발자 컴퓨터에 OPENAI_API_KEY 가 있어도 노트북(papermill 이 값을 주입하고 nbval 이 실행·비교하는 커널 포함)은
기록만 재생합니다. notebooks/*.ipynb 를 모으는 방법은 tests/notebook_replay.py 에 있습니다.
"""
import os

os.environ["COURSE_MODE"] = "replay"
os.environ.pop("OPENAI_API_KEY", None)

pytest_plugins = ["tests.notebook_replay", "pytester"]  # pytester: tests/test_notebooks.py 가 이 플러그인을 검사
