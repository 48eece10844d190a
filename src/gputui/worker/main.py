"""The worker process: load one model in the fixed order, then serve its chat requests.

Order of a load (each step reported as a stage): pin the GPUs -> warm cuBLAS and attention on
each device -> weights straight to the device -> one warm-up generation -> ready (with the
measured memory). Any failure ends the process with a "fatal" message naming the stage: an
OOM or a device-side assert poisons a CUDA process, so a worker is never reused after one.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import time
import traceback
from typing import Any

from gputui.worker import faults
from gputui.worker.channel import Channel, PipeChannel

UNUSED_PACKAGES = ("sklearn",)


class Worker:
    def __init__(self, channel: type[Channel] = PipeChannel) -> None:
        self.cancelled: set[str] = set()
        self._cancel_lock = threading.Lock()
        self.channel = channel(self._cancel)
        self.runtime: Any = None
        self.spec: dict[str, Any] = {}
        self._imports = threading.Thread()  # started by run()
        self._import_error: BaseException | None = None

    def _cancel(self, request_id: str) -> None:
        with self._cancel_lock:
            self.cancelled.add(request_id)

    def is_cancelled(self, request_id: str) -> bool:
        with self._cancel_lock:
            return request_id in self.cancelled

    def run(self, preload: list[str]) -> int:
        t0 = time.monotonic()
        try:
            import torch  # noqa: F401 - imported here, up front, so a spare worker waits warm
        except ImportError as e:  # a base install: one line for the scheduler to show, no traceback
            print(f"this worker cannot run models: {e}; pip install 'gputui[models]'", file=sys.stderr, flush=True)
            return 3

        # Everything the load's first stage (warming cuBLAS) needs, on this thread, before the
        # model's own modules start importing on another: the two threads then never import the
        # same module at once.
        from gputui.models.common import fast_load  # noqa: F401
        from gputui.worker import loading, warmup  # noqa: F401

        # transformers probes optional packages at import; scikit-learn (only its assisted-
        # generation helper uses it) alone cost 1.2 s of a ChatGLM3 worker's 12 s on the H200
        # machine. A None entry makes it "not installed" to importlib, in this process only.
        for unused in UNUSED_PACKAGES:
            sys.modules.setdefault(unused, None)  # type: ignore[assignment,arg-type]

        # Importing a model module costs seconds (12-14 s for ChatGLM3's on the H200 machine while
        # it imported transformers; BLIP2's still does). They import on a thread: a load that
        # arrives meanwhile warms cuBLAS on the GPU at the same time, and waits for them only
        # before the weights.
        self._imports = threading.Thread(target=self._import_all, args=(preload,), name="gputui-imports", daemon=True)
        self._imports.start()
        self.channel.send({"event": "hello", "pid": os.getpid(), "import_seconds": time.monotonic() - t0,
                           "python": sys.version.split()[0]})
        while True:
            msg = self.channel.inbox.get()
            op = msg["op"]
            if op == "shutdown":
                return 0
            if op == "load":
                self.load(msg.get("spec") or {})
            elif op == "generate":
                self.generate(msg)

    # -- load ---------------------------------------------------------------------------

    def _import_all(self, preload: list[str]) -> None:
        t0 = time.monotonic()
        try:
            # the kind's runtime module: it imports what it needs (ChatGLM3's no transformers)
            for module in preload:
                importlib.import_module(module)
        except BaseException as e:  # noqa: BLE001 - raised again by the load that needs them
            self._import_error = e
        # the parent learns when this worker is really warm (a spare is then a fast load)
        self.channel.send({"event": "imported", "seconds": time.monotonic() - t0,
                           "error": None if self._import_error is None else str(self._import_error)[:500]})

    def imports_done(self) -> float:
        """Wait for the model modules' imports (the load calls this before the weights);
        returns the seconds waited. An import that failed fails the load here."""
        t0 = time.monotonic()
        self._imports.join()
        if self._import_error is not None:
            raise self._import_error
        return time.monotonic() - t0

    def stage(self, name: str, **extra: Any) -> None:
        self.channel.send({"event": "stage", "stage": name, "t": time.monotonic(), **extra})

    def load(self, spec: dict[str, Any]) -> None:
        from gputui.worker.loading import load_model

        self.spec = spec
        try:
            self.runtime, report = load_model(spec, self.stage, self.imports_done)
        except BaseException as e:  # noqa: BLE001 - every failure is reported, then we exit
            self.fatal(e, stage=getattr(e, "gputui_stage", "loading"))
        name_process(str(spec.get("name") or spec.get("kind")))
        self.channel.send({"event": "ready", **report})

    def fatal(self, e: BaseException, stage: str) -> None:
        text = f"{type(e).__name__}: {e}".strip()
        self.channel.send({
            "event": "fatal", "stage": stage, "message": text[:4000],
            "oom": _is_oom(e), "device_assert": "device-side assert" in text,
            "traceback": traceback.format_exc()[-4000:],
        })
        sys.stderr.flush()
        os._exit(3)

    # -- requests -----------------------------------------------------------------------

    def generate(self, msg: dict[str, Any]) -> None:
        """Answer one request: on this thread, or - for a runtime that batches requests
        (runtime.concurrent) - on a thread of its own, so the next request joins the batch."""
        if getattr(self.runtime, "concurrent", False):
            threading.Thread(target=self._generate, args=(msg,), name="gputui-request", daemon=True).start()
        else:
            self._generate(msg)

    def _generate(self, msg: dict[str, Any]) -> None:
        rid = str(msg.get("id"))
        if self.runtime is None:
            self.channel.send({"event": "error", "id": rid, "message": "no model loaded in this worker"})
            return

        def emit(text: str, **extra: Any) -> None:
            self.channel.send({"event": "token", "id": rid, "text": text, **extra})
            faults.pause("token")

        try:
            faults.device_assert("generate")
            stats = self.runtime.generate(msg, emit, lambda: self.is_cancelled(rid))
        except BaseException as e:  # noqa: BLE001
            if _is_poisoning(e):
                self.channel.send({"event": "error", "id": rid, "message": f"{type(e).__name__}: {e}"[:2000]})
                self.fatal(e, stage="generate")
            self.channel.send({"event": "error", "id": rid, "message": _user_message(e)})
            return
        finally:
            with self._cancel_lock:
                self.cancelled.discard(rid)
        self.channel.send({"event": "done", "id": rid, **stats})


def name_process(model: str) -> None:
    """Once ready, the process title names the user and the model (`gputui: alice/chatglm3
    (python -m gputui.worker)`): nvidia-smi, nvitop and gpustat show it, so another user on a
    shared GPU sees whose model holds the memory (nvitop #228, Ollama #4479 ask it of servers).
    setproctitle rewrites the argv area, which is what those tools read; without it (an image
    that lacks the package) the plain command line stays, which names gputui's worker too."""
    import getpass

    try:
        from setproctitle import setproctitle
    except ImportError:
        return
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    safe = "".join(c if c.isprintable() else "?" for c in model)[:64]
    setproctitle(f"gputui: {user}/{safe} (python -m gputui.worker)")


def _is_oom(e: BaseException) -> bool:
    return "out of memory" in str(e).lower() or type(e).__name__ == "OutOfMemoryError"


def _is_poisoning(e: BaseException) -> bool:
    """Errors after which a CUDA process must not be trusted again."""
    text = str(e)
    return _is_oom(e) or "device-side assert" in text or "CUDA error" in text or "CUBLAS_STATUS" in text


def _user_message(e: BaseException) -> str:
    msg = getattr(e, "user_message", None)
    return str(msg) if msg else f"{type(e).__name__}: {e}"[:2000]


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m gputui.worker")
    ap.add_argument("--preload", default="", help="comma-separated modules to import before hello")
    args = ap.parse_args(argv)
    code = Worker().run([m for m in args.preload.split(",") if m])
    # Asked to shut down: end here, as the EOF path does. The stdin reader thread may be inside
    # sys.stdin's buffered reader at this moment, and an interpreter finalizing under it aborts
    # ("Fatal Python error: _enter_buffered_busy", exit -6: seen once in CI on a clean unload).
    # Nothing is left to flush but stderr; the driver frees the GPU memory either way.
    sys.stderr.flush()
    os._exit(code)
