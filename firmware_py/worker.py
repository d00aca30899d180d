"""A background thread that a service starts and stops: one shape for the outbox drainer and the receipt publisher."""

from __future__ import annotations

import threading


class Worker:
    """Runs :meth:`_run` on a daemon thread named :attr:`thread_name` until :meth:`stop`.

    ``_run`` waits on ``self._wake`` and ends when ``self._stop`` is set;
    :meth:`_after_stop` runs once the thread has ended (a last flush).
    """

    thread_name = "worker"

    def __init__(self) -> None:
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._after_stop()

    def _run(self) -> None:
        raise NotImplementedError

    def _after_stop(self) -> None:
        return None
