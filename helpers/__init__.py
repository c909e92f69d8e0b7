"""노트북이 함께 쓰는 작은 도우미들. 한 파일씩 열어 볼 수 있게 나누어 두었습니다.

- course:    노트북이 부르는 곳. connect() 로 OpenAI 클라이언트를 만들고(live / record / replay), 모델 찾기와 정리
  - modes:      모드와 키 (MODE, COURSE_MODE, .env, 숨겨진 입력창)
  - scrub:      키, 계정 ID, 주소 속 비밀번호 지우기
  - recordings: 기록(record)과 재생(replay) 전송, 기록 파일 읽기
  - live:       실제 API 전송 (시간 제한, 두 번 만들지 않기, 이상한 응답)
  - explain:    API 오류와 과정 오류의 한국어 설명
  - cleanup:    이 학습자의 노트북이 만든 것만 지우기 위한 장부
  - paths:      저장소 안의 자리 (data/recordings/, output/)
- chat_data: 채팅 미세 조정 JSONL 읽기/쓰기, 업로드 전 형식·길이 검사, 토큰 수와 비용 추정
- datasets:  data/ 폴더의 호반스 규칙과 질문/답변, 야구/하키 글 (실제 20newsgroups 또는 샘플)
- hobanse_eval: 04 의 규칙 문장 검색기(TF-IDF)와 사실 채점기
- classification: 06~08 의 데이터 준비(옛 prepare_data 단계), 채팅 형식, logprob → 확률 → 분류 지표
- follow:    미세 조정 작업을 끝날 때까지 따라가기 (상태가 바뀔 때 한 줄, 학습 단계와 손실의 진행 막대)
- data_size: 09 의 데이터 크기 실험: 글을 토큰 예산으로 자르기, 겹치는 균형 학습 세트
- display:   긴 한국어 답이 든 표를 자르지 않고 왼쪽 정렬로 보여 주기

주피터 안에서 helpers 를 불러오면, 과정의 오류(형식 검사, 키 없음 등)와 API 오류가 긴 traceback 대신 한국어 설명
한 줄로 보입니다 (explain.show_course_errors_briefly).
"""
from helpers.explain import show_course_errors_briefly

show_course_errors_briefly()
