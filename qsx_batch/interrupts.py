"""Stop requests (Ctrl-C, SIGTERM) that cannot be lost.

Python raises KeyboardInterrupt wherever the main thread happens to be. When that is a weakref callback or a
``__del__`` (h5py and torch run many), Python prints "Exception ignored in ..." and the run goes on as if nothing
happened. So the handlers here also remember the request, and :func:`raise_if_requested` runs where work
continues: the executors before each evaluation and on each poll, ``retrain`` after each stored epoch. A
swallowed signal still stops the run before the next evaluation.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

_requested: str | None = None


class Interrupted(BaseException):
    """A stop request (SIGINT or SIGTERM). A BaseException, like KeyboardInterrupt, so that no ``except
    Exception`` on the way (e.g. the evaluator's per-individual error capture) swallows it."""


def _request_stop(signum, frame) -> None:
    global _requested
    _requested = signal.Signals(signum).name
    raise Interrupted(_requested)


@contextmanager
def stop_requests() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT (unless ignored, as under nohup) raise :class:`Interrupted` and are
    remembered; the previous handlers come back afterwards."""
    global _requested
    _requested = None
    signals = [signal.SIGTERM] + ([signal.SIGINT] if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN else [])
    previous = {sig: signal.signal(sig, _request_stop) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _requested = None


def raise_if_requested() -> None:
    """Raise :class:`Interrupted` if a stop was requested whose exception got swallowed on its way up."""
    if _requested is not None:
        raise Interrupted(_requested)
