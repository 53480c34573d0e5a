"""Run check functions on N gloo ranks spawned on localhost, many checks per spawn.

The parent hosts the TCPStore on a port the OS picks (port 0), so concurrent pytest workers never
race for a port; ranks connect to it as clients. Each rank runs every check of a suite and records
each start and failure in a log file as it goes, so that even a rank that dies (gloo aborts a
process whose peers fell out of step) leaves a report naming the check it was in.
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

Check = Callable[[dist.ProcessGroup], None]
Suite = Callable[[], list[tuple[str, Check]]]

# generous: the machine may be loaded; a hang still ends, as a failure naming the check
COLLECTIVE_TIMEOUT = datetime.timedelta(seconds=60)


def run(suite: Suite, world_size: int) -> list[str]:
    """Run ``suite`` on ``world_size`` ranks; return one message per failed (check, rank)."""
    return [message for messages in run_each(suite, world_size).values() for message in messages]


def run_each(suite: Suite, world_size: int) -> dict[str, list[str]]:
    """Run ``suite`` on ``world_size`` ranks; return each check's failure messages (empty: it passed).

    A check that a rank did not finish, or never started because the rank died, fails too.
    """
    store = dist.TCPStore(
        "127.0.0.1", 0, world_size, is_master=True, wait_for_workers=False, timeout=COLLECTIVE_TIMEOUT
    )
    with tempfile.TemporaryDirectory() as out:
        crash = None
        try:
            mp.spawn(_rank_main, args=(world_size, store.port, suite, out), nprocs=world_size, join=True)
        except Exception as exc:  # a rank died: report what the logs say it was doing
            crash = f"{type(exc).__name__}: {exc}"
        return _read_logs(Path(out), [name for name, _ in suite()], world_size, crash)


def _read_logs(out: Path, names: list[str], world_size: int, crash: str | None) -> dict[str, list[str]]:
    failures: dict[str, list[str]] = {name: [] for name in names}
    for rank in range(world_size):
        path = out / f"rank{rank}.jsonl"
        events = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        for e in events:
            if e["event"] == "fail":
                failures[e["check"]].append(f"[rank {rank}] {e['check']}\n{e['trace']}")
        if not any(e["event"] == "done" for e in events):
            started = [e["check"] for e in events if e["event"] == "start"]
            where = f"during {started[-1]}" if started else "before its first check"
            died = f"[rank {rank}] did not finish: died {where} ({crash})"
            for name in names[max(len(started) - 1, 0) :]:
                failures[name].append(died)
    return failures


def _rank_main(rank: int, world_size: int, port: int, suite: Suite, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    log = (Path(out) / f"rank{rank}.jsonl").open("a")

    def record(event: str, **fields: str) -> None:
        log.write(json.dumps({"event": event, **fields}) + "\n")
        log.flush()

    store = dist.TCPStore("127.0.0.1", port, world_size, is_master=False, timeout=COLLECTIVE_TIMEOUT)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size, timeout=COLLECTIVE_TIMEOUT)
    for name, check in suite():
        record("start", check=name)
        started = time.perf_counter()
        try:
            check(dist.group.WORLD)
        except Exception:
            record("fail", check=name, trace=traceback.format_exc())
        if os.environ.get("CROSSENT_DIST_TRACE"):
            print(f"rank {rank}: {name} {time.perf_counter() - started:.2f} s", flush=True)
    # no rank may close its connections while a peer still uses them: gloo aborts that peer
    dist.barrier()
    dist.destroy_process_group()
    record("done")
    log.close()
    # leave without interpreter teardown: gloo's background threads can abort a process that
    # finalizes while a peer is still closing its connections
    os._exit(0)
