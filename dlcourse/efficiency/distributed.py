"""Chapter 10's data-parallel training on PyTorch's own engine, ``torch.distributed``.

P worker processes each hold a full copy of the model.  Every step, a global batch of N
examples is cut into P contiguous shards of N/P rows; worker r computes the gradient of the
MEAN loss over its shard, an all-reduce AVERAGES the P gradients (sum, then divide by P), and
every worker applies the same SGD step.  Because the mean over the global batch is the average
of the P shard means (equal shard sizes), the step is exactly single-process SGD on the global
batch, up to the order of floating-point additions (Goyal et al. 2017, "Accurate, large
minibatch SGD"; Li et al. 2020, "PyTorch Distributed: experiences on accelerating data parallel
training", the DistributedDataParallel paper).

What is here
------------
* :func:`ddp_train` spawns P processes (``torch.multiprocessing``, start method ``"spawn"``, so
  it works from a notebook: the worker function lives in this module), joins them with the
  ``gloo`` backend on loopback, wraps the model in
  :class:`torch.nn.parallel.DistributedDataParallel` and trains; rank 0's weights come back.
  Flags reproduce the two classic mistakes: ``same_shard=True`` (every worker reads the same
  shard, as when every worker's sampler is seeded identically: the run is training on 1/P of
  the data) and ``average=False`` (a hand-written all-reduce that sums but does not divide:
  the step is P times too large, the same as ``lr * P``).
* :func:`ddp_train_many`: several such runs in ONE set of processes (spawning P interpreters
  costs seconds -- each imports torch, and DDP's constructor imports ``torch._dynamo`` -- far
  more than 20 steps of the digits MLP).
* :func:`single_process_train`, the reference: the same model, the same global batches, one
  process.  :func:`grad_accumulation_train`, the one-device stand-in for data parallel:
  micro-batches whose gradients add up to the big batch's before one step.
* :func:`allreduce_demo`: one explicit ``dist.all_reduce`` against the NumPy ring simulator
  (Patarasuk and Yuan 2009) of :mod:`dlcourse.efficiency.numpy_impl`.
* :func:`launch_commands`: what the same job looks like with ``torchrun`` on a multi-GPU node
  (NCCL) and on two nodes -- text only, not run here.

The optimiser is plain SGD (``momentum=0`` by default; a momentum can be passed and the
equality still holds, since every worker sees the same averaged gradient).  The model is the
course's digits MLP, ``nn.Sequential(Linear(D, H), ReLU(), Linear(H, K))``, built from
``torch.manual_seed(seed)`` in every process, so every rank starts from the same weights (DDP
would also broadcast rank 0's weights at construction, which hides a seeding mistake for the
weights but NOT for the data).

Dimension letters (the course glossary)
---------------------------------------
N    global batch size (examples in one step, over all workers)
D    input features (64 for the 8x8 digits)
H    hidden units
K    classes (10)
P    workers (processes, "world size")
S    steps
L    length of a flat tensor that is all-reduced
"""
from __future__ import annotations

import datetime
import os
import signal
import sys
import tempfile
import time
import warnings

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from dlcourse.runtime import configure_torch

configure_torch()

__all__ = ["global_batches", "make_model", "shard_rows", "single_process_train", "grad_accumulation_train",
           "ddp_train", "ddp_train_many", "allreduce_demo", "launch_commands", "DistributedTrainingError"]


# --------------------------------------------------------------------------- the pieces every process shares

