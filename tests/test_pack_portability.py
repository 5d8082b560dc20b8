"""The pack itself runs on Windows and macOS too: its code calls nothing fork-only or POSIX-only.

Only the dev tooling (devtools/, tests/, scripts/, benchmarks/) may, and there every such call
degrades on other systems. New pack folders are checked without being listed here.
"""
import re

from conftest import REPO_ROOT

NOT_THE_PACK = {"devtools", "tests", "scripts", "benchmarks", "web", "example_workflows"}

POSIX_ONLY = {
    "fork": r"\bos\.fork(pty)?\b|\bset_start_method\(\s*['\"]fork|\bget_context\(\s*['\"]fork",
    "POSIX-only module": r"^\s*(import|from)\s+(fcntl|termios|pwd|grp|resource|posix|pty|tty)\b",
    "process groups and sessions": r"\bos\.(killpg|setsid|setpgid|getpgid|setpgrp)\b|\bstart_new_session\b|\bpreexec_fn\b",
    "prctl": r"\bprctl\b",
    "user ids": r"\bos\.(getuid|geteuid|getgid|getegid|setuid|setgid)\b",
    "POSIX signals": r"\bsignal\.(SIGKILL|SIGHUP|SIGUSR1|SIGUSR2|SIGALRM|SIGCHLD|SIGPIPE|alarm|setitimer)\b",
    "symlinks": r"\bos\.symlink\b|\.symlink_to\(",
    "Linux paths": r"['\"]/(proc|sys|dev/shm)/",
    "fifos": r"\bos\.mkfifo\b",
}


def pack_files():
    for path in sorted(REPO_ROOT.rglob("*.py")):
        parts = path.relative_to(REPO_ROOT).parts
        if parts[0] in NOT_THE_PACK or any(part.startswith(".") for part in parts):
            continue
        yield path


def posix_only_calls(path):
    found = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        for what, pattern in POSIX_ONLY.items():
            if re.search(pattern, line):
                found.append(f"{path.relative_to(REPO_ROOT)}:{number}: {what}: {line.strip()}")
    return found


def test_the_check_sees_the_pack_and_finds_such_calls():
    files = {path.relative_to(REPO_ROOT).parts[0] for path in pack_files()}
    assert {"__init__.py", "nodes", "stages", "samplers"} <= files
    # The dev tooling uses them on purpose (and degrades elsewhere): the patterns do match real code.
    found = "\n".join(posix_only_calls(REPO_ROOT / "devtools" / "host_server.py"))
    assert "process groups" in found and "prctl" in found and "symlinks" in found
    assert "POSIX-only module" in "\n".join(posix_only_calls(REPO_ROOT / "devtools" / "locks.py"))


def test_the_pack_calls_nothing_posix_only():
    found = [problem for path in pack_files() for problem in posix_only_calls(path)]
    assert not found, "the pack must run on Windows and macOS too:\n" + "\n".join(found)
