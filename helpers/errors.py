"""과정이 학습자에게 보여 주는 오류 두 가지. 설명을 만드는 일은 explain.py 에 있습니다."""
import openai


class CourseError(Exception):
    """학습자에게 무엇이 일어났고 무엇을 하면 되는지 한국어로 알려 주는 오류."""


class CourseAPIError(CourseError, openai.OpenAIError):
    """API 호출 도중(전송 계층 안에서) 알게 된 문제. OpenAIError 라서 SDK 가 다시 보내거나 감싸지 않고 그대로 올립니다."""
