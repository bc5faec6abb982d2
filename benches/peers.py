"""Python multiprocessing peers for benches/ipc.rs: the same workloads, timed the same way.

Usage: python3 peers.py WORKLOAD COUNT SIZE
Prints one line: "<value>" or "<p50> <p99>" for latencies. Process start-up is not timed.
"""
import multiprocessing as mp
import sys
import time


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


def queue_sender(q, count, size, go):
    go.wait()
    payload = b"x" * size
    for _ in range(count):
        q.put(payload)


def queue_echo(requests, replies, count):
    for _ in range(count):
        replies.put(requests.get())


def main():
    workload, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
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
        samples = []
        for _ in range(count):
            t = time.perf_counter()
            requests.put(b"12345678")
            replies.get()
            samples.append((time.perf_counter() - t) * 1e6)
        p.join()
        samples.sort()
        print(samples[len(samples) // 2], samples[int(len(samples) * 0.99)])
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
        for _ in range(count):
            stamp.value = time.time_ns()
            ping.set()
            pong.wait()
            pong.clear()
        p50, p99 = ours.recv()
        p.join()
        print(p50, p99)
    elif workload == "w2":
        p = mp.Process(target=echo, args=(theirs, count))
        p.start()
        msg = b"12345678"
        samples = []
        for _ in range(count):
            t = time.perf_counter()
            ours.send_bytes(msg)
            ours.recv_bytes()
            samples.append((time.perf_counter() - t) * 1e6)
        p.join()
        samples.sort()
        print(samples[len(samples) // 2], samples[int(len(samples) * 0.99)])


if __name__ == "__main__":
    mp.set_start_method("spawn")
    main()
