"""A grpcio server of ctxkit.demo.v1.Work, for the interop tests.

Prints {"listening": "127.0.0.1:PORT"}, then for each call
{"time_remaining": SECONDS} when it arrives and, once the call is no longer
active (the caller cancelled or its deadline passed), {"inactive_after_ms": N}.
A call still active after 10 s is answered.
"""
import json
import sys
import time
from concurrent import futures

import grpc

import work_pb2
import work_pb2_grpc


class Work(work_pb2_grpc.WorkServicer):
    def Do(self, request, context):
        arrived = time.monotonic()
        print(json.dumps({"time_remaining": context.time_remaining()}), flush=True)
        while context.is_active() and time.monotonic() - arrived < 10:
            time.sleep(0.005)
        if not context.is_active():
            elapsed = (time.monotonic() - arrived) * 1000
            print(json.dumps({"inactive_after_ms": elapsed}), flush=True)
        return work_pb2.WorkReply(hop="python", remaining_ms=-1)


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    work_pb2_grpc.add_WorkServicer_to_server(Work(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(json.dumps({"listening": "127.0.0.1:%d" % port}), flush=True)
    try:
        sys.stdin.read()  # runs until the test closes stdin
    finally:
        server.stop(0)


if __name__ == "__main__":
    main()
