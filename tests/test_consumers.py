"""Which daemons count as stopped, so that their records are taken back."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time

from recoveryd.connection import Link
from recoveryd.consumers import Consumers, is_dead
from recoveryd.scripts import Scripts


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


async def test_a_stopped_daemons_records_go_back_with_one_line(ar, keys, caplog):
    caplog.set_level(logging.INFO, logger="recoveryd.consumers")
    seconds, _ = await ar.time()
    stopped = "elsewhere:1:gone"
    await ar.hset(keys.consumers, stopped, (seconds - 300) * 1000)
    await ar.rpush(keys.inflight(stopped), "r1", "r2")
    me = Consumers(ar, Scripts(ar), keys, consumer_of(os.getpid()), Link())

    assert await me.beat() == 2
    await ar.rpush(keys.inflight(me.me), "r3")
    # Its own, on the way out: the daemon says so itself, once.
    assert await me.leave() == 1

    # Back at the end that is taken from first (the right), in their order.
    assert await ar.lrange(keys.failures, 0, -1) == [b"r1", b"r2", b"r3"]
    assert caplog.messages == [
        f"returned 2 in-flight records of stopped daemon {stopped}"
    ]
