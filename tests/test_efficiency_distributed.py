"""Tests for dlcourse.efficiency.distributed: the distributed equality test (DistributedDataParallel on
2 gloo processes on loopback == single-process SGD on the same global batches, float64, rtol 1e-10),
the two classic mistakes (same shard on every worker; sum without the divide == lr * P), gradient
accumulation == the big-batch step, a crashing rank gives a clear error (never a hang), one explicit
all-reduce == the NumPy ring simulator.

Every spawn costs seconds (two fresh interpreters import torch; DDP's constructor imports
torch._dynamo), so the four training configurations share ONE pair of processes (ddp_train_many, a
module fixture); with the crashing rank and the all-reduce demo that makes three spawns, each under a
hard timeout.  No timing asserts (benchmarks/bench_distributed.py measures).
"""
import numpy as np
import pytest
import torch

from dlcourse.efficiency import distributed as D

TIMEOUT = 120  # seconds for a whole spawned run: generous for a loaded 2-core machine; it never hangs
TOL64 = dict(rtol=1e-10, atol=1e-12)


def assert_states_close(a, b, **tol):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), err_msg=k, **tol)


def max_rel_diff(a, b):
    return max(((a[k] - b[k]).abs().max() / b[k].abs().max()).item() for k in a)


@pytest.fixture(scope="module")
def reference():
    return D.single_process_train(steps=20, global_batch=64, lr=0.1, seed=0)


CONFIGS = dict(right={}, same_shard=dict(same_shard=True), sum_only=dict(average=False),
               float32=dict(dtype=torch.float32))


@pytest.fixture(scope="module")
def runs():
    """Every configuration in one pair of processes (spawning costs seconds; training 20 steps does not)."""
    out = D.ddp_train_many(list(CONFIGS.values()), world_size=2, timeout=TIMEOUT)
    return dict(zip(CONFIGS, out))


@pytest.fixture(scope="module")
def ddp_run(runs):
    return runs["right"]


def test_ddp_equals_single_process(ddp_run, reference):
    """The distributed equality test: same weights and losses as one process on the global batch."""
    assert ddp_run["ranks_agree"]  # every rank ends with bit-identical weights
    assert ddp_run["state"]["0.weight"].dtype == torch.float64
    assert_states_close(ddp_run["state"], reference["state"], **TOL64)
    np.testing.assert_allclose(ddp_run["losses"], reference["losses"], **TOL64)
    # and it trained: the loss went down, the weights moved from their start
    assert reference["losses"][-1] < reference["losses"][0]
    start = D.make_model(0).state_dict()
    assert max_rel_diff(reference["state"], start) > 1e-2


def test_same_shard_mistake_trains_on_one_shard(runs, reference):
    """Every worker on shard 0: the run is single-process training on N/P rows, not the global batch."""
    run = runs["same_shard"]
    assert run["ranks_agree"]  # the ranks agree with each other -- the bug is silent
    assert max_rel_diff(run["state"], reference["state"]) > 1e-3
    half = D.single_process_train(shard=(0, 2))
    assert_states_close(run["state"], half["state"], **TOL64)


def test_sum_without_average_is_lr_times_p(runs, reference):
    """All-reduce that sums but does not divide: the step of lr * P on the right gradient."""
    run = runs["sum_only"]
    assert run["ranks_agree"]
    assert max_rel_diff(run["state"], reference["state"]) > 1e-3
    big_lr = D.single_process_train(lr=0.1 * 2)
    assert_states_close(run["state"], big_lr["state"], **TOL64)
    assert run["comm_seconds"] >= 0  # the manual all-reduce is timed


def test_grad_accumulation_equals_big_batch(reference):
    for accum in (2, 4):
        acc = D.grad_accumulation_train(accum)
        assert_states_close(acc["state"], reference["state"], **TOL64)
        np.testing.assert_allclose(acc["losses"], reference["losses"], **TOL64)


def test_single_process_follows_momentum_and_shards():
    a = D.single_process_train(steps=3, momentum=0.9)
    b = D.grad_accumulation_train(2, steps=3, momentum=0.9)
    assert_states_close(a["state"], b["state"], **TOL64)
    with pytest.raises(ValueError, match="divisible"):
        D.shard_rows(63, 2, 0)


