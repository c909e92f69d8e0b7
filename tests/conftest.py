"""tests/ 의 공통 fixture: 새 오프라인 대역 서버와, 그 서버에 붙은 SDK 클라이언트."""
import openai
import pytest

from tests.standin import StandIn, serve


@pytest.fixture
def standin() -> StandIn:
    return StandIn()


@pytest.fixture
def client(standin):
    with serve(standin) as url, openai.OpenAI(api_key="sk-test-not-a-real-key", base_url=url, max_retries=0) as c:
        yield c
