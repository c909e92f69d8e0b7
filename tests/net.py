"""Loopback ports and bounded waits, shared by the tests (one copy of each).

- listening_socket(): a socket already bound to a free loopback port. A server in the test process serves on it
  (uvicorn.Server.run(sockets=[...])), so no other process can take the port between choosing it and using it.
- free_port(): for a server in another process that must be told its port. That cannot be race-free; it picks a
  random port below Linux's ephemeral range (32768-60999), so it never collides with ports the kernel hands out for
  bind(0) and outgoing connections, only (rarely) with another test that picked the same random port.
- wait_until(): every wait in a test has a deadline and fails with what it waited for, instead of hanging.
"""
from __future__ import annotations

import random
import socket
import time
from typing import Callable, TypeVar

T = TypeVar("T")
PORT_RANGE = (20000, 32000)


def listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def free_port() -> int:
    for _ in range(100):
        port = random.randint(*PORT_RANGE)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port in {PORT_RANGE}")


def wait_until(condition: Callable[[], T], timeout: float, what: str | Callable[[], str], poll: float = 0.1) -> T:
    """Call condition() until it returns something truthy and return that; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"waited {timeout} s for {what() if callable(what) else what}")
        time.sleep(poll)