def make_model(seed: int = 0, hidden: int = 32, dtype: torch.dtype = torch.float64, d_in: int = 64,
               classes: int = 10) -> nn.Module:
    """The digits MLP ``Linear(D, H) -> ReLU -> Linear(H, K)`` with weights drawn from ``seed``.

    The global torch generator is left as it was (the draw happens in a forked RNG), so every
    process that calls this with the same seed gets bit-identical weights.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, classes))
    return model.to(dtype)


def global_batches(seed: int, steps: int, global_batch: int, n_examples: int) -> np.ndarray:
    """Row indices of every global batch, a fixed order drawn from ``seed``.

    Epochs are fresh permutations of the ``n_examples`` rows (a generator seeded once); each
    epoch is cut into ``n_examples // global_batch`` consecutive batches and the ragged tail
    is dropped, so every batch has exactly N rows and every shard N/P rows.  Every worker calls
    this with the SAME seed and gets the same order, as :class:`DistributedSampler` does with
    its shared ``seed`` and ``set_epoch``; workers differ only in the shard they take.

    Returns
    -------
    idx : int64 ndarray of shape (S, N)
    """
    if not 0 < global_batch <= n_examples:
        raise ValueError(f"global_batch must be in 1..{n_examples}, got {global_batch}")
    rng = np.random.default_rng(seed)
    per_epoch = n_examples // global_batch
    rows = []
    while len(rows) < steps:
        perm = rng.permutation(n_examples)
        rows.extend(perm[i * global_batch:(i + 1) * global_batch] for i in range(per_epoch))
    return np.stack(rows[:steps]).astype(np.int64) if steps else np.zeros((0, global_batch), np.int64)


def shard_rows(global_batch: int, world_size: int, rank: int) -> slice:
    """Rank ``rank``'s contiguous shard of a global batch: rows r*N/P : (r+1)*N/P."""
    if global_batch % world_size:
        raise ValueError(f"global_batch {global_batch} must be divisible by world_size {world_size}: "
                         "equal shards make the average of shard means the global mean")
    per = global_batch // world_size
    return slice(rank * per, (rank + 1) * per)


def _digits(seed: int, dtype: torch.dtype):
    from dlcourse.data import load_digits
    d = load_digits(seed)
    return torch.as_tensor(d.x_train, dtype=dtype), torch.as_tensor(d.y_train)


