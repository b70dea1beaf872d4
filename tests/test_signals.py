from __future__ import annotations

import os
import signal

import pytest

from fedseg.signals import Interrupted, exit_code_of, signals_deferred, stop_on_signals


def test_sigterm_is_raised_like_ctrl_c_once_and_later_signals_wait_for_the_save() -> None:
    saved, before = [], signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as stopped:
        with stop_on_signals():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(1000):
                    pass
                pytest.fail("SIGTERM did not stop the block")
            except KeyboardInterrupt:
                os.kill(os.getpid(), signal.SIGINT)  # impatient: a second signal while state is saved
                saved.append("state")
                raise
    assert saved == ["state"] and isinstance(stopped.value, KeyboardInterrupt)
    assert stopped.value.name == "SIGTERM" and exit_code_of(stopped.value) == 143
    assert exit_code_of(KeyboardInterrupt()) == 130
    assert signal.getsignal(signal.SIGTERM) == before


def test_signals_wait_until_a_commit_is_written() -> None:
    written = []
    with pytest.raises(Interrupted):
        with stop_on_signals():
            with signals_deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                written.append("reply")
                written.append("state")
            written.append("never")
    assert written == ["reply", "state"]
