"""The CLIs end their process group, so DDP runs exit with code 0 instead of aborting in gloo's teardown."""
import pytest
import torch.distributed as dist

from vipaint.jobs.distributed import release_process_group


def _init_single_gloo(tmp_path):
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)


@pytest.mark.skipif(not dist.is_available(), reason="torch built without torch.distributed")
def test_group_is_destroyed_after_the_body(tmp_path):
    with release_process_group():
        _init_single_gloo(tmp_path)
        assert dist.is_initialized()
    assert not dist.is_initialized()


@pytest.mark.skipif(not dist.is_available(), reason="torch built without torch.distributed")
def test_group_is_destroyed_on_error_and_the_error_propagates(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with release_process_group():
            _init_single_gloo(tmp_path)
            raise RuntimeError("boom")
    assert not dist.is_initialized()


def test_no_group_is_a_no_op():
    with release_process_group():
        pass
    assert not dist.is_initialized()
