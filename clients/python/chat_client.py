#!/usr/bin/env python3
"""A minimal chat/1 client written from docs/PROTOCOL.md alone: Python's ssl module for TLS 1.3 + ALPN, the
protobuf package for messages (classes built at run time from the descriptor set that scripts/generate writes).

    chat_client.py --address 127.0.0.1:7443 --ca ca.pem --descriptors chat.desc check [--service NAME]
    chat_client.py ... watch [--service NAME] [--count N]

`check` prints the status and exits 0 when SERVING. `watch` prints the first N statuses, then cancels the stream.
"""

import argparse
import socket
import ssl
import struct
import sys

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PREFACE = b"CHAT\r\n\x01\n"
DATA, HEADERS, TRAILERS, CANCEL, WINDOW_UPDATE, PING, GOAWAY, SETTINGS = range(8)
END_STREAM = ACK = 0x1
CANCEL_CODE = 0x8
SERVING_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


class ProtocolError(Exception):
    pass


def load_messages(path):
    fds = descriptor_pb2.FileDescriptorSet()
    with open(path, "rb") as fh:
        fds.ParseFromString(fh.read())
    pool = descriptor_pool.DescriptorPool()
    for f in fds.file:
        pool.Add(f)

    def cls(name):
        desc = pool.FindMessageTypeByName(name)
        if hasattr(message_factory, "GetMessageClass"):
            return message_factory.GetMessageClass(desc)
        return message_factory.MessageFactory(pool).GetPrototype(desc)

    return cls


class Connection:
    """One TLS connection: frames in and out (section 3), with the connection window kept open (section 6)."""

    def __init__(self, host, port, ca):
        context = ssl.create_default_context(cafile=ca)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.set_alpn_protocols(["chat/1"])
        raw = socket.create_connection((host, port), timeout=10)
        self.sock = context.wrap_socket(raw, server_hostname=host)
        if self.sock.selected_alpn_protocol() != "chat/1":
            raise ProtocolError("the server did not agree on chat/1")
        self.buffer = b""
        self.received = 0
        # Section 2: preface, then our SETTINGS (empty: the defaults).
        self.sock.sendall(PREFACE + self.frame(SETTINGS, 0, 0, b""))

    @staticmethod
    def frame(kind, flags, stream, payload):
        length = len(payload)
        return struct.pack(">BHBBI", length >> 16, length & 0xFFFF, kind, flags, stream & 0x7FFFFFFF) + payload

    def send(self, kind, flags, stream, payload):
        self.sock.sendall(self.frame(kind, flags, stream, payload))

    def read_exact(self, n):
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ProtocolError("the connection closed")
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def read_frame(self):
        header = self.read_exact(9)
        high, low, kind, flags, stream = struct.unpack(">BHBBI", header)
        length = (high << 16) | low
        payload = self.read_exact(length)
        stream &= 0x7FFFFFFF
        if kind == SETTINGS and not flags & ACK:
            self.send(SETTINGS, ACK, 0, b"")
        elif kind == PING and not flags & ACK:
            self.send(PING, ACK, 0, payload)  # section 7: echo pings at once
        elif kind == DATA:
            # Section 6: return connection credit as soon as the bytes are read; the stream windows (64 KiB by
            # default) are returned per stream below.
            self.received += length
            if self.received >= 32768:
                self.send(WINDOW_UPDATE, 0, 0, struct.pack(">I", self.received))
                self.received = 0
        elif kind == GOAWAY:
            last, code = struct.unpack(">II", payload[:8])
            raise ProtocolError("GOAWAY code %d: %s" % (code, payload[8:].decode("utf-8", "replace")))
        return kind, flags, stream, payload


class Call:
    """One stream: HEADERS with a CallHeader, one request envelope with END_STREAM (section 4.3)."""

    def __init__(self, connection, stream, messages, method, request):
        self.connection = connection
        self.stream = stream
        self.messages = messages
        header = messages("chat.v1.CallHeader")(method=method, timeout_us=10_000_000).SerializeToString()
        body = request.SerializeToString()
        connection.send(HEADERS, 0, stream, header)
        connection.send(DATA, END_STREAM, stream, struct.pack(">BI", 0, len(body)) + body)
        self.pending = b""

    def responses(self, response_type):
        """Yields response messages; raises on a non-OK status; returns at TRAILERS OK."""
        cls = self.messages(response_type)
        while True:
            kind, flags, stream, payload = self.connection.read_frame()
            if stream != self.stream:
                continue
            if kind == DATA:
                self.pending += payload
                self.connection.send(WINDOW_UPDATE, 0, self.stream, struct.pack(">I", len(payload)))
                while len(self.pending) >= 5:
                    compressed, length = struct.unpack(">BI", self.pending[:5])
                    if compressed & 1:
                        raise ProtocolError("compressed message")
                    if len(self.pending) < 5 + length:
                        break
                    message = cls.FromString(self.pending[5:5 + length])
                    self.pending = self.pending[5 + length:]
                    yield message
            elif kind == TRAILERS:
                status = self.messages("chat.v1.CallStatus").FromString(payload)
                if status.code != 0:
                    raise ProtocolError("status %d: %s" % (status.code, status.message))
                return
            elif kind == CANCEL:
                (code,) = struct.unpack(">I", payload)
                raise ProtocolError("the server cancelled the stream, code %d" % code)

    def cancel(self):
        self.connection.send(CANCEL, 0, self.stream, struct.pack(">I", CANCEL_CODE))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--descriptors", required=True)
    parser.add_argument("command", choices=["check", "watch"])
    parser.add_argument("--service", default="")
    parser.add_argument("--count", type=int, default=1)
    args = parser.parse_args()

    host, port = args.address.rsplit(":", 1)
    messages = load_messages(args.descriptors)
    connection = Connection(host, int(port), args.ca)
    request = messages("chat.v1.HealthCheckRequest")(service=args.service)
    try:
        if args.command == "check":
            call = Call(connection, 1, messages, "/chat.v1.HealthService/Check", request)
            responses = list(call.responses("chat.v1.HealthCheckResponse"))
            if len(responses) != 1:
                raise ProtocolError("a unary call answered %d messages" % len(responses))
            status = SERVING_STATUS.get(responses[0].status, str(responses[0].status))
            print("check %s: %s" % (args.service or "server", status))
            return 0 if status == "SERVING" else 2
        call = Call(connection, 1, messages, "/chat.v1.HealthService/Watch", request)
        seen = 0
        for response in call.responses("chat.v1.HealthCheckResponse"):
            print("watch %s: %s" % (args.service or "server", SERVING_STATUS.get(response.status, response.status)))
            seen += 1
            if seen >= args.count:
                call.cancel()
                break
        # The connection still works after the cancel: one more call on a new stream.
        again = Call(connection, 3, messages, "/chat.v1.HealthService/Check", request)
        status = list(again.responses("chat.v1.HealthCheckResponse"))[0].status
        print("check after cancel: %s" % SERVING_STATUS.get(status, status))
        return 0
    except ProtocolError as error:
        print("error: %s" % error, file=sys.stderr)
        return 1
    finally:
        connection.sock.close()


if __name__ == "__main__":
    sys.exit(main())
