"""How the offline stand-in answers a question it has no quoted or trained answer for.

Nothing here is a language model. The stand-in only ever hands back text that already exists:
a line of material the prompt itself supplied (retrieved rule lines, few-shot examples) or, for a
stand-in "fine-tuned" model, the training answer to the most similar training question. Every such
answer starts with a label saying which of the two it is, so no recording can pass it off as GPT
output. Similarity is TF-IDF over character n-grams (scikit-learn), which copes with Korean
spacing ("몇명" / "몇 명") without a tokenizer.
"""
from __future__ import annotations

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics.pairwise import cosine_similarity

CONTEXT_LABEL = "[오프라인 대역 — 프롬프트에 주어진 자료에서 질문과 가장 비슷한 것을 골라 옮김] "
NEAREST_LABEL = "[오프라인 대역 — 학습 데이터에서 가장 비슷한 질문의 답을 옮김] "
MIN_SIMILARITY = 0.2  # below this the closest example shares little more than "호반스" with the question


def most_similar(question: str, candidates: list[str]) -> tuple[int, float]:
    """Index and cosine similarity of the candidate closest to the question (-1 when there are none)."""
    if not candidates:
        return -1, 0.0
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 3))
    matrix = vectorizer.fit_transform([question, *candidates])
    scores = cosine_similarity(matrix[0], matrix[1:])[0]
    best = int(scores.argmax())
    return best, float(scores[best])


def context_lines(system_text: str) -> list[str]:
    """Material lines in a system prompt: list items and sentences after the first (instruction) line."""
    lines = [line.strip().lstrip("-*• ").strip() for line in system_text.splitlines()[1:]]
    return [line for line in lines if len(line) >= 8]


def answer_from_prompt(messages: list[dict]) -> str | None:
    """A labelled answer copied from the prompt's own material, or None when the prompt brings none.

    Few-shot: earlier user/assistant turns are examples; the answer of the example whose question is
    closest is returned. RAG: lines given in the system message are candidates; the closest is returned.
    """
    question = messages[-1]["content"]
    examples = [(asked["content"], answered["content"]) for asked, answered in zip(messages[:-1], messages[1:-1])
                if asked["role"] == "user" and answered["role"] == "assistant"]
    if examples:
        best, score = most_similar(question, [asked for asked, _ in examples])
        return CONTEXT_LABEL + examples[best][1] if score >= MIN_SIMILARITY else None
    material = [line for m in messages[:-1] if m["role"] == "system" for line in context_lines(m["content"])]
    best, score = most_similar(question, material)
    return CONTEXT_LABEL + material[best] if best >= 0 and score > 0 else None  # the prompt chose this material


def nearest_trained_answer(question: str, trained: dict[str, str]) -> str | None:
    """The training answer of the most similar training question, labelled; None if nothing is close."""
    questions = list(trained)
    best, score = most_similar(question, questions)
    return NEAREST_LABEL + trained[questions[best]] if best >= 0 and score >= MIN_SIMILARITY else None
