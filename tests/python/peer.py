"""A real CPython peer for tests/python_peer.rs, using only multiprocessing.connection.

Usage: python3 peer.py MODE ADDRESS AUTHKEY
  ADDRESS is tcp:HOST:PORT or unix:PATH.
  MODE client     connect, send bytes and a pickled dict, print the reply and the bytes back
  MODE listener   listen (prints READY <port-or-path>), answer one connection
  MODE oversized  connect, then announce a 100 MB frame and stop
  MODE malformed  connect, then send bytes that are no pickle of anything
  MODE unmappable connect, then send a pickled class instance
  MODE shared     connect, then send a list holding one dict three times (memo references)
  MODE bigints    connect, then send ints of 2**63 and more
  MODE deep       connect, then send a pickle of lists nested 400,000 deep
  MODE echo       connect, receive one value and send it back as Python rebuilt it
"""
import struct
import sys
from multiprocessing.connection import Client, Listener, AuthenticationError


def parse(address):
    kind, _, rest = address.partition(":")
    if kind == "tcp":
        host, _, port = rest.rpartition(":")
        return (host, int(port))
    return rest


def main():
    mode, address, key = sys.argv[1], parse(sys.argv[2]), sys.argv[3].encode()
    if mode == "listener":
        with Listener(address, authkey=key) as listener:
            where = listener.address[1] if isinstance(listener.address, tuple) else listener.address
            print("READY", where, flush=True)
            with listener.accept() as conn:
                job = conn.recv()
                conn.send({"total": sum(job["values"]), "name_upper": job["name"].upper()})
                data = conn.recv_bytes()
                conn.send_bytes(data[::-1])
        return
    try:
        conn = Client(address, authkey=key)
    except AuthenticationError as e:
        print("AuthenticationError", e, flush=True)
        sys.exit(3)
    with conn:
        if mode == "client":
            conn.send_bytes(b"raw \x00\xff bytes")
            conn.send({"name": "job-1", "values": [1.5, 2.5], "count": 3, "ok": True, "note": None,
                       "pair": (4, 5), "blob": b"\x00\x01\xfe"})
            print("REPLY", repr(conn.recv()), flush=True)
            print("BYTES", conn.recv_bytes().hex(), flush=True)
        elif mode == "oversized":
            conn._send(struct.pack("!i", 100_000_000))
            conn.recv_bytes()  # wait until the Rust side hangs up
        elif mode == "malformed":
            conn.send_bytes(b"\x80\x04this is no pickle")
            conn.recv_bytes()
        elif mode == "shared":
            row = {"k": 1}
            conn.send([row] * 3)
            conn.recv_bytes()
        elif mode == "bigints":
            conn.send([2**63, 2**64 - 1, 2**127 + 5])
            conn.recv_bytes()
        elif mode == "deep":
            depth = 400_000
            conn.send_bytes(b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b".")
            conn.recv_bytes()
        elif mode == "echo":
            conn.send(conn.recv())
        elif mode == "unmappable":
            import datetime
            conn.send(datetime.date(2026, 11, 25))  # a class instance: must not be built
            conn.recv_bytes()


if __name__ == "__main__":
    main()
