"""glibc malloc settings: large freed blocks are reused instead of faulted in again."""
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO

PROBE = textwrap.dedent("""
    import resource, sys
    import torch
    sys.path.insert(0, sys.argv[1])
    from pipeline.inference.malloc import keep_freed_memory

    def faults():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        x = torch.ones(1, 32, 512, 512)  # activations of one slice: 32 MiB
        with torch.inference_mode():
            for _ in range(40):
                y = torch.relu(x * 2.0)  # new 32 MiB blocks, touched, freed
                del y
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    plain = faults()
    applied = keep_freed_memory()
    faults()  # the heap grows once
    print(applied, plain, faults())
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_large_blocks_are_reused_after_keep_freed_memory():
    out = subprocess.run([sys.executable, "-c", PROBE, str(REPO)], capture_output=True, text=True, check=True)
    applied, plain, kept = out.stdout.split()
    assert applied == "True"
    assert int(plain) > 40 * 4000  # every block faulted in anew
    assert int(kept) < int(plain) / 10  # reused: a few blocks at most


def test_keep_freed_memory_is_applied_once_and_reports_it(caplog):
    from pipeline.inference import malloc as allocator

    caplog.set_level("INFO", logger="pipeline.inference.malloc")
    first = allocator.keep_freed_memory()
    assert allocator.keep_freed_memory() is first
    assert sum("malloc" in r.getMessage() for r in caplog.records) <= 1
