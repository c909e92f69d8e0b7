"""노트북이 함께 쓰는 작은 도우미들.

- course:    OpenAI 클라이언트와 세 가지 모드(live / record / replay), API 오류의 한국어 설명
- chat_data: 채팅 미세 조정 JSONL 읽기/쓰기, 업로드 전 형식 검사, 토큰 수와 비용 추정
- datasets:  data/ 폴더의 호반스 규칙과 질문/답변, 야구/하키 글 (실제 20newsgroups 또는 샘플)
- hobanse_eval: 04 의 규칙 문장 검색기(TF-IDF)와 사실 채점기
- classification: 06~08 의 데이터 준비(옛 prepare_data 단계), 채팅 형식, logprob → 확률 → 분류 지표
"""
