#!/usr/bin/env python3
"""Cross-implementation check of the contract: protobuf-c (through ChatProto) against Python's protobuf.

  crosscheck.py DESCRIPTOR_SET SWIFT_DIR PYTHON_DIR

SWIFT_DIR holds <full name>.<seed>.bin files that ChatProto encoded from its fixtures. Each must decode with
Python's protobuf into exactly the fixture that fixtures.py builds for the same name and seed, and must be
byte-identical to Python's own encoding of it. Python's encodings are written to PYTHON_DIR for the Swift side to
decode in turn. Prints one line per failure and a summary; exits 1 when anything failed.
"""

import os
import sys

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixtures  # noqa: E402
from gen_swift import Model  # noqa: E402


def message_class(pool, full):
    desc = pool.FindMessageTypeByName(full)
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(desc)
    return message_factory.MessageFactory(pool).GetPrototype(desc)


def main():
    desc_path, swift_dir, python_dir = sys.argv[1:4]
    fds = descriptor_pb2.FileDescriptorSet()
    with open(desc_path, "rb") as fh:
        fds.ParseFromString(fh.read())
    pool = descriptor_pool.DescriptorPool()
    for f in fds.file:
        pool.Add(f)
    model = Model(fds)
    os.makedirs(python_dir, exist_ok=True)
    checked, failures = 0, []
    for full in sorted(model.messages):
        cls = message_class(pool, full)
        for seed in fixtures.seeds_for(model, full):
            expected = fixtures.python_fill(cls(), fixtures.plan(model, full, seed))
            name = "%s.%d.bin" % (full, seed)
            encoded = expected.SerializeToString()
            with open(os.path.join(python_dir, name), "wb") as fh:
                fh.write(encoded)
            path = os.path.join(swift_dir, name)
            if not os.path.exists(path):
                failures.append("%s: no Swift encoding" % name)
                continue
            with open(path, "rb") as fh:
                swift_bytes = fh.read()
            try:
                decoded = cls.FromString(swift_bytes)
            except Exception as error:  # noqa: BLE001 - any decode failure is a finding
                failures.append("%s: Python cannot decode the Swift encoding: %s" % (name, error))
                continue
            if decoded != expected:
                failures.append("%s: decodes to a different value" % name)
            elif swift_bytes != encoded:
                failures.append("%s: equal value but different bytes" % name)
            checked += 1
    for line in failures:
        print("FAIL " + line)
    print("crosscheck: %d checked, %d failed" % (checked, len(failures)))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
