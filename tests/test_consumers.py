"""Which daemons count as stopped, so that their records are taken back."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from recoveryd.consumers import is_dead


def consumer_of(pid: int) -> str:
    return f"{socket.gethostname()}:{pid}:t"


def test_a_daemon_whose_process_is_running_is_alive():
    now_ms = int(time.time() * 1000)
    assert not is_dead(consumer_of(os.getpid()), now_ms, now_ms)


def test_a_daemon_whose_lease_ran_out_is_dead():
    now_ms = int(time.time() * 1000)
    assert is_dead(consumer_of(os.getpid()), now_ms - 60_000, now_ms)


def test_a_daemon_that_exited_unreaped_is_dead_at_once():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        # Exited, but not waited for: a zombie, still in the process table.
        deadline = time.monotonic() + 10
        while not _is_zombie(child.pid):
            assert time.monotonic() < deadline, "the child did not exit"
            time.sleep(0.01)
        now_ms = int(time.time() * 1000)
        assert is_dead(consumer_of(child.pid), now_ms, now_ms)
    finally:
        child.wait()


def _is_zombie(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as stat:
        text = stat.read()
    return text[text.rindex(")") + 2] == "Z"