def _cpu_state(model: nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- one process: the references

def single_process_train(steps: int = 20, global_batch: int = 64, lr: float = 0.1, seed: int = 0,
                         dtype: torch.dtype = torch.float64, hidden: int = 32, momentum: float = 0.0,
                         shard: tuple[int, int] | None = None, device: str = "cpu", data=None) -> dict:
    """The reference: the model of :func:`ddp_train`, the same global batches, one process.

    Parameters
    ----------
    shard : (rank, P) or None
        Train on that rank's shard of every global batch only (N/P rows): what every worker
        of a ``same_shard=True`` run effectively does.
    data : (x (n, D), y (n,)) tensors or None
        Defaults to ``load_digits(seed)``'s training set.

    Returns
    -------
    dict with ``state`` (the state_dict, CPU tensors), ``losses`` (S,) float ndarray (the mean
    loss over the batch each step, before the step), ``seconds`` (the loop's wall time).
    """
    x, y = _digits(seed, dtype) if data is None else data
    x, y = x.to(device=device, dtype=dtype), y.to(device)
    model = make_model(seed, hidden, dtype).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    idx = torch.as_tensor(global_batches(seed, steps, global_batch, len(x)), device=device)
    rows = slice(None) if shard is None else shard_rows(global_batch, shard[1], shard[0])
    losses = []
    t0 = time.perf_counter()
    for s in range(steps):
        b = idx[s, rows]
        loss = F.cross_entropy(model(x[b]), y[b])  # mean over the batch
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return dict(state=_cpu_state(model), losses=np.array(losses), seconds=time.perf_counter() - t0)


def grad_accumulation_train(accum_steps: int, steps: int = 20, global_batch: int = 64, lr: float = 0.1,
                            seed: int = 0, dtype: torch.dtype = torch.float64, hidden: int = 32,
                            momentum: float = 0.0, device: str = "cpu", data=None) -> dict:
    """Gradient accumulation: the big-batch step from ``accum_steps`` micro-batches, one device.

    Each global batch of N rows is cut into ``accum_steps`` contiguous micro-batches of
    N / accum_steps rows (the same cut as P workers' shards).  Each micro-batch's mean loss is
    divided by ``accum_steps`` before ``backward``: ``.grad`` ADDS across backward calls, so
    after the last micro-batch it holds the mean of the micro means = the global mean's
    gradient; then one optimiser step.  Memory is one micro-batch's activations -- the
    one-GPU stand-in for data parallel (time is the sum of the micro-batches instead).

    Returns the same dict as :func:`single_process_train`.
    """
    x, y = _digits(seed, dtype) if data is None else data
    x, y = x.to(device=device, dtype=dtype), y.to(device)
    model = make_model(seed, hidden, dtype).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    idx = torch.as_tensor(global_batches(seed, steps, global_batch, len(x)), device=device)
    losses = []
    t0 = time.perf_counter()
    for s in range(steps):
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for m in range(accum_steps):
            b = idx[s, shard_rows(global_batch, accum_steps, m)]
            loss = F.cross_entropy(model(x[b]), y[b]) / accum_steps  # mean of means, not sum
            loss.backward()  # accumulates into .grad
            total += loss.item()
        opt.step()
        losses.append(total)
    return dict(state=_cpu_state(model), losses=np.array(losses), seconds=time.perf_counter() - t0)


# --------------------------------------------------------------------------- spawning and joining processes

class DistributedTrainingError(RuntimeError):
    """A distributed run failed or hung; the message names the likely cause."""


# What each rank is doing, written to a small file so that the parent can say where a rank died.
_STAGES = {"init": "joining the process group", "train": "training", "barrier": "at the final barrier",
           "teardown": "tearing down, after training had finished on every rank", "done": "exiting"}


def _mark(out_dir: str, rank: int, stage: str, job: dict) -> None:
    with open(os.path.join(out_dir, f"rank{rank}.stage"), "w") as f:
        f.write(stage)
    if job.get("abort") == (rank, stage):  # tests only: a native crash at this stage
        os.abort()


def _stage(out_dir: str, rank: int) -> str | None:
    try:
        with open(os.path.join(out_dir, f"rank{rank}.stage")) as f:
            return f.read()
    except OSError:
        return None


def _init(rank: int, world_size: int, out_dir: str, backend: str, timeout: float) -> None:
    """Join the process group through a file in ``out_dir`` (a FileStore).

    On one machine a file is the simplest rendezvous: no port to pick (a port chosen by the
    parent can be taken by another program before rank 0 binds it) and no store server that
    must outlive the other ranks' teardown.  Across machines torchrun's TCP rendezvous
    (MASTER_ADDR, MASTER_PORT) does this job -- see :func:`launch_commands`.
    """
    if sys.platform.startswith("linux"):  # gloo would otherwise pick the interface of the host name
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    store = dist.FileStore(os.path.join(out_dir, "rendezvous"), world_size)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=timeout))


def _worker(rank: int, job: dict, out_dir: str) -> None:
    """Entry point of every spawned process (module level, so "spawn" can import it)."""
    _mark(out_dir, rank, "init", job)
    _init(rank, job["world_size"], out_dir, job["backend"], job["timeout"])
    try:
        _mark(out_dir, rank, "train", job)
        result = dict(runs=_RUNNERS[job["kind"]](rank, job))
        if rank == 0:
            path = os.path.join(out_dir, "result.pt")
            torch.save(result, path + ".tmp")
            os.replace(path + ".tmp", path)  # the parent never reads a half-written file
        _mark(out_dir, rank, "barrier", job)
        dist.barrier()
        _mark(out_dir, rank, "teardown", job)  # every rank has passed the barrier: the result is complete
    finally:
        dist.destroy_process_group()
    _mark(out_dir, rank, "done", job)


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        what = {"SIGKILL": "killed, most often by the out-of-memory killer",
                "SIGABRT": "an abort in native code (C++ std::terminate, e.g. in the gloo backend)",
                "SIGSEGV": "a crash in native code"}.get(name, "killed by that signal")
        return f"{name}: {what}"
    return f"exit code {code}"


