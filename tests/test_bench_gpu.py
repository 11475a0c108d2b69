"""bench/gpu.py: the same measuring code on the CPU (CI has no GPU) and, where there is one, on CUDA."""
import pytest
import torch

from bench import gpu


def test_cpu_run_prints_one_row_per_batch_size(capsys):
    rows = gpu.main(["--device", "cpu", "--size", "64", "--batch-sizes", "1", "3", "--iters", "2", "--warmup", "1"])
    assert [(r["dtype"], r["batch"]) for r in rows] == [("fp32", 1), ("fp32", 3)]
    assert all(r["rate"] > 0 and r["rate_copy"] > 0 and r["peak_mib"] is None for r in rows)
    out = capsys.readouterr().out
    assert "| fp32 | 3 |" in out and "64x64" in out


def test_cuda_requested_without_a_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the error path cannot be reached")
    with pytest.raises(SystemExit, match="sees no CUDA GPU"):
        gpu.main(["--device", "cuda"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_run_reports_peak_memory():
    rows = gpu.main(["--size", "128", "--batch-sizes", "4", "--dtypes", "bf16", "--iters", "2"])
    assert rows[0]["peak_mib"] > 0 and rows[0]["rate"] > 0
