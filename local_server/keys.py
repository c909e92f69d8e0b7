"""Who is asking: the class's key file (`--keys FILE`, `--make-keys N`) and the principal each request carries.

A key file is a CSV with the header `name,key,role` (role `student` or `instructor`). A student sees only what their
own key made; the instructor sees, cancels and deletes everything. The keys stay in that file and in this process's
memory: the store records only a key's `name`, and nothing logs a key.
"""
from __future__ import annotations

import csv
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

STUDENT, INSTRUCTOR = "student", "instructor"
HEADER = ["name", "key", "role"]
KEY_PREFIX = "sk-local-"  # "sk-…" like OpenAI's keys, so the course's secret scrubbing (helpers/scrub.py) hides them
MIN_KEY_LENGTH = 16  # a class's key must not be guessable by a classmate


@dataclass(frozen=True)
class Principal:
    """The holder of a request's key: its name in the key file (the owner recorded on what it makes) and role."""
    name: str | None
    role: str

    def sees(self, row: dict | None) -> bool:
        """Whether this principal may see (and so change) a stored file, job or model: its own, or all for the
        instructor. Another's is treated as missing (404), as OpenAI treats another project's."""
        return row is not None and (self.role == INSTRUCTOR or row["owner"] == self.name)


# A server without --keys has one user (no key, or the single --api-key) who owns and sees everything.
SOLE_USER = Principal(name=None, role=INSTRUCTOR)


class KeyFileError(Exception):
    """A key file that cannot be used; the message says which line and what to fix (Korean)."""


class KeyRing:
    """The keys a server accepts, each with its holder. Compared in constant time (secrets.compare_digest)."""

    def __init__(self, holders: dict[str, Principal]):
        self._holders = [(f"Bearer {key}".encode(), principal) for key, principal in holders.items()]

    @classmethod
    def single(cls, api_key: str) -> KeyRing:
        return cls({api_key: SOLE_USER})

    def identify(self, authorization: str) -> Principal | None:
        """The holder of the key in an Authorization header, or None for a missing or unknown key. Every key is
        compared, so the time taken does not tell which one nearly matched."""
        given, found = authorization.encode(), None
        for expected, principal in self._holders:
            if secrets.compare_digest(given, expected):
                found = principal
        return found

    def __repr__(self) -> str:  # never the keys, e.g. in a traceback's locals or a printed Settings
        return f"KeyRing({len(self._holders)} keys)"


def read_keys(path: Path) -> KeyRing:
    """Read and check a key file. utf-8-sig: a spreadsheet program may save the CSV with a byte-order mark."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as err:
        raise KeyFileError(f"키 파일 {path} 을(를) 읽지 못했습니다: {err}") from None
    if not rows or [cell.strip() for cell in rows[0]] != HEADER:
        raise KeyFileError(f"키 파일 {path} 의 첫 줄은 {','.join(HEADER)} 이어야 합니다 "
                           f"(python -m local_server --make-keys 40 --keys {path} 로 만들 수 있습니다).")
    holders: dict[str, Principal] = {}
    names = set()
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue  # a blank line
        if len(row) != len(HEADER):
            raise KeyFileError(f"키 파일 {path} 의 {line}번째 줄: 칸이 {len(row)}개입니다 (name,key,role 세 칸).")
        name, key, role = (cell.strip() for cell in row)
        if role not in (STUDENT, INSTRUCTOR):
            raise KeyFileError(f"키 파일 {path} 의 {line}번째 줄: role 은 {STUDENT} 나 {INSTRUCTOR} 여야 합니다 "
                               f"(받은 값: '{role}').")
        if not name or name in names:
            raise KeyFileError(f"키 파일 {path} 의 {line}번째 줄: 이름이 비었거나 앞 줄과 같습니다 ('{name}'). "
                               "이름은 작업과 모델의 주인으로 기록되므로 사람마다 달라야 합니다.")
        if len(key) < MIN_KEY_LENGTH or key in holders:
            raise KeyFileError(f"키 파일 {path} 의 {line}번째 줄({name}): 키가 {MIN_KEY_LENGTH}자보다 짧거나 앞 줄의 "
                               "키와 같습니다. 키는 사람마다 다르고 짐작할 수 없어야 합니다 (--make-keys 가 만듭니다).")
        names.add(name)
        holders[key] = Principal(name, role)
    if not holders:
        raise KeyFileError(f"키 파일 {path} 에 키가 하나도 없습니다.")
    return KeyRing(holders)


def make_keys(path: Path, students: int) -> list[str]:
    """Write a key file for a class: `students` random student keys and one instructor key; return the names.

    Refuses an existing file (it may hold the keys already handed out) and creates the file readable only by its
    owner (mode 0600)."""
    width = max(2, len(str(students)))
    rows = [(f"student{number:0{width}d}", STUDENT) for number in range(1, students + 1)] + [("instructor", INSTRUCTOR)]
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # FileExistsError if it exists
    with os.fdopen(descriptor, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        for name, role in rows:
            writer.writerow([name, KEY_PREFIX + secrets.token_urlsafe(24), role])
    return [name for name, _ in rows]


def readable_by_others(path: Path) -> bool:
    """On POSIX: whether users other than the file's owner may read it (group or other permission bits)."""
    return os.name == "posix" and bool(path.stat().st_mode & 0o077)