class _RankKilled(DistributedTrainingError):
    """A rank died by a signal (not a Python exception) before the result was complete."""


def _spawn(job: dict, restarts: int = 1) -> dict:
    """Run ``job`` on P spawned processes; rank 0's result, or a clear error -- never a hang.

    A rank that dies after every rank has passed the final barrier (while the process group is
    torn down) does not lose the run: the result is complete, so it is returned with a warning.
    A rank killed by a signal earlier (a native crash, not a bug in the Python code, which
    raises) restarts the whole group up to ``restarts`` times with a warning, as ``torchrun
    --max-restarts`` does; every run starts from the same seeds, so a restart gives the same
    result.  A Python exception or a timeout is never retried.
    """
    for attempt in range(restarts + 1):
        try:
            return _spawn_once(job)
        except _RankKilled as e:
            if attempt == restarts:
                raise DistributedTrainingError(
                    f"{e} (after {restarts} restart{'s' * (restarts != 1)})") from None
            warnings.warn(f"{e}; restarting the {job['world_size']} processes", RuntimeWarning, stacklevel=3)


def _spawn_once(job: dict) -> dict:
    world_size, timeout = job["world_size"], job["timeout"]
    with tempfile.TemporaryDirectory(prefix="dlcourse_ddp_") as out_dir:
        t0 = time.perf_counter()
        ctx = mp.start_processes(_worker, args=(job, out_dir), nprocs=world_size, join=False,
                                 start_method="spawn")
        result_path = os.path.join(out_dir, "result.pt")
        try:
            deadline = time.monotonic() + timeout
            while not ctx.join(timeout=0.2):  # raises if a rank failed (and terminates the others)
                if time.monotonic() > deadline:
                    where = ", ".join(f"rank {r}: {_STAGES.get(_stage(out_dir, r), 'starting Python')}"
                                      for r, p in enumerate(ctx.processes) if p.is_alive())
                    raise DistributedTrainingError(
                        f"the {world_size} processes did not finish within timeout={timeout} s (still "
                        f"running -- {where}). Likely causes: a rank waiting in a collective that another "
                        "rank never called; loopback TCP blocked by a firewall (gloo connects the ranks "
                        "through 127.0.0.1); or an overloaded machine (raise timeout).")
        except mp.ProcessRaisedException as e:
            raise DistributedTrainingError(
                f"rank {e.error_index} raised an exception; the other ranks were terminated. "
                f"Its traceback:\n{e}") from None
        except mp.ProcessExitedException as e:
            stage = _stage(out_dir, e.error_index)
            died = (f"rank {e.error_index} died ({_exit_reason(e.exit_code)}) while "
                    f"{_STAGES.get(stage, 'starting Python')}")
            if not (os.path.exists(result_path) and stage in ("teardown", "done")):
                hint = ("; in a script, the code that calls this must sit under `if __name__ == '__main__':` "
                        "(start method 'spawn' re-imports the main module) -- see the child's traceback above"
                        if stage is None else "; see what it printed above")
                raise (_RankKilled if e.exit_code < 0 else DistributedTrainingError)(
                    f"{died}; the other ranks were terminated{hint}.") from None
            warnings.warn(f"{died}; the run's result is complete and is returned.", RuntimeWarning, stacklevel=4)
        finally:
            for p in ctx.processes:  # after an error or a timeout: no orphan stays behind
                if p.is_alive():
                    p.terminate()
            for p in ctx.processes:
                p.join(5)
                if p.is_alive():
                    p.kill()
        result = torch.load(result_path, weights_only=False)
    result["wall_seconds"] = time.perf_counter() - t0
    return result


# --------------------------------------------------------------------------- data-parallel training

def _ddp_rank(rank: int, job: dict) -> list:
    """Every configuration of ``job``, one after the other, in this worker (a spawned process)."""
    return [_ddp_one(rank, job["world_size"], cfg, job["data"][cfg["seed"]]) for cfg in job["configs"]]


