"""Python multiprocessing peers for benches/ipc.rs: the same workloads, timed the same way.

Usage: python3 peers.py WORKLOAD COUNT SIZE
Prints one line: "<value>", "<p50> <p99>" for latencies, or "<p50> <p99> <cpu>" for W2 ping-pongs
and W5 hand-offs (cpu: µs of CPU per round trip or sample, both processes, measured as benches/ipc/cpu.rs
does). Process
start-up is neither timed nor counted.
"""
import glob
import multiprocessing as mp
from multiprocessing.managers import BaseManager
import sys
import time


def process_ns(pid):
    """Run time of every thread of `pid` so far (ns), from /proc/<pid>/task/*/schedstat."""
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path) as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


class CpuMeter:
    """CPU of this process (every thread) and of one child since creation."""

    def __init__(self, child_pid):
        self.child = child_pid
        self.ours = time.process_time_ns()
        self.theirs = process_ns(child_pid)

    def per_round_us(self, rounds):
        spent = time.process_time_ns() - self.ours + process_ns(self.child) - self.theirs
        return spent / 1000.0 / max(rounds, 1)


def ping_pong(child_pid, count, round_trip):
    """Times `count` round trips; the CPU meter starts after the first (start-up excluded)."""
    samples, meter = [], None
    for _ in range(count):
        t = time.perf_counter()
        round_trip()
        samples.append((time.perf_counter() - t) * 1e6)
        if meter is None:
            meter = CpuMeter(child_pid)
    cpu = meter.per_round_us(count - 1)
    samples.sort()
    print(samples[len(samples) // 2], samples[int(len(samples) * 0.99)], cpu)


def sender(conn, count, size):
    conn.recv_bytes()  # go
    payload = b"x" * size
    for _ in range(count):
        conn.send_bytes(payload)
    conn.close()


def echo(conn, count):
    for _ in range(count):
        conn.send_bytes(conn.recv_bytes())
    conn.close()


def locker(lock, value, count, go):
    go.wait()
    for _ in range(count):
        with lock:
            value.value += 1


def event_waiter(ping, pong, stamp, rounds, out):
    samples = []
    for _ in range(rounds):
        ping.wait()
        now = time.time_ns()
        ping.clear()
        samples.append((now - stamp.value) / 1000.0)
        pong.set()
    samples.sort()
    out.send((samples[len(samples) // 2], samples[int(len(samples) * 0.99)]))


def semaphore_answerer(ping, pong, count):
    for _ in range(count):
        ping.acquire()
        pong.release()


def barrier_party(barrier, count):
    for _ in range(count):
        barrier.wait()


def condition_answerer(cond, turn, count):
    for i in range(count):
        with cond:
            cond.wait_for(lambda: turn.value == 2 * i + 1)
            turn.value = 2 * i + 2
            cond.notify_all()


def queue_sender(q, count, size, go):
    go.wait()
    payload = b"x" * size
    for _ in range(count):
        q.put(payload)


def queue_echo(requests, replies, count):
    for _ in range(count):
        replies.put(requests.get())


def inc(x):
    return x + 1


def burn(ms):
    end = time.perf_counter() + ms / 1000.0
    x = 0
    while time.perf_counter() < end:
        for i in range(1000):
            x = (x * 6364136223846793005 + i) & 0xFFFFFFFFFFFFFFFF
    return x


def pool_workloads(workload, count, size):
    """W6/W7; `size` is the number of processes (for w7cpu: ms * 1000 + processes)."""
    if workload == "w6ppe":
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(size) as ex:
            list(ex.map(inc, range(10)))  # start the workers
            start = time.perf_counter()
            results = list(ex.map(inc, range(count)))
            elapsed = time.perf_counter() - start
        assert results[-1] == count
        print(count / elapsed)
        return
    processes = size % 1000 if workload == "w7cpu" else size
    with mp.Pool(processes) as pool:
        pool.map(inc, range(100))  # start the workers
        if workload == "w6map":
            start = time.perf_counter()
            results = pool.map(inc, range(count))
            elapsed = time.perf_counter() - start
            assert results[-1] == count
            print(count / elapsed)
        elif workload == "w6imap1":
            start = time.perf_counter()
            total = sum(pool.imap(inc, range(count), chunksize=1))
            elapsed = time.perf_counter() - start
            assert total == count * (count + 1) // 2
            print(count / elapsed)
        elif workload == "w7apply":
            samples = []
            for x in range(count):
                t = time.perf_counter()
                pool.apply(inc, (x,))
                samples.append((time.perf_counter() - t) * 1e6)
            samples.sort()
            print(samples[len(samples) // 2], samples[int(len(samples) * 0.99)])
        elif workload == "w7cpu":
            ms = size // 1000
            start = time.perf_counter()
            for _ in range(count):
                burn(ms)
            serial = time.perf_counter() - start
            start = time.perf_counter()
            pool.map(burn, [ms] * count, chunksize=1)
            parallel = time.perf_counter() - start
            print(serial / parallel)


class Maths:
    def add(self, x, y):
        return x + y


class MathsManager(BaseManager):
    pass


MathsManager.register("Maths", Maths)


def manager_workloads(workload, count):
    """W8: a BaseManager proxy call round trip (Unix socket, or TCP loopback), dict sets/s."""
    if workload == "w8dict":
        with mp.Manager() as manager:
            d = manager.dict()
            start = time.perf_counter()
            for i in range(count):
                d[i] = i
            elapsed = time.perf_counter() - start
            assert len(d) == count
            print(count / elapsed)
        return
    address = ("127.0.0.1", 0) if workload == "w8tcp" else None
    with MathsManager(address=address, authkey=b"bench") as manager:
        maths = manager.Maths()
        for _ in range(200):
            maths.add(4, 3)
        samples = []
        for _ in range(count):
            t = time.perf_counter()
            maths.add(4, 3)
            samples.append((time.perf_counter() - t) * 1e6)
        samples.sort()
        print(samples[len(samples) // 2], samples[int(len(samples) * 0.99)])


def main():
    workload, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if workload.startswith("w6") or workload.startswith("w7"):
        pool_workloads(workload, count, size)
        return
    if workload.startswith("w8"):
        manager_workloads(workload, count)
        return
    ours, theirs = mp.Pipe()
    if workload in ("w1", "w3"):
        p = mp.Process(target=sender, args=(theirs, count, size))
        p.start()
        ours.send_bytes(b"go")
        start = time.perf_counter()
        for _ in range(count):
            ours.recv_bytes()
        elapsed = time.perf_counter() - start
        p.join()
        if workload == "w1":
            print(count / elapsed)
        else:
            print(count * size / elapsed / 1e9)
    elif workload in ("w1q", "w3q", "w1s", "w3s"):
        q = mp.SimpleQueue() if workload.endswith("s") else mp.Queue()
        go = mp.Event()
        p = mp.Process(target=queue_sender, args=(q, count, size, go))
        p.start()
        time.sleep(0.2)
        start = time.perf_counter()
        go.set()
        for _ in range(count):
            q.get()
        elapsed = time.perf_counter() - start
        p.join()
        print(count / elapsed if workload.startswith("w1") else count * size / elapsed / 1e9)
    elif workload in ("w2q", "w2s"):
        make = mp.SimpleQueue if workload == "w2s" else mp.Queue
        requests, replies = make(), make()
        p = mp.Process(target=queue_echo, args=(requests, replies, count))
        p.start()

        def round_trip():
            requests.put(b"12345678")
            replies.get()

        ping_pong(p.pid, count, round_trip)
        p.join()
    elif workload == "w4":
        lock, value, go = mp.Lock(), mp.RawValue("q", 0), mp.Event()
        ps = [mp.Process(target=locker, args=(lock, value, count, go)) for _ in range(2)]
        for p in ps:
            p.start()
        time.sleep(0.2)
        start = time.perf_counter()
        go.set()
        for p in ps:
            p.join()
        elapsed = time.perf_counter() - start
        assert value.value == 2 * count, value.value
        print(2 * count / elapsed)
    elif workload == "w5":
        ping, pong, stamp = mp.Event(), mp.Event(), mp.RawValue("q", 0)
        p = mp.Process(target=event_waiter, args=(ping, pong, stamp, count, theirs))
        p.start()
        time.sleep(0.2)
        meter = None
        for _ in range(count):
            stamp.value = time.time_ns()
            ping.set()
            pong.wait()
            pong.clear()
            if meter is None:
                meter = CpuMeter(p.pid)
        cpu = meter.per_round_us(count - 1)
        p50, p99 = ours.recv()
        p.join()
        print(p50, p99, cpu)
    elif workload == "w5sem":
        ping, pong = mp.Semaphore(0), mp.Semaphore(0)
        p = mp.Process(target=semaphore_answerer, args=(ping, pong, count))
        p.start()
        time.sleep(0.2)

        def round_trip():
            ping.release()
            pong.acquire()

        ping_pong(p.pid, count, round_trip)
        p.join()
    elif workload == "w5barrier":
        barrier = mp.Barrier(2)
        p = mp.Process(target=barrier_party, args=(barrier, count))
        p.start()
        time.sleep(0.2)
        ping_pong(p.pid, count, barrier.wait)
        p.join()
    elif workload == "w5cond":
        cond, turn = mp.Condition(), mp.RawValue("q", 0)
        p = mp.Process(target=condition_answerer, args=(cond, turn, count))
        p.start()
        time.sleep(0.2)
        rounds = iter(range(count))

        def round_trip():
            i = next(rounds)
            with cond:
                turn.value = 2 * i + 1
                cond.notify_all()
                cond.wait_for(lambda: turn.value == 2 * i + 2)

        ping_pong(p.pid, count, round_trip)
        p.join()
    elif workload == "w2":
        p = mp.Process(target=echo, args=(theirs, count))
        p.start()

        def round_trip():
            ours.send_bytes(b"12345678")
            ours.recv_bytes()

        ping_pong(p.pid, count, round_trip)
        p.join()


if __name__ == "__main__":
    mp.set_start_method("spawn")
    main()
