#!/usr/bin/env python3
"""A small HTTPS server for the tests (a stand-in for an identity provider's JWKS endpoint): serves the files of a
directory over TLS with the given certificate and key. Prints {"port": N} first (127.0.0.1, chosen by the
kernel), then one JSON line per request, {"get": path, "status": code}.

    https_file_server.py DIRECTORY CERTIFICATE KEY
"""
import json
import os
import ssl
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

directory, certificate, key = sys.argv[1:4]


def emit(record):
    sys.stdout.write(json.dumps(record, sort_keys=True) + "\n")
    sys.stdout.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        path = os.path.join(directory, os.path.basename(self.path.split("?")[0]))
        try:
            with open(path, "rb") as f:
                body = f.read()
            status = 200
        except OSError:
            body, status = b"not found\n", 404
        emit({"get": self.path, "status": status})
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(certificate, key)
server = HTTPServer(("127.0.0.1", 0), Handler)
server.socket = context.wrap_socket(server.socket, server_side=True)
emit({"port": server.server_address[1]})
server.serve_forever()
