#!/usr/bin/env python3
"""A small OTLP/HTTP trace receiver for the tests: decodes every ExportTraceServiceRequest posted to /v1/traces
with the official OTLP protobuf definitions (the opentelemetry-proto package) and prints each span as one JSON
line on stdout. The first line is {"port": N}, the port it listens on (127.0.0.1, chosen by the kernel).

Anything else it is sent (another path, a body that does not decode) is answered 400 and printed as
{"error": ...}, so that a test sees it. With --discard (the benchmark's sink) it answers every export at once
without decoding it, and prints nothing but the port.
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


def value(v: AnyValue):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def emit(record):
    sys.stdout.write(json.dumps(record, sort_keys=True) + "\n")
    sys.stdout.flush()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if DISCARD:
            self.answer()
            return
        request = ExportTraceServiceRequest()
        try:
            if self.path != "/v1/traces":
                raise ValueError(f"unexpected path {self.path}")
            if self.headers.get("Content-Type") != "application/x-protobuf":
                raise ValueError(f"unexpected content type {self.headers.get('Content-Type')}")
            request.ParseFromString(body)
        except Exception as error:  # reported to the test, answered 400
            emit({"error": str(error)})
            self.send_response(400)
            self.end_headers()
            return
        for resource_spans in request.resource_spans:
            resource = {a.key: value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    emit(
                        {
                            "service": resource.get("service.name"),
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex(),
                            "name": span.name,
                            "kind": span.kind,
                            "status": span.status.code,
                            "attributes": {a.key: value(a.value) for a in span.attributes},
                        }
                    )
        self.answer()

    def answer(self):
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format, *args):
        pass


DISCARD = "--discard" in sys.argv[1:]
server = HTTPServer(("127.0.0.1", 0), Handler)
emit({"port": server.server_address[1]})
server.serve_forever()
