"""What every benchmark result file records about its run, and how it is written.

``header(name, argv, device)`` is the common head of a result file: the command that reproduces it
(``python -m bench.NAME ...``), the git commit and whether the tracked files differed from it, the machine
(CPU model and its widest vector unit, or the GPU) and torch version, threads, and the UTC date.
``write_json`` writes a result atomically (``vipaint.atomic.atomic_save_json``: a reader or a crash never sees
half a file). Results live in ``bench/results/`` (``RESULTS``); ``bench/README.md`` says which file backs
which table.
"""
from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

from vipaint.atomic import atomic_save_json

__all__ = ["RESULTS", "header", "write_json", "describe_device", "git_state"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"


def git_state() -> tuple[str, bool | None]:
    """(HEAD's commit, whether tracked files differ from it), or ("unknown", None) outside a git checkout."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}   # read only: never take the index lock of a shared checkout

    def git(*cmd: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *cmd], capture_output=True, text=True, check=True,
                              env=env, timeout=30).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return "unknown", None
    return commit, dirty


def _cpu() -> str:
    """CPU model and its widest vector unit that matters here (bf16 matmuls need AVX512-BF16 or AMX)."""
    model, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    model = model or platform.processor() or platform.machine() or "unknown CPU"
    for flag, name in (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16"), ("avx512f", "AVX512"),
                       ("avx2", "AVX2 only")):
        if flag in flags:
            return f"{model}, {name}"
    return model


def describe_device(device: torch.device | str | None = None) -> str:
    """``"cpu: AMD EPYC, AVX512-BF16, 2 threads"`` or ``"cuda: NVIDIA H200"``."""
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"{device.type}: {_cpu()}, {torch.get_num_threads()} threads"


def header(name: str, argv: list[str] | None = None, device: torch.device | str | None = None) -> dict:
    """The head of a result file of ``python -m bench.<name>`` run with ``argv`` (default: ``sys.argv[1:]``)."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    commit, dirty = git_state()
    return {"command": shlex.join(["python", "-m", f"bench.{name}", *argv]), "commit": commit, "dirty": dirty,
            "device": describe_device(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def write_json(path: str | os.PathLike, payload: dict) -> None:
    """Write ``payload`` to ``path`` atomically (the folder is created); NaN/inf become strings (strict JSON)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_json(path, payload)
