"""SIGTERM, SIGINT and SIGHUP reach the main thread's wait whichever thread the kernel
hands them to (a worker thread's, in the exporter, as often as not)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

from modelarts_exporter.process_signals import SignalWaiter

SCRIPT = textwrap.dedent(
    """
    import signal, threading, time
    from modelarts_exporter.process_signals import SignalWaiter

    def worker(go):
        go.wait()
        time.sleep(0.3)  # let the main thread fall asleep in its wait first
        # the signal lands in this thread, not in the main one that waits
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
        signal.pthread_kill(threading.get_ident(), signal.SIGHUP)

    with SignalWaiter((signal.SIGTERM, signal.SIGHUP)) as waiter:
        go = threading.Event()
        thread = threading.Thread(target=worker, args=(go,))
        thread.start()
        go.set()
        print(waiter.wait().name, waiter.wait().name, flush=True)
        thread.join()
    print(signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, flush=True)
    """
)


def test_a_signal_delivered_to_another_thread_wakes_the_main_threads_wait() -> None:
    # Before: the main thread slept in threading.Event.wait(), which a signal handled
    # in another thread never interrupts, and SIGTERM went unnoticed until SIGKILL.
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    *received, restored = done.stdout.split()
    assert sorted(received) == ["SIGHUP", "SIGTERM"]  # pending signals run in number order
    assert restored == "True"


def test_restore_gives_back_the_previous_handlers_early() -> None:
    before = signal.getsignal(signal.SIGHUP)
    with SignalWaiter((signal.SIGHUP, signal.SIGUSR2)) as waiter:
        assert signal.getsignal(signal.SIGHUP) != before
        waiter.restore((signal.SIGHUP,))
        assert signal.getsignal(signal.SIGHUP) == before
        assert signal.getsignal(signal.SIGUSR2) != signal.SIG_DFL
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL
    assert signal.set_wakeup_fd(-1) == -1  # the wake-up descriptor is given back too