def _ddp_one(rank: int, P: int, cfg: dict, data) -> dict:
    """One worker's training loop for one configuration."""
    N, steps, dtype = cfg["global_batch"], cfg["steps"], cfg["dtype"]
    x, y = data[0].to(dtype), data[1]
    model = make_model(cfg["seed"], cfg["hidden"], dtype)  # same seed -> same start on every rank
    idx = torch.as_tensor(global_batches(cfg["seed"], steps, N, len(x)))  # same order on every rank
    rows = shard_rows(N, P, 0 if cfg["same_shard"] else rank)  # the mistake: everyone reads shard 0
    manual = not cfg["average"] or cfg["sync"] == "manual"
    net = model if manual else nn.parallel.DistributedDataParallel(model)  # DDP averages in backward
    opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"])
    losses, comm = torch.zeros(steps, dtype=torch.float64), 0.0
    dist.barrier()  # start the clock together
    t0 = time.perf_counter()
    for s in range(steps):
        if cfg["fail_rank"] == rank and s == 1:
            raise RuntimeError(f"rank {rank} fails on purpose at step {s} (fail_rank={rank})")
        b = idx[s, rows]  # (N/P,)
        loss = F.cross_entropy(net(x[b]), y[b])  # the mean over this shard
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if manual:  # all-reduce by hand, one tensor at a time (DDP buckets them and overlaps)
            tc = time.perf_counter()
            for p in model.parameters():
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                if cfg["average"]:
                    p.grad /= P  # forgetting this line is the sum-not-average mistake
            comm += time.perf_counter() - tc
        opt.step()
        losses[s] = loss.item()
    seconds = time.perf_counter() - t0
    # The global loss of each step is the average of the shard means (equal shards): one
    # all-reduce at the end instead of one per step.
    dist.all_reduce(losses, op=dist.ReduceOp.SUM)
    losses /= P
    # Do all ranks hold the same weights?  Gather every rank's flat parameter vector.
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])  # (L,)
    every = [torch.empty_like(flat) for _ in range(P)]
    dist.all_gather(every, flat)
    agree = all(torch.equal(every[0], e) for e in every[1:])
    return dict(state=_cpu_state(model), losses=losses.numpy(), seconds=seconds, ranks_agree=agree,
                comm_seconds=comm if manual else float("nan"))


_DEFAULTS = dict(steps=20, global_batch=64, lr=0.1, seed=0, dtype=torch.float64, hidden=32, momentum=0.0,
                 same_shard=False, average=True, sync="ddp", fail_rank=None)


