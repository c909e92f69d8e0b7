"""tests/net.py: the shared port and wait helpers (issue 18.16)."""
import socket
import time

import pytest

from tests.net import PORT_RANGE, free_port, listening_socket, wait_until


def test_wait_until_fails_at_its_deadline_naming_what_it_waited_for():
    start = time.monotonic()
    with pytest.raises(AssertionError, match="waited 0.3 s for the impossible"):
        wait_until(lambda: False, 0.3, "the impossible", poll=0.05)
    assert time.monotonic() - start < 5
    assert wait_until(lambda: "ready", 1, "anything") == "ready"


def test_a_listening_socket_holds_its_port_and_free_port_avoids_the_ephemeral_range():
    with listening_socket() as held, socket.socket() as other:
        with pytest.raises(OSError):
            other.bind(held.getsockname())
    port = free_port()
    assert PORT_RANGE[0] <= port <= PORT_RANGE[1]
