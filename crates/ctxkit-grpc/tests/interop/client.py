"""A grpcio client of ctxkit.demo.v1.Work, for the interop tests.

usage: client.py ADDRESS deadline|cancel
  deadline: one call with a 300 ms timeout; prints the reply as JSON.
  cancel:   starts a long call, prints {"cancelling": true} once the server
            has had time to see it, cancels it, prints {"cancelled": ...}.
"""
import json
import sys
import time

import grpc

import work_pb2
import work_pb2_grpc


def main():
    address, mode = sys.argv[1], sys.argv[2]
    with grpc.insecure_channel(address) as channel:
        stub = work_pb2_grpc.WorkStub(channel)
        if mode == "deadline":
            reply = stub.Do(
                work_pb2.WorkRequest(work_ms=0),
                timeout=0.3,
                metadata=[("x-request-id", "py-1")],
            )
            print(json.dumps({"remaining_ms": reply.remaining_ms, "hop": reply.hop}), flush=True)
        elif mode == "cancel":
            call = stub.Do.future(work_pb2.WorkRequest(work_ms=10000))
            time.sleep(0.3)
            print(json.dumps({"cancelling": True}), flush=True)
            cancelled = call.cancel()
            print(json.dumps({"cancelled": cancelled}), flush=True)
        else:
            sys.exit("unknown mode " + mode)


if __name__ == "__main__":
    main()
