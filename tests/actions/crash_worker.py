"""Runs fixes in forked children that die by SIGKILL at a chosen point of the work.

Started once by ``test_files_crash`` (importing autofix takes a second; a fork takes a
millisecond). Reads one JSON job per line on stdin, answers one JSON line on stdout.
A job names a verb (``apply`` a files action, or ``rollback`` a fix) and where to die:
``kill_at`` counts the file-system calls the child makes (Python audit events: open,
rename, link, unlink, utime, chmod, mkdir …) once the store is open; at that call the
child is killed by SIGKILL — at once (``delay`` null), or by this process after
``delay`` seconds while the child runs on (mid-copy, mid-gzip, mid-commit).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

_EVENTS = {
    "open",
    "os.rename",
    "os.link",
    "os.remove",
    "os.mkdir",
    "os.rmdir",
    "os.chmod",
    "os.chown",
    "os.utime",
    "os.truncate",
    "os.scandir",
}


def _child(job: dict[str, Any], trigger: int) -> None:
    from autofix.config import load_settings
    from autofix.executor import Executor
    from autofix.pipeline import load_pipeline
    from autofix.store import MetricStore

    settings = load_settings(environ=job["env"])
    pipeline = load_pipeline(Path(job["pipeline"]))
    seen = 0

    def hook(event: str, args: tuple[Any, ...]) -> None:
        nonlocal seen
        if event not in _EVENTS:
            return
        seen += 1
        if seen == job["kill_at"]:
            os.write(trigger, b"k")
            if job["delay"] is None:
                os.kill(os.getpid(), signal.SIGKILL)

    with MetricStore(settings.db_path) as store:
        executor = Executor(store, pipeline, settings, sleep=lambda s: None)
        sys.addaudithook(hook)
        if job["verb"] == "apply":
            executor.run(job["action"], job["target"], job["params"])
        else:
            executor.rollback(job["fix_id"], "crash-test")
    os.write(trigger, json.dumps({"events": seen}).encode())


def main() -> None:
    warnings.simplefilter("ignore")  # fork() with library threads around: the child is short
    import autofix.executor  # noqa: F401  (import once, before forking)

    for line in sys.stdin:
        job = json.loads(line)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            code = 0
            try:
                _child(job, write)
            except BaseException:
                traceback.print_exc()
                code = 3
            os._exit(code)
        os.close(write)
        first = os.read(read, 1)
        if first == b"k" and job["delay"] is not None:
            time.sleep(job["delay"])
            os.kill(pid, signal.SIGKILL)
        rest = b""
        while chunk := os.read(read, 4096):
            rest += chunk
        os.close(read)
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        events = json.loads((first + rest).lstrip(b"k") or b"{}").get("events")
        exit_code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        print(json.dumps({"killed": killed, "exit": exit_code, "events": events}), flush=True)


if __name__ == "__main__":
    main()