def test_global_batches_are_a_fixed_order():
    idx = D.global_batches(0, steps=40, global_batch=64, n_examples=1257)
    assert idx.shape == (40, 64)
    np.testing.assert_array_equal(idx, D.global_batches(0, 40, 64, 1257))  # same seed, same order
    assert not np.array_equal(idx, D.global_batches(1, 40, 64, 1257))
    per_epoch = 1257 // 64
    first_epoch = idx[:per_epoch].ravel()
    assert len(np.unique(first_epoch)) == first_epoch.size  # no row twice within an epoch
    assert [D.shard_rows(64, 2, r) for r in range(2)] == [slice(0, 32), slice(32, 64)]


def test_a_crashing_rank_raises_a_clear_error():
    """A rank that raises: the other is terminated and the error carries the traceback -- no hang."""
    with pytest.raises(D.DistributedTrainingError) as err:
        D.ddp_train(world_size=2, steps=3, fail_rank=1, sync="manual", timeout=TIMEOUT)
    msg = str(err.value)
    assert "rank 1" in msg and "fails on purpose" in msg and "Traceback" in msg


def test_a_run_past_its_timeout_is_terminated_not_waited_for():
    """timeout=0.5 s ends while the children are still starting: a clear error, and no orphan left."""
    import multiprocessing
    with pytest.raises(D.DistributedTrainingError, match="did not finish within timeout=0.5 s"):
        D.ddp_train(world_size=2, steps=3, sync="manual", timeout=0.5)
    assert not multiprocessing.active_children()  # both ranks terminated and joined


def test_a_native_crash_names_the_signal_and_the_stage():
    """A rank killed by SIGABRT while training (as a C++ terminate in gloo would): the group restarts
    once (as torchrun --max-restarts would), then the error names the signal and the stage."""
    job = dict(kind="allreduce", world_size=2, length=8, seed=0, backend="gloo", timeout=TIMEOUT,
               abort=(1, "train"))
    with pytest.warns(RuntimeWarning, match="restarting the 2 processes"), \
            pytest.raises(D.DistributedTrainingError,
                          match=r"rank 1 died \(SIGABRT.*\) while training.*\(after 1 restart\)"):
        D._spawn(job)  # aborts on every attempt: one restart, then the error


def test_a_crash_after_the_final_barrier_keeps_the_complete_result():
    """A rank that dies while tearing down, after every rank passed the barrier: warned, not lost."""
    job = dict(kind="allreduce", world_size=2, length=8, seed=0, backend="gloo", timeout=TIMEOUT,
               abort=(1, "teardown"))
    with pytest.warns(RuntimeWarning, match=r"rank 1 died \(SIGABRT.*tearing down.*result is complete"):
        out = D._spawn(job)
    assert out["runs"]["ranks_agree"] and out["runs"]["result"].shape == (8,)


def test_exit_reasons_are_named():
    assert D._exit_reason(-9).startswith("SIGKILL") and "out-of-memory" in D._exit_reason(-9)
    assert D._exit_reason(1) == "exit code 1"


def test_bad_arguments_fail_in_the_parent():
    with pytest.raises(ValueError, match="divisible"):
        D.ddp_train(global_batch=63)
    with pytest.raises(ValueError, match="sync"):
        D.ddp_train(sync="nccl")
    with pytest.raises(TypeError, match="unknown"):
        D.ddp_train_many([dict(learning_rate=0.1)])


def test_allreduce_demo_equals_numpy_ring():
    out = D.allreduce_demo(world_size=2, length=8, timeout=TIMEOUT)
    assert out["inputs"].shape == (2, 8) and out["ranks_agree"]
    np.testing.assert_allclose(out["torch"], out["expected"], rtol=1e-15, atol=1e-15)
    if out["ring"] is None:
        pytest.skip("dlcourse.efficiency.numpy_impl.ring_allreduce is not there yet")
    assert out["ring"].shape == (2, 8)
    for worker in out["ring"]:
        np.testing.assert_allclose(worker, out["torch"], rtol=1e-15, atol=1e-15)


def test_launch_commands_name_the_multi_gpu_pieces():
    text = D.launch_commands()
    for word in ("torchrun", "--nproc_per_node", "--nnodes", "--node_rank", "--rdzv_endpoint", "nccl",
                 "LOCAL_RANK", "torch.cuda.set_device"):
        assert word in text


def test_ddp_float32_equals_single_process_to_1e6(runs):
    run = runs["float32"]
    ref = D.single_process_train(dtype=torch.float32)
    assert run["state"]["0.weight"].dtype == torch.float32
    assert_states_close(run["state"], ref["state"], rtol=1e-6, atol=1e-6)
