import os
import signal
import weakref

import pytest

from qsx_batch.interrupts import Interrupted, raise_if_requested, stop_requests


class _Node:
    pass


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowed exception
def test_a_signal_swallowed_in_a_weakref_callback_still_stops_at_the_next_checkpoint():
    """Python drops exceptions raised inside weakref callbacks ("Exception ignored in ..."); h5py and torch run
    many, so a Ctrl-C landing there used to be lost and the run went on to the end."""
    with stop_requests():
        node = _Node()
        ref = weakref.ref(node, lambda _: os.kill(os.getpid(), signal.SIGINT))
        del node  # the callback runs, the signal handler raises inside it, Python prints and ignores the exception
        assert ref() is None
        with pytest.raises(Interrupted, match="SIGINT"):
            raise_if_requested()


def test_previous_handlers_come_back_and_no_stop_is_left_pending():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(Interrupted):
        with stop_requests():
            os.kill(os.getpid(), signal.SIGTERM)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    raise_if_requested()  # nothing pending outside the block
