"""The contrastive loss: a direct formula, and 2 gloo processes equal 1 process on the union."""

import math
import os
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from clippo.losses import ContrastiveLoss, contrastive_loss


def _direct_loss(zimg, ztxt, scale):
    # Written as the paper's sums: mean_i of 0.5*(-log p(txt_i|img_i) - log p(img_i|txt_i)).
    n = zimg.shape[0]
    total = 0.0
    for i in range(n):
        s_row = [scale * float(zimg[i] @ ztxt[j]) for j in range(n)]
        s_col = [scale * float(zimg[j] @ ztxt[i]) for j in range(n)]
        lse_r = math.log(sum(math.exp(v) for v in s_row))
        lse_c = math.log(sum(math.exp(v) for v in s_col))
        total += 0.5 * ((lse_r - s_row[i]) + (lse_c - s_col[i]))
    return total / n


def _unit(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    return z / z.norm(dim=1, keepdim=True)


def test_loss_equals_direct_formula():
    zimg, ztxt = _unit(6, 4, 0), _unit(6, 4, 1)
    loss, extras = contrastive_loss(zimg, ztxt, torch.tensor(10.0, dtype=torch.float64))
    assert loss.item() == pytest.approx(_direct_loss(zimg, ztxt, 10.0), rel=1e-12)
    assert 0.0 <= extras["accuracy"].item() <= 1.0


def test_perfect_alignment_gives_small_loss_and_full_accuracy():
    z = torch.eye(4, dtype=torch.float64)
    loss, extras = contrastive_loss(z, z, torch.tensor(100.0, dtype=torch.float64))
    assert loss.item() < 1e-30 + 3 * math.exp(-100) * 2
    assert extras["accuracy"].item() == 1.0


def test_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"got \(3, 4\) and \(2, 4\)"):
        contrastive_loss(torch.zeros(3, 4), torch.zeros(2, 4), torch.tensor(1.0))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Towers(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.img = torch.nn.Linear(5, 3)
        self.txt = torch.nn.Linear(7, 3)
        self.t = torch.nn.Parameter(torch.tensor(math.log(10.0)))

    def forward(self, x, y):
        a, b = self.img(x), self.txt(y)
        return a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True), self.t.exp()


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 5, generator=g), torch.randn(8, 7, generator=g)


def _worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = torch.nn.parallel.DistributedDataParallel(_Towers())
        x, y = _data()
        n = x.shape[0] // world
        sl = slice(rank * n, (rank + 1) * n)
        loss, _ = ContrastiveLoss()(*model(x[sl], y[sl]))
        loss.backward()
        if rank == 0:
            # numpy, not tensors: tensors travel as shared memory that dies with this process.
            out.put(
                (
                    loss.item(),
                    {k: p.grad.numpy().copy() for k, p in model.module.named_parameters()},
                )
            )
        del model, loss  # DDP's reducer holds the process group: release it before teardown
    finally:
        # Both ranks leave together: tearing gloo down while the peer still talks aborts the
        # process ("terminate called without an active exception") on a loaded machine.
        dist.barrier()
        dist.destroy_process_group()
    # The result is out and gloo is down; the interpreter's own finalization (libtorch's static
    # destructors) still aborted a worker once in CI (exit -6 after a correct result), so a
    # worker that got here leaves at once. A worker that raised above exits non-zero instead.
    out.close()
    out.join_thread()
    os._exit(0)


def test_two_process_global_loss_and_grads_equal_single_process():
    model = _Towers()
    x, y = _data()
    loss, _ = ContrastiveLoss()(*model(x, y))
    loss.backward()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, out)) for r in range(2)]
    for p in procs:
        p.start()
    dist_loss, dist_grads = out.get(timeout=120)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert dist_loss == pytest.approx(loss.item(), rel=1e-6)
    for name, p in model.named_parameters():
        torch.testing.assert_close(torch.from_numpy(dist_grads[name]), p.grad, rtol=1e-5, atol=1e-7)


def _stalled_worker(rank, port, out):
    from clippo.train.distributed import all_reduce_mean, init_distributed

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2"
    )
    init_distributed(timeout_s=2)
    if rank == 1:
        time.sleep(10)  # a stalled rank: never joins the collective in time
        os._exit(0)
    start = time.monotonic()
    try:
        all_reduce_mean(torch.ones(1))
        out.put(("returned", time.monotonic() - start))
    except Exception as e:  # gloo names the timeout
        out.put((f"{type(e).__name__}: {e}", time.monotonic() - start))
    out.close()
    out.join_thread()  # the queue's feeder thread must flush before the hard exit
    os._exit(0)


def test_a_stalled_rank_fails_the_waiting_ranks_after_the_collective_timeout():
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_stalled_worker, args=(r, port, out)) for r in range(2)]
    for p in procs:
        p.start()
    message, waited = out.get(timeout=60)
    for p in procs:
        p.join(timeout=30)
    assert message != "returned"
    assert "timed out" in message.lower() or "timeout" in message.lower(), message
    assert waited < 8  # the 2 s timeout, not the stalled rank's 10 s
