"""Ids the store hands out and checks: runs, lease owners, rule-file hashes (stdlib only)."""

from __future__ import annotations

import hashlib
import os
import re
import socket
import uuid
from typing import Final

__all__ = ["RUN_ID", "new_owner_id", "new_run_id", "owner_is_gone", "rules_hash"]

# Ids the store generates are uuid4 hex; callers may choose their own (tests, replays) within
# this alphabet. Lower case only, so find_run can fold a typed prefix to lower case.
RUN_ID: Final = re.compile(r"[0-9a-z][0-9a-z_.-]{0,63}")


def rules_hash(rules_text: str) -> str:
    """Return the sha256 hex digest that identifies a rule file's content."""
    return hashlib.sha256(rules_text.encode("utf-8")).hexdigest()


def new_run_id() -> str:
    """Return a fresh run id (uuid4 hex: any 6-8 leading characters are practically unique)."""
    # Not a time-sortable ULID on purpose: ids of runs started in the same second would share
    # their first 8+ characters, defeating short prefixes on the command line. Runs are
    # ordered by created_at instead.
    return uuid.uuid4().hex


def new_owner_id() -> str:
    """A lease owner id, "host:pid:random": unique per claimant, and telling a human (and a
    process on the same host) which process holds a run."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_is_gone(owner: str) -> bool:
    """True when `owner` names a process on this host that no longer exists (it was killed):
    its lease can be taken over at once rather than when it lapses. Any doubt (another host,
    a pid that exists, whoever it is now) means False."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # e.g. PermissionError: it exists, as someone else's
        return False
    # A killed process its parent has not reaped yet is a zombie: gone all the same.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rpartition(")")[2].split()[:1] == ["Z"]
    except OSError:
        return False