def ddp_train(world_size: int = 2, steps: int = 20, global_batch: int = 64, lr: float = 0.1, seed: int = 0,
              backend: str = "gloo", dtype: torch.dtype = torch.float64, hidden: int = 32, timeout: float = 60,
              momentum: float = 0.0, same_shard: bool = False, average: bool = True, sync: str = "ddp",
              fail_rank: int | None = None) -> dict:
    """Data-parallel SGD on ``world_size`` CPU processes with DistributedDataParallel.

    Every rank builds the model from ``seed``, computes the same global batch order
    (:func:`global_batches`), takes its contiguous shard of N/P rows (:func:`shard_rows`), and
    DDP averages the gradients during ``backward`` (it divides by P and all-reduces with SUM,
    bucketed, overlapping communication with the rest of the backward pass).  The result equals
    :func:`single_process_train` up to round-off: the global mean is summed in a different order
    (two shard means, each over N/P rows, averaged -- instead of one mean over N rows), which
    costs about 1e-16 relative per operation in float64 (the tests use rtol 1e-10) and about 1e-7
    in float32 (rtol 1e-6 over these few steps).

    Parameters
    ----------
    world_size : P, the number of processes (each runs one torch thread).
    global_batch : N, divisible by P.
    backend : "gloo" (CPU); "nccl" needs one GPU per rank (see :func:`launch_commands`).
    timeout : seconds for the whole run and for each collective; a run that takes longer is
        terminated and raises :class:`DistributedTrainingError` (it never hangs).
    momentum : SGD momentum, 0 (plain SGD) by default.
    same_shard : the classic mistake -- every rank trains on shard 0 (as when each worker's
        sampler is seeded identically): the run equals ``single_process_train(shard=(0, P))``,
        training on 1/P of the data.
    average : False gives the other classic mistake -- a hand-written all-reduce that sums the P
        gradients but does not divide by P: the same as ``lr * P`` on the right gradient.
    sync : "ddp" (DistributedDataParallel) or "manual" (one ``dist.all_reduce`` per parameter
        after ``backward``; also times the communication). ``average=False`` is always manual.
    fail_rank : make that rank raise at step 1 (to show the error a crashed rank gives).

    Returns
    -------
    dict with ``state`` (rank 0's state_dict, CPU tensors), ``losses`` (S,) ndarray (the global
    batch's mean loss before each step), ``seconds`` (rank 0's training loop), ``wall_seconds``
    (with spawning the processes), ``ranks_agree`` (True if every rank ended with bit-identical
    weights, checked with ``all_gather``), ``comm_seconds`` (rank 0's time in all-reduce, "manual"
    only, else nan).
    """
    cfg = dict(steps=steps, global_batch=global_batch, lr=lr, seed=seed, dtype=dtype, hidden=hidden,
               momentum=momentum, same_shard=same_shard, average=average, sync=sync, fail_rank=fail_rank)
    return ddp_train_many([cfg], world_size=world_size, backend=backend, timeout=timeout)[0]


def ddp_train_many(configs: list, world_size: int = 2, backend: str = "gloo", timeout: float = 60) -> list:
    """Several :func:`ddp_train` runs in ONE set of processes, one after the other.

    Starting P fresh interpreters (each imports torch, and DDP's constructor imports
    ``torch._dynamo``) costs seconds, far more than training the digits MLP for 20 steps; the
    tests and the benchmark pay it once.  ``configs`` is a list of dicts of :func:`ddp_train`'s
    keyword arguments (missing keys take its defaults); ``timeout`` covers the whole batch.

    Returns
    -------
    list of the dicts :func:`ddp_train` returns, in the order of ``configs``; ``wall_seconds``
    (the same in each) is the whole batch's, spawning included.
    """
    full = []
    for c in configs:
        unknown = set(c) - set(_DEFAULTS)
        if unknown:
            raise TypeError(f"unknown ddp_train arguments: {sorted(unknown)}")
        c = {**_DEFAULTS, **c}
        if c["sync"] not in ("ddp", "manual"):
            raise ValueError(f"sync must be 'ddp' or 'manual', got {c['sync']!r}")
        if c["fail_rank"] is not None and not 0 <= c["fail_rank"] < world_size:
            raise ValueError(f"fail_rank must be a rank in 0..{world_size - 1}")
        shard_rows(c["global_batch"], world_size, 0)  # checks divisibility here, not in a child
        full.append(c)
    # The data travel to the children (float32 as loaded; each run casts): they need not import
    # scikit-learn, and they all read the same arrays.
    data = {}
    for c in full:
        if c["seed"] not in data:
            data[c["seed"]] = _digits(c["seed"], torch.float32)
    job = dict(kind="train", world_size=world_size, backend=backend, timeout=timeout, configs=full, data=data)
    out = _spawn(job)
    wall = out.pop("wall_seconds")
    return [dict(r, wall_seconds=wall) for r in out["runs"]]


# --------------------------------------------------------------------------- one all-reduce, shown

def _demo_tensor(rank: int, length: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 1000 + rank)  # different data on every rank, on purpose
    return torch.randn(length, generator=g, dtype=torch.float64)


