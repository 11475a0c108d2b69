import os
import stat

import pytest

from pipeline.atomic import atomic_directory, remove_stale_temporaries


def test_folder_appears_only_when_complete(tmp_path):
    final = tmp_path / "1.2.3"
    with atomic_directory(final) as tmp:
        (tmp / "a.txt").write_text("x")
        assert not final.exists() and tmp.name.startswith(".1.2.3.tmp-")
    assert (final / "a.txt").read_text() == "x"
    assert stat.S_IMODE(final.stat().st_mode) == 0o777 & ~_umask()


def _umask():
    m = os.umask(0)
    os.umask(m)
    return m


def test_failure_leaves_nothing(tmp_path):
    final = tmp_path / "1.2.3"
    with pytest.raises(RuntimeError):
        with atomic_directory(final) as tmp:
            (tmp / "half.dcm").write_bytes(b"partial")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_not_overwritten(tmp_path):
    (tmp_path / "1.2").mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        with atomic_directory(tmp_path / "1.2"):
            pass


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = tmp_path / ".1.2.3.tmp-999999999-abc"  # no such pid
    alive = tmp_path / f".1.2.3.tmp-{os.getpid()}-def"
    dead.mkdir()
    alive.mkdir()
    assert remove_stale_temporaries(tmp_path / "1.2.3") == [dead]
    assert alive.exists() and not dead.exists()
