"""A stop signal while a journal write waits for another process's lock: the write waits, ends, then stops.

Real processes: the test holds the journal's lock file as another worker would, a real
``mnist-hpo``-opened journal storage waits for it, and a real SIGTERM arrives meanwhile.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import optuna

WRITER = textwrap.dedent(
    """
    import sys
    import optuna
    from mnist_hpo import storage
    from mnist_hpo.signals import Interrupts

    journal = storage.open_storage("journal:" + sys.argv[1])
    with Interrupts().installed():
        print("ready", flush=True)
        try:
            journal.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "written-under-the-lock")
        except KeyboardInterrupt as exc:
            print("interrupted by", exc, flush=True)
            sys.exit(130)
    print("never interrupted", flush=True)
    """
)


def test_sigterm_while_waiting_for_the_journal_lock_waits_for_it_then_stops(tmp_path):
    journal = tmp_path / "study.log"
    journal.touch()
    lock = tmp_path / "study.log.lock"
    os.symlink(journal, lock)  # held, as Optuna's symlink lock is held by another worker's write
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(journal)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(1.0)  # the writer now waits in the lock's retry loop
        writer.send_signal(signal.SIGTERM)
        time.sleep(1.5)
        assert lock.is_symlink(), "the interrupted writer removed the lock another process holds"
        assert writer.poll() is None, "the writer stopped while another process held the lock"
        lock.unlink()  # the other worker's write ends
        out, _ = writer.communicate(timeout=60)
    finally:
        if writer.poll() is None:
            writer.kill()
    assert writer.returncode == 130 and out.strip() == "interrupted by SIGTERM", out
    written = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    assert [s.study_name for s in written.get_all_studies()] == ["written-under-the-lock"], "the write finished first"