def _allreduce_rank(rank: int, job: dict) -> dict:
    t = _demo_tensor(rank, job["length"], job["seed"])  # (L,)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)  # in place: every rank now holds the sum
    t /= job["world_size"]  # ... and the average
    every = [torch.empty_like(t) for _ in range(job["world_size"])]
    dist.all_gather(every, t)
    return dict(result=t.numpy(), ranks_agree=all(torch.equal(every[0], e) for e in every[1:]))


def allreduce_demo(world_size: int = 2, length: int = 8, seed: int = 0, backend: str = "gloo",
                   timeout: float = 60) -> dict:
    """One explicit ``dist.all_reduce`` (SUM, then divide by P) against the NumPy ring simulator.

    Rank r holds its own random vector (L,); after the all-reduce every rank holds the
    average.  The same inputs go through ``dlcourse.efficiency.numpy_impl.ring_allreduce``
    (Patarasuk and Yuan 2009: P - 1 reduce-scatter steps and P - 1 all-gather steps of one
    chunk each, so every worker sends 2 (P - 1) / P of the tensor whatever P is).

    Returns
    -------
    dict with ``inputs`` (P, L), ``torch`` (L,) the average rank 0 received, ``ranks_agree``,
    ``ring`` (P, L) every simulated worker's average (None if the simulator is not there),
    ``expected`` (L,) ``inputs.mean(axis=0)``.
    """
    job = dict(kind="allreduce", world_size=world_size, length=length, seed=seed, backend=backend,
               timeout=timeout)
    out = _spawn(job)["runs"]
    inputs = np.stack([_demo_tensor(r, length, seed).numpy() for r in range(world_size)])
    try:
        from dlcourse.efficiency.numpy_impl import ring_allreduce
    except ImportError:
        ring = None
    else:
        ring = np.stack(ring_allreduce(list(inputs), average=True))  # (P, L)
    return dict(inputs=inputs, torch=out["result"], ranks_agree=out["ranks_agree"], ring=ring,
                expected=inputs.mean(axis=0))


_RUNNERS = {"train": _ddp_rank, "allreduce": _allreduce_rank}


# --------------------------------------------------------------------------- beyond one CPU

def launch_commands() -> str:
    """How the same training runs on GPUs and on several machines (text only; nothing is run)."""
    return """\
# One node with 4 GPUs: torchrun starts 4 processes and gives each RANK, LOCAL_RANK, WORLD_SIZE,
# MASTER_ADDR and MASTER_PORT in its environment (so the script calls init_process_group() with no
# addresses, and does NOT spawn processes itself).
torchrun --standalone --nproc_per_node=4 train_ddp.py

# Two nodes with 4 GPUs each (run on both; --node_rank 0 on the first, 1 on the second; the
# rendezvous endpoint is a host:port the two machines can both reach, usually node 0):
torchrun --nnodes=2 --nproc_per_node=4 --node_rank=0 \\
         --rdzv_backend=c10d --rdzv_endpoint=node0.example.org:29500 --rdzv_id=job42 train_ddp.py
torchrun --nnodes=2 --nproc_per_node=4 --node_rank=1 \\
         --rdzv_backend=c10d --rdzv_endpoint=node0.example.org:29500 --rdzv_id=job42 train_ddp.py

# What changes inside train_ddp.py compared with the CPU (gloo) version of this chapter:
#   local_rank = int(os.environ["LOCAL_RANK"])        # 0..3 on each node
#   torch.cuda.set_device(local_rank)                 # one GPU per process, before anything else
#   dist.init_process_group("nccl")                   # NCCL: GPU-to-GPU (NVLink / InfiniBand)
#   model = DDP(model.to(local_rank), device_ids=[local_rank])
#   sampler = DistributedSampler(dataset, shuffle=True, seed=0); sampler.set_epoch(epoch) every epoch
#   batches and labels go to f"cuda:{local_rank}"; only RANK 0 logs and saves checkpoints
# NCCL collectives work on CUDA tensors only (gloo on CPU tensors), run asynchronously on CUDA
# streams, and a rank that never reaches a collective makes the others wait until the timeout.
"""
