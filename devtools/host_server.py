"""The real host (ComfyUI 0.3.75) as a subprocess with this pack installed, and a small client for it.

Used by the host tests (one server per test session, see tests/conftest.py) and by scripts/run_main_job.py.
Only the standard library, `websocket-client` and Pillow; no pytest, so scripts can use it too.

    server = HostServer(base_dir)             # makes base_dir/{custom_nodes/<pack link>,models/...,input,...}
    server.start()                            # returns once /object_info answers; raises HostError with
                                              # the log tail if the server dies or the pack fails to import
    name = server.add_model("text_encoders", path_to_file)
    result = server.run_prompt(api_prompt)    # queue, wait on the websocket until the prompt ends
    images = server.output_images(result)
    server.stop()

Everything waits with a bound: each HTTP request, the start, each websocket wait.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .pack_env import HOST_DIR, HOST_PYTHON, REPO_ROOT

WINDOWS = os.name == "nt"

# The folder name the pack gets under custom_nodes/: what users get from `git clone <repository>`.
# It contains dashes, so the pack cannot import itself by this name, just as in a user's install.
PACK_FOLDER_NAME = "comfyui-stable-cascade-exact"
# The host's folders for model files that the pack reads (folder_paths names).
MODEL_FOLDERS = ("diffusion_models", "vae", "text_encoders", "controlnet", "loras", "clip_vision",
                 "checkpoints")

# Binary websocket frames (the host's protocol.BinaryEventTypes).
PREVIEW_IMAGE = 1
UNENCODED_PREVIEW_IMAGE = 2
TEXT = 3
PREVIEW_IMAGE_WITH_METADATA = 4


class HostError(RuntimeError):
    """The server did not start, died, or misbehaved; the message carries the tail of its log."""


class PromptRejected(Exception):
    """POST /prompt answered with an error (400 on validation): `status` and the JSON `body`."""

    def __init__(self, status: int, body: Any):
        self.status = status
        self.body = body
        super().__init__(f"POST /prompt -> HTTP {status}: {json.dumps(body)[:2000]}")

    @property
    def node_errors(self) -> dict:
        return self.body.get("node_errors", {}) if isinstance(self.body, dict) else {}


@dataclass
class Message:
    """One websocket message. JSON messages: `type` and `data` as the host sent them. Binary
    frames: `type` is "preview" (data: {"event", "image_type", "image": bytes, "metadata"}) or
    "binary" for other events (data: {"event", "payload": bytes})."""

    type: str
    data: Any
    received_at: float = field(default_factory=time.monotonic)


@dataclass
class PromptResult:
    """What happened to one queued prompt, from the websocket and /history."""

    prompt_id: str
    outcome: str  # "success", "error" or "interrupted"
    messages: list[Message]
    history: dict | None  # the /history/<prompt_id> entry (None if the host did not record one)

    def of_type(self, message_type: str) -> list[Message]:
        return [m for m in self.messages if m.type == message_type]

    @property
    def progress(self) -> list[dict]:
        """The `progress` messages' data: {value, max, prompt_id, node}."""
        return [m.data for m in self.of_type("progress")]

    @property
    def previews(self) -> list[bytes]:
        """The encoded preview images (JPEG/PNG bytes) from binary frames, in arrival order."""
        return [m.data["image"] for m in self.of_type("preview")]

    @property
    def error(self) -> dict | None:
        """The `execution_error` data (exception_message, exception_type, node_id, traceback...)."""
        errors = self.of_type("execution_error")
        return errors[0].data if errors else None

    @property
    def outputs(self) -> dict:
        """The ui outputs by node id, as /history recorded them."""
        return (self.history or {}).get("outputs", {})


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel picks it when binding port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _signal_group(proc: subprocess.Popen, terminate: bool) -> None:
    """Terminate (or kill) the server with its process group; Windows has no groups to signal."""
    try:
        if WINDOWS and terminate:
            proc.terminate()
        elif WINDOWS:
            proc.kill()
        else:
            os.killpg(proc.pid, signal.SIGTERM if terminate else signal.SIGKILL)
    except ProcessLookupError:
        pass


def _is_link(path: Path) -> bool:
    """A symlink, or on Windows a directory junction (os.readlink reads both)."""
    try:
        os.readlink(path)
        return True
    except (OSError, ValueError):
        return False


def _remove_link(path: Path) -> None:
    try:
        path.unlink()
    except (IsADirectoryError, PermissionError):  # a Windows junction is removed as a directory
        os.rmdir(path)


