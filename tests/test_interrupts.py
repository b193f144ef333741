import os
import signal
import weakref

import pytest

from qsx_batch.interrupts import Interrupted, raise_if_requested, stop_requests

pytestmark = pytest.mark.quick  # part of the first check (README: Tests)


class _Node:
    pass


@pytest.fixture
def sigint(request):
    """SIGINT set to ``request.param`` for the test (a test run started in the background has it ignored)."""
    previous = signal.signal(signal.SIGINT, request.param)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowed exception
@pytest.mark.parametrize("sigint", [signal.default_int_handler], indirect=True)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_swallowed_in_a_weakref_callback_still_stops_at_the_next_checkpoint(sigint, sig):
    """Python drops exceptions raised inside weakref callbacks ("Exception ignored in ..."); h5py and torch run
    many, so a Ctrl-C landing there used to be lost and the run went on to the end."""
    with stop_requests():
        node = _Node()
        ref = weakref.ref(node, lambda _: os.kill(os.getpid(), sig))
        del node  # the callback runs, the signal handler raises inside it, Python prints and ignores the exception
        assert ref() is None
        with pytest.raises(Interrupted, match=signal.Signals(sig).name):
            raise_if_requested()


@pytest.mark.parametrize("sigint", [signal.SIG_IGN], indirect=True)
def test_an_ignored_sigint_stays_ignored(sigint):
    """Under nohup (or a background job) SIGINT is ignored; qsx-batch keeps it that way."""
    with stop_requests():
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGINT)
        raise_if_requested()  # nothing requested


def test_previous_handlers_come_back_and_no_stop_is_left_pending():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(Interrupted):
        with stop_requests():
            os.kill(os.getpid(), signal.SIGTERM)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    raise_if_requested()  # nothing pending outside the block
