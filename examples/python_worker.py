"""A Python worker for examples/python_peer.rs: plain multiprocessing.connection, nothing else.

Usage: python3 python_worker.py PORT AUTHKEY
"""
import sys
from multiprocessing.connection import Client

with Client(("127.0.0.1", int(sys.argv[1])), authkey=sys.argv[2].encode()) as conn:
    while (job := conn.recv()) is not None:
        conn.send({"id": job["id"], "result": sum(x * x for x in job["numbers"])})