def _link_directory(link: Path, target: Path) -> None:
    """A symlink to a directory; on Windows without the symlink privilege, a junction instead."""
    try:
        link.symlink_to(target, target_is_directory=True)
    except OSError:
        if not WINDOWS:
            raise
        import _winapi

        _winapi.CreateJunction(str(target), str(link))


def _link_file(link: Path, target: Path) -> None:
    """A symlink to a file; where symlinks are not allowed (Windows), a hard link, else a copy."""
    try:
        link.symlink_to(target)
    except OSError:
        try:
            os.link(target, link)
        except OSError:
            shutil.copyfile(target, link)


def _die_with_parent() -> None:
    """In the child before exec: have Linux kill the server if the process that started it dies
    without stopping it (a killed test run must not leave a server behind)."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except Exception:  # not Linux: stop() and the fixtures' finally blocks still apply
        pass


def decode_binary_frame(frame: bytes) -> Message:
    event = struct.unpack(">I", frame[:4])[0]
    payload = frame[4:]
    if event == PREVIEW_IMAGE:
        image_type = {1: "JPEG", 2: "PNG"}.get(struct.unpack(">I", payload[:4])[0], "unknown")
        return Message("preview", {"event": event, "image_type": image_type, "image": payload[4:],
                                   "metadata": None})
    if event == PREVIEW_IMAGE_WITH_METADATA:
        length = struct.unpack(">I", payload[:4])[0]
        metadata = json.loads(payload[4:4 + length])
        image_type = "PNG" if metadata.get("image_type") == "image/png" else "JPEG"
        return Message("preview", {"event": event, "image_type": image_type,
                                   "image": payload[4 + length:], "metadata": metadata})
    return Message("binary", {"event": event, "payload": payload})


class HostClient:
    """One websocket connection with its own client_id: the host routes the messages of prompts
    queued with this id here. Connect first, then queue, so that no message is missed."""

    def __init__(self, server: "HostServer", timeout: float = 30.0):
        import websocket  # websocket-client

        self.server = server
        self.client_id = uuid.uuid4().hex
        self.messages: list[Message] = []  # everything received, in order
        self._queued_at: dict[str, int] = {}  # prompt_id -> index of the first message after queueing
        self._ws = websocket.create_connection(
            f"ws://127.0.0.1:{server.port}/ws?clientId={self.client_id}", timeout=timeout)

    def close(self) -> None:
        try:
            self._ws.close()
        except Exception:
            pass

    def __enter__(self) -> "HostClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def queue(self, prompt: dict, extra_data: dict | None = None) -> str:
        """POST /prompt with this client's id; returns the prompt_id or raises PromptRejected."""
        start = len(self.messages)
        prompt_id = self.server.queue_prompt(prompt, client_id=self.client_id, extra_data=extra_data)
        self._queued_at[prompt_id] = start
        return prompt_id

    def next_message(self, timeout: float) -> Message:
        """The next message, or TimeoutError after `timeout` seconds."""
        import websocket

        self._ws.settimeout(max(timeout, 0.01))
        try:
            frame = self._ws.recv()
        except websocket.WebSocketTimeoutException as exc:
            raise TimeoutError(f"no websocket message within {timeout:.0f} s") from exc
        except websocket.WebSocketConnectionClosedException as exc:
            raise HostError("the websocket closed (did the server die?)\n"
                            + self.server.log_tail()) from exc
        if isinstance(frame, bytes):
            message = decode_binary_frame(frame)
        else:
            parsed = json.loads(frame)
            message = Message(parsed.get("type", "?"), parsed.get("data"))
        self.messages.append(message)
        return message

    def wait_for(self, predicate: Callable[[Message], bool], timeout: float) -> Message:
        """Read messages until one satisfies `predicate`; TimeoutError (with what came) if none does."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no matching websocket message within {timeout:.0f} s; got "
                                   f"{[m.type for m in self.messages[-20:]]}")
            try:
                message = self.next_message(min(remaining, 5.0))
            except TimeoutError:
                self.server.assert_alive()
                continue
            if predicate(message):
                return message

    def wait_done(self, prompt_id: str, timeout: float = 600.0) -> PromptResult:
        """Wait for the end of a prompt (the final `executing` with node null) and collect its
        messages; then read /history. Raises TimeoutError if it does not end in `timeout` s."""
        def finished(m: Message) -> bool:
            return (m.type == "executing" and isinstance(m.data, dict)
                    and m.data.get("node") is None and m.data.get("prompt_id") == prompt_id)

        start = self._queued_at.get(prompt_id, 0)
        if not any(finished(m) for m in self.messages[start:]):
            self.wait_for(finished, timeout)
        mine = [m for m in self.messages[start:]
                if not isinstance(m.data, dict) or m.data.get("prompt_id") in (None, prompt_id)]
        types = {m.type for m in mine}
        if "execution_error" in types:
            outcome = "error"
        elif "execution_interrupted" in types:
            outcome = "interrupted"
        elif "execution_success" in types:
            outcome = "success"
        else:
            outcome = "unknown"
        return PromptResult(prompt_id, outcome, mine, self.server.history(prompt_id))


class HostServer:
    """The host as a subprocess: `python main.py --cpu ... --base-directory <base_dir>`, with this
    pack linked into <base_dir>/custom_nodes/. Use start()/stop() or a `with` block."""

    def __init__(self, base_dir: Path | str, *, pack_dir: Path = REPO_ROOT,
                 pack_folder_name: str = PACK_FOLDER_NAME, host_dir: Path = HOST_DIR,
                 python: Path = HOST_PYTHON, extra_args: tuple[str, ...] = (),
                 log_path: Path | None = None):
        self.base_dir = Path(base_dir).resolve()
        self.pack_dir = Path(pack_dir).resolve()
        self.host_dir = Path(host_dir)
        self.python = Path(python)
        self.extra_args = tuple(extra_args)
        self.log_path = Path(log_path) if log_path else self.base_dir / "host.log"
        self.pack_link = self.base_dir / "custom_nodes" / pack_folder_name
        self.input_dir = self.base_dir / "input"
        self.output_dir = self.base_dir / "output"
        self.temp_dir = self.base_dir / "temp"
        self.user_dir = self.base_dir / "user"
        self.port: int | None = None
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen | None = None
        self._log_file = None
        self._make_layout()

    # -- layout and model files -------------------------------------------------------------------

    def _make_layout(self) -> None:
        for d in (self.base_dir / "custom_nodes", self.input_dir, self.output_dir, self.temp_dir,
                  self.user_dir):
            d.mkdir(parents=True, exist_ok=True)
        for folder in MODEL_FOLDERS:
            self.models_dir(folder)
        if _is_link(self.pack_link) and self.pack_link.resolve() != self.pack_dir.resolve():
            _remove_link(self.pack_link)  # a reused base directory linked to another checkout
        if not _is_link(self.pack_link):
            _link_directory(self.pack_link, self.pack_dir)

    def models_dir(self, folder: str) -> Path:
        """<base>/models/<folder>/ (made if missing): where the host looks for that folder's files."""
        path = self.base_dir / "models" / folder
        path.mkdir(parents=True, exist_ok=True)
        return path

    def add_model(self, folder: str, source: Path | str, name: str | None = None,
                  copy: bool = False) -> str:
        """Put a model file into models/<folder>/ (a symlink unless copy=True) and return the name
        to use in a prompt. The host caches folder listings until the directory's mtime changes, so
        the mtime is moved on explicitly (two changes within one timestamp tick would look equal)."""
        source = Path(source).resolve()
        if not source.is_file():
            raise FileNotFoundError(f"model file to add does not exist: {source}")
        directory = self.models_dir(folder)
        target = directory / (name or source.name)
        before = directory.stat().st_mtime_ns
        if target.is_symlink() or target.exists():
            target.unlink()
        if copy:
            shutil.copyfile(source, target)
        else:
            _link_file(target, source)
        self._touch_dir(directory, before)
        return target.name

    def remove_model(self, folder: str, name: str) -> None:
        directory = self.models_dir(folder)
        before = directory.stat().st_mtime_ns
        (directory / name).unlink(missing_ok=True)
        self._touch_dir(directory, before)

    @staticmethod
    def _touch_dir(directory: Path, mtime_before_ns: int) -> None:
        new = max(time.time_ns(), directory.stat().st_mtime_ns, mtime_before_ns + 10_000_000)
        os.utime(directory, ns=(new, new))

    # -- process ----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [str(self.python), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                "--disable-auto-launch", "--base-directory", str(self.base_dir),
                # the default database lives inside the (shared) host folder; keep each server's own
                "--database-url", "sqlite:///:memory:", *self.extra_args]

    def start(self, timeout: float = 300.0) -> "HostServer":
        """Start the server and wait until /object_info answers. Raises HostError (with the log
        tail) if it exits, does not answer within `timeout` s, or failed to import the pack."""
        if not (self.host_dir / "main.py").is_file() or not self.python.is_file():
            raise HostError(f"host not found ({self.host_dir}/main.py, {self.python}): "
                            "run `bash scripts/setup_env.sh` first")
        for attempt in range(3):  # another process may take the free port before the host binds it
            self.port = free_port()
            started = time.monotonic()
            self._spawn()
            try:
                self._wait_ready(timeout)
            except HostError:
                log = self.log_text()
                self.stop()
                if "address already in use" in log.lower() and attempt < 2:
                    continue
                raise
            except BaseException:  # Ctrl-C, a test timeout: never leave a server behind
                self.stop()
                raise
            self.startup_seconds = time.monotonic() - started
            break
        problems = self.pack_import_problems()
        if problems:
            self.stop()
            raise HostError(self._pack_failure_report(problems))
        return self

    def _pack_failure_report(self, problems: list[str]) -> str:
        """A short account of a failed pack import: the traceback through the pack's files, if the
        host logged one (it logs none for errors raised inside comfy_entrypoint/get_node_list), and
        the loader's lines about the pack."""
        pack_paths = (str(self.pack_link), str(self.pack_dir))
        loader_lines = [p for p in problems if not p.lstrip().startswith("File \"")]
        lines = self.log_text().splitlines()
        traceback_lines: list[str] = []
        anchor = next((i for i, line in enumerate(lines) if loader_lines and line == loader_lines[0]), None)
        if anchor is not None:
            start = next((i for i in range(anchor, max(anchor - 80, -1), -1)
                          if lines[i].startswith("Traceback")), None)
            if start is not None and any(p in line for line in lines[start:anchor] for p in pack_paths):
                traceback_lines = lines[start:anchor][-40:]
        hint = ("(no traceback in the host log: errors inside comfy_entrypoint() are logged as one line;"
                " tests/test_node_schemas.py imports the extension in-process and shows the traceback)")
        return "\n".join(["the host started but the pack did not import cleanly:",
                          *(traceback_lines or [hint]), *loader_lines, f"full log: {self.log_path}"])

    def _spawn(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("PYTHONPATH", None)  # the host must see its own modules only, as in a user install
        self._log_file = open(self.log_path, "ab")
        self._log_offset = self.log_path.stat().st_size
        if WINDOWS:
            own_group = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
        else:  # its own process group, so that stop() ends the server's children too
            own_group = {"start_new_session": True, "preexec_fn": _die_with_parent}
        self._proc = subprocess.Popen(self.command(), cwd=self.host_dir, env=env,
                                      stdin=subprocess.DEVNULL, stdout=self._log_file,
                                      stderr=subprocess.STDOUT, **own_group)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise HostError(f"the host exited with code {self._proc.returncode} while starting"
                                f" (log {self.log_path}):\n{self.log_tail()}")
            try:
                status, body = self.request("GET", "/object_info", timeout=30)
                if status == 200 and isinstance(body, dict) and body:
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                raise HostError(f"the host did not answer /object_info within {timeout:.0f} s"
                                f" (log {self.log_path}):\n{self.log_tail()}")
            time.sleep(0.5)

    def stop(self, timeout: float = 20.0) -> None:
        """Terminate the server (its own process group), then kill it if it does not exit."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            _signal_group(proc, terminate=True)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(proc, terminate=False)
                proc.wait(timeout=timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> "HostServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def is_alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def assert_alive(self) -> None:
        if not self.is_alive():
            code = None if self._proc is None else self._proc.returncode
            raise HostError(f"the host is not running (exit code {code}):\n{self.log_tail()}")

    def is_serving(self, timeout: float = 10.0) -> bool:
        """True if the process runs and answers a cheap request."""
        if not self.is_alive():
            return False
        try:
            status, _ = self.request("GET", "/prompt", timeout=timeout)
            return status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    # -- log --------------------------------------------------------------------------------------

    def log_text(self) -> str:
        """This server's log (of the current run, when the file is shared with earlier runs)."""
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return ""
        return data[getattr(self, "_log_offset", 0):].decode("utf-8", "replace")

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def pack_import_problems(self) -> list[str]:
        """Lines of the log that say the pack failed to load: its `(IMPORT FAILED)` entry, the
        loader's warnings naming it, and tracebacks through its files."""
        pack_paths = (str(self.pack_link), str(self.pack_dir))
        loader_phrases = ("IMPORT FAILED", "Cannot import", "Error while calling comfy_entrypoint",
                          "comfy_entrypoint in", "Skip ")
        problems = []
        # Only the start-up part: later tracebacks through the pack are node errors that tests
        # provoke on purpose (a wrong file in a loader), not import failures.
        startup, _, _ = self.log_text().partition("Starting server")
        lines = startup.splitlines()
        for i, line in enumerate(lines):
            mentions_pack = any(p in line for p in pack_paths)
            if mentions_pack and any(phrase in line for phrase in loader_phrases):
                problems.append(line)
            elif mentions_pack and line.lstrip().startswith("File \""):
                problems.append(line + ("\n" + lines[i + 1] if i + 1 < len(lines) else ""))
        return problems

    # -- HTTP -------------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, timeout: float = 60.0,
                raw: bool = False) -> tuple[int, Any]:
        """One HTTP request; returns (status, parsed JSON or bytes when raw/not JSON). HTTP error
        statuses are returned, not raised; connection failures raise."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, payload = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, payload = err.code, err.read()
        if raw:
            return status, payload
        try:
            return status, json.loads(payload)
        except ValueError:
            return status, payload

    def get_json(self, path: str, timeout: float = 60.0) -> Any:
        status, body = self.request("GET", path, timeout=timeout)
        if status != 200:
            raise HostError(f"GET {path} -> HTTP {status}: {body!r:.500}")
        return body

    def object_info(self, node_id: str | None = None) -> dict:
        """/object_info (every node) or /object_info/<node_id> (that node's entry)."""
        if node_id is None:
            return self.get_json("/object_info")
        return self.get_json(f"/object_info/{urllib.parse.quote(node_id)}").get(node_id, {})

    @property
    def pack_python_module(self) -> str:
        """What /object_info reports as `python_module` for the pack's nodes."""
        return f"custom_nodes.{self.pack_link.name}"

    def pack_nodes(self) -> dict[str, dict]:
        """The /object_info entries the host registered from this pack, by node id."""
        return {node_id: info for node_id, info in self.object_info().items()
                if info.get("python_module") == self.pack_python_module}

    def queue_prompt(self, prompt: dict, client_id: str | None = None,
                     extra_data: dict | None = None, timeout: float = 60.0) -> str:
        """POST /prompt (API format); returns the prompt_id or raises PromptRejected. Without a
        client_id the host sends no execution messages: use a HostClient to follow a prompt."""
        body: dict[str, Any] = {"prompt": prompt}
        if client_id is not None:
            body["client_id"] = client_id
        if extra_data is not None:
            body["extra_data"] = extra_data
        status, answer = self.request("POST", "/prompt", body, timeout=timeout)
        if status != 200 or not isinstance(answer, dict) or "prompt_id" not in answer:
            raise PromptRejected(status, answer)
        return answer["prompt_id"]

    def client(self, timeout: float = 30.0) -> HostClient:
        """A new websocket client (use as a context manager)."""
        return HostClient(self, timeout=timeout)

    def run_prompt(self, prompt: dict, timeout: float = 600.0,
                   extra_data: dict | None = None) -> PromptResult:
        """Queue a prompt and wait until it ends; raises PromptRejected if the host refuses it,
        TimeoutError if it does not end in `timeout` s."""
        with self.client() as client:
            prompt_id = client.queue(prompt, extra_data=extra_data)
            return client.wait_done(prompt_id, timeout=timeout)

    def history(self, prompt_id: str) -> dict | None:
        return self.get_json(f"/history/{urllib.parse.quote(prompt_id)}").get(prompt_id)

    def interrupt(self, prompt_id: str | None = None) -> None:
        """POST /interrupt (for one prompt, or whatever runs now)."""
        body = {"prompt_id": prompt_id} if prompt_id else {}
        status, answer = self.request("POST", "/interrupt", body)
        if status != 200:
            raise HostError(f"POST /interrupt -> HTTP {status}: {answer!r:.500}")

    def view(self, filename: str, subfolder: str = "", type: str = "output") -> bytes:
        """GET /view: the bytes of an output (or input/temp) file."""
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": type})
        status, body = self.request("GET", f"/view?{query}", raw=True)
        if status != 200:
            raise HostError(f"GET /view?{query} -> HTTP {status}")
        return body

    def view_image(self, filename: str, subfolder: str = "", type: str = "output"):
        """GET /view decoded as a PIL image (fully loaded)."""
        from PIL import Image

        image = Image.open(io.BytesIO(self.view(filename, subfolder, type)))
        image.load()
        return image

    def output_images(self, result: PromptResult | dict) -> list:
        """Every image the prompt's output nodes reported (SaveImage, PreviewImage, ...), as PIL
        images, by node id order."""
        outputs = result.outputs if isinstance(result, PromptResult) else result.get("outputs", {})
        images = []
        for node_id in sorted(outputs, key=lambda k: (len(k), k)):
            for entry in outputs[node_id].get("images", []):
                images.append(self.view_image(entry["filename"], entry.get("subfolder", ""),
                                              entry.get("type", "output")))
        return images
