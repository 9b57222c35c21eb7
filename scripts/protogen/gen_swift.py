#!/usr/bin/env python3
"""Generates the Swift side of the contract from the descriptor set that protoc-c wrote.

Inputs: a FileDescriptorSet (protoc-c --descriptor_set_out --include_imports).
Outputs:
  Sources/ChatProtoC/include/ChatProtoC.h       umbrella header + descriptor accessors
  Sources/ChatProto/Generated/<file>.swift       value types + converters to and from the protobuf-c structs
  Sources/ChatProto/Generated/Methods.swift      the method table of every service
  Tests/ChatProtoTests/Generated/Fixtures.swift  deterministic fixtures of every message (see fixtures.py)

Nothing here is written by hand per field: every name and converter follows from the descriptors and from
protoc-c's naming rules (checked by the Swift compiler against the generated C headers).
"""

import os
import re
import sys

from google.protobuf import descriptor_pb2

FDP = descriptor_pb2.FieldDescriptorProto

SWIFT_KEYWORDS = {
    "associatedtype", "class", "deinit", "enum", "extension", "fileprivate", "func", "import", "init", "inout",
    "internal", "let", "open", "operator", "private", "protocol", "public", "rethrows", "static", "struct",
    "subscript", "typealias", "var", "break", "case", "continue", "default", "defer", "do", "else", "fallthrough",
    "for", "guard", "if", "in", "repeat", "return", "switch", "where", "while", "as", "catch", "false", "is", "nil",
    "super", "self", "Self", "throw", "throws", "true", "try", "Type", "Protocol", "some", "any",
}

SCALARS = {
    # proto type: (Swift type, default literal, C conversion to Swift, Swift conversion to C)
    FDP.TYPE_INT32: ("Int32", "0"),
    FDP.TYPE_SINT32: ("Int32", "0"),
    FDP.TYPE_SFIXED32: ("Int32", "0"),
    FDP.TYPE_INT64: ("Int64", "0"),
    FDP.TYPE_SINT64: ("Int64", "0"),
    FDP.TYPE_SFIXED64: ("Int64", "0"),
    FDP.TYPE_UINT32: ("UInt32", "0"),
    FDP.TYPE_FIXED32: ("UInt32", "0"),
    FDP.TYPE_UINT64: ("UInt64", "0"),
    FDP.TYPE_FIXED64: ("UInt64", "0"),
    FDP.TYPE_FLOAT: ("Float", "0"),
    FDP.TYPE_DOUBLE: ("Double", "0"),
    FDP.TYPE_BOOL: ("Bool", "false"),
    FDP.TYPE_STRING: ("String", '""'),
    FDP.TYPE_BYTES: ("[UInt8]", "[]"),
}


def esc(name):
    return "`%s`" % name if name in SWIFT_KEYWORDS else name


def camel_upper(snake):
    return "".join(p[:1].upper() + p[1:] for p in snake.split("_") if p)


def camel_lower(snake):
    s = camel_upper(snake)
    return s[:1].lower() + s[1:]


def camel_to_lower(name):
    """protoc-c's CamelToLower: 'WatchEvent' -> 'watch_event'."""
    out = ""
    for i, ch in enumerate(name):
        if ch.isupper():
            if i > 0 and out and out[-1] != "_":
                out += "_"
            out += ch.lower()
        else:
            out += ch
    return out


def to_camel_c(name):
    """protoc-c's ToCamel for package components and oneof names: 'title_update' -> 'TitleUpdate'."""
    return camel_upper(name)


class Model:
    def __init__(self, fds):
        self.files = [f for f in fds.file]
        self.messages = {}  # full name -> (file, DescriptorProto, swift name, c name, c lower)
        self.enums = {}  # full name -> (file, EnumDescriptorProto, swift name, c name)
        for f in self.files:
            pkg = f.package
            c_pkg = "__".join(to_camel_c(p) for p in pkg.split("."))
            lower_pkg = "__".join(p.lower() for p in pkg.split("."))
            for m in f.message_type:
                self._add_message(f, m, pkg, [], c_pkg, lower_pkg)
            for e in f.enum_type:
                self.enums["%s.%s" % (pkg, e.name)] = (f, e, e.name, "%s__%s" % (c_pkg, e.name))

    def _add_message(self, f, m, pkg, outer, c_pkg, lower_pkg):
        path = outer + [m.name]
        full = "%s.%s" % (pkg, ".".join(path))
        swift = ".".join(path)
        c_name = "%s__%s" % (c_pkg, "__".join(path))
        c_lower = "%s__%s" % (lower_pkg, "__".join(camel_to_lower(p) for p in path))
        self.messages[full] = (f, m, swift, c_name, c_lower)
        for n in m.nested_type:
            self._add_message(f, n, pkg, path, c_pkg, lower_pkg)
        for e in m.enum_type:
            self.enums["%s.%s" % (full, e.name)] = (f, e, "%s.%s" % (swift, e.name), "%s__%s" % (c_name, e.name))

    def swift_type(self, field):
        if field.type == FDP.TYPE_MESSAGE:
            return self.messages[field.type_name.lstrip(".")][2]
        if field.type == FDP.TYPE_ENUM:
            return self.enums[field.type_name.lstrip(".")][2]
        return SCALARS[field.type][0]

    def default(self, field):
        if field.label == FDP.LABEL_REPEATED:
            return "[]"
        if field.type == FDP.TYPE_MESSAGE:
            return "nil"
        if field.type == FDP.TYPE_ENUM:
            return ".%s" % enum_case_names(self.enums[field.type_name.lstrip(".")][1])[0]
        return SCALARS[field.type][1]


def enum_case_names(e):
    """Swift case names: the value names with the enum's own prefix removed, in lowerCamelCase."""
    prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", e.name).upper() + "_"
    names = []
    for v in e.value:
        n = v.name[len(prefix):] if v.name.startswith(prefix) else v.name
        names.append(camel_lower(n.lower()))
    return names


def value_short_names(e):
    """The value names with the enum's own prefix removed, in lower case (ROLE_TENANT_ADMIN: tenant_admin)."""
    prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", e.name).upper() + "_"
    return [(v.name[len(prefix):] if v.name.startswith(prefix) else v.name).lower() for v in e.value]


def is_oneof_member(field, m):
    return field.HasField("oneof_index") and not field.proto3_optional


# MARK: - Swift emission


class Writer:
    def __init__(self):
        self.lines = []
        self.level = 0

    def __call__(self, line=""):
        self.lines.append(("    " * self.level + line) if line else "")

    def indent(self):
        self.level += 1

    def dedent(self):
        self.level -= 1

    def text(self):
        return "\n".join(self.lines) + "\n"


HEADER = "// Generated by scripts/generate from %s. DO NOT EDIT.\n"


def emit_enum(w, model, e, swift_name, local_name):
    cases = enum_case_names(e)
    w("/// The proto enum `%s`. Unknown values are kept as `.unrecognized`, as proto3 requires." % e.name)
    w("public enum %s: Hashable, Sendable, CaseIterable {" % local_name)
    w.indent()
    for c, v in zip(cases, e.value):
        w("/// `%s` = %d" % (v.name, v.number))
        w("case %s" % esc(c))
    w("/// A value this version of the contract does not know.")
    w("case unrecognized(Int32)")
    w()
    w("/// Every known value.")
    w("public static let allCases: [%s] = [%s]" % (local_name, ", ".join("." + c for c in cases)))
    w()
    w("/// Creates the value for a wire number.")
    w("public init(rawValue: Int32) {")
    w.indent()
    w("switch rawValue {")
    for c, v in zip(cases, e.value):
        w("case %d: self = .%s" % (v.number, c))
    w("default: self = .unrecognized(rawValue)")
    w("}")
    w.dedent()
    w("}")
    w()
    w("/// The wire number.")
    w("public var rawValue: Int32 {")
    w.indent()
    w("switch self {")
    for c, v in zip(cases, e.value):
        w("case .%s: return %d" % (c, v.number))
    w("case .unrecognized(let value): return value")
    w("}")
    w.dedent()
    w("}")
    w()
    w("/// The value's proto name without the enum's prefix, in lower case (`%s` is `%s`); nil for a value this"
      % (e.value[-1].name, value_short_names(e)[-1]))
    w("/// version of the contract does not know. Names that stand for the value outside the wire (a token claim,")
    w("/// a stored column) are these.")
    w("public var name: String? {")
    w.indent()
    w("switch self {")
    for c, n in zip(cases, value_short_names(e)):
        w('case .%s: return "%s"' % (c, n))
    w("case .unrecognized: return nil")
    w("}")
    w.dedent()
    w("}")
    w.dedent()
    w("}")


def fields_of(m):
    """Plain fields (not oneof members) and the oneofs with their members, in declaration order."""
    plain = []
    oneofs = [(o.name, []) for o in m.oneof_decl]
    for f in m.field:
        if is_oneof_member(f, m):
            oneofs[f.oneof_index][1].append(f)
        else:
            plain.append(f)
    return plain, oneofs


def params_exist(plain, oneofs):
    return bool(plain or oneofs)


def emit_message_struct(w, model, full):
    f, m, swift, c_name, c_lower = model.messages[full]
    local = m.name
    plain, oneofs = fields_of(m)
    w("/// The proto message `%s`." % full)
    w("public struct %s: Hashable, Sendable {" % local)
    w.indent()
    for fld in plain:
        t = model.swift_type(fld)
        if fld.label == FDP.LABEL_REPEATED:
            t = "[%s]" % t
        elif fld.type == FDP.TYPE_MESSAGE:
            t = "%s?" % t
        w("/// Field %d, `%s`." % (fld.number, fld.name))
        w("public var %s: %s = %s" % (esc(camel_lower(fld.name)), t, model.default(fld)))
    for oname, members in oneofs:
        w("/// The oneof `%s`; nil when no member is set." % oname)
        w("public var %s: %s? = nil" % (esc(camel_lower(oname)), camel_upper(oname)))
    w()
    if params_exist(plain, oneofs):
        w("/// Creates a message with every field at its proto3 default.")
        w("public init() {}")
        w()
    params = []
    for fld in plain:
        t = model.swift_type(fld)
        if fld.label == FDP.LABEL_REPEATED:
            t = "[%s]" % t
        elif fld.type == FDP.TYPE_MESSAGE:
            t = "%s?" % t
        params.append((camel_lower(fld.name), t, model.default(fld)))
    for oname, _ in oneofs:
        params.append((camel_lower(oname), "%s?" % camel_upper(oname), "nil"))
    if params:
        w("/// Creates a message; every field defaults to its proto3 default.")
        w("public init(")
        w.indent()
        for i, (n, t, d) in enumerate(params):
            w("%s: %s = %s%s" % (esc(n), t, d, "," if i < len(params) - 1 else ""))
        w.dedent()
        w(") {")
        w.indent()
        for n, _, _ in params:
            w("self.%s = %s" % (esc(n), esc(n)))
        w.dedent()
        w("}")
    else:
        w("/// Creates the message, which has no fields.")
        w("public init() {}")
    for oname, members in oneofs:
        w()
        w("/// The members of the oneof `%s`." % oname)
        w("public enum %s: Hashable, Sendable {" % camel_upper(oname))
        w.indent()
        for fld in members:
            w("/// Field %d, `%s`." % (fld.number, fld.name))
            w("case %s(%s)" % (esc(camel_lower(fld.name)), model.swift_type(fld)))
        w.dedent()
        w("}")
    for e in m.enum_type:
        w()
        emit_enum(w, model, e, "%s.%s" % (swift, e.name), e.name)
    for n in m.nested_type:
        w()
        emit_message_struct(w, model, "%s.%s" % (full, n.name))
    w.dedent()
    w("}")


def c_member(name):
    return "`%s`" % name if name in SWIFT_KEYWORDS else name


def decode_scalar(model, fld, expr):
    t = fld.type
    if t == FDP.TYPE_STRING:
        return "protoString(%s)" % expr
    if t == FDP.TYPE_BYTES:
        return "protoBytes(%s)" % expr
    if t == FDP.TYPE_BOOL:
        return "(%s != 0)" % expr
    if t == FDP.TYPE_ENUM:
        return "%s(rawValue: Int32(truncatingIfNeeded: %s.rawValue))" % (model.swift_type(fld), expr)
    if t == FDP.TYPE_MESSAGE:
        return "%s(c: %s!)" % (model.swift_type(fld), expr)
    return expr


def encode_scalar(model, fld, value, path):
    t = fld.type
    if t == FDP.TYPE_STRING:
        return "try arena.cString(%s, field: %s)" % (value, path)
    if t == FDP.TYPE_BYTES:
        return "arena.binary(%s)" % value
    if t == FDP.TYPE_BOOL:
        return "(%s ? 1 : 0)" % value
    if t == FDP.TYPE_ENUM:
        return ".init(rawValue: numericCast(UInt32(bitPattern: %s.rawValue)))" % value
    if t == FDP.TYPE_MESSAGE:
        return "try arena.message(%s)" % value
    return value


def c_elem_type(model, fld):
    t = fld.type
    if t == FDP.TYPE_STRING:
        return "UnsafeMutablePointer<CChar>?"
    if t == FDP.TYPE_BYTES:
        return "ProtobufCBinaryData"
    if t == FDP.TYPE_BOOL:
        return "protobuf_c_boolean"
    if t == FDP.TYPE_ENUM:
        return model.enums[fld.type_name.lstrip(".")][3]
    if t == FDP.TYPE_MESSAGE:
        return "UnsafeMutablePointer<%s>?" % model.messages[fld.type_name.lstrip(".")][3]
    return SCALARS[t][0]


def emit_message_bridge(w, model, full):
    f, m, swift, c_name, c_lower = model.messages[full]
    plain, oneofs = fields_of(m)
    w("extension %s: ProtoMessage, CProtoBridged {" % swift)
    w.indent()
    w("typealias CMessage = %s" % c_name)
    w()
    w("/// The message's full proto name.")
    w('public static var protoName: String { "%s" }' % full)
    w()
    w("static var cDescriptor: UnsafePointer<ProtobufCMessageDescriptor> { chat_descriptor_%s() }" % c_lower)
    w()
    w("/// Decodes the message from its protobuf encoding; strings are validated as UTF-8 without NUL bytes.")
    w("public init(serializedBytes bytes: UnsafeRawBufferPointer) throws(ProtoError) {")
    w.indent()
    w("self = try protoDecode(Self.self, bytes)")
    w.dedent()
    w("}")
    w()
    w("/// Builds the protobuf-c message, ready to pack into any output buffer.")
    w("public func packed() throws(ProtoError) -> PackedMessage {")
    w.indent()
    w("try protoPack(self)")
    w.dedent()
    w("}")
    w()
    # Decoding from C.
    w("init(c: UnsafePointer<%s>) {" % c_name)
    w.indent()
    if not m.field:
        w("self.init()")
    for fld in plain:
        name = esc(camel_lower(fld.name))
        cm = c_member(fld.name)
        if fld.label == FDP.LABEL_REPEATED:
            w("self.%s = protoArray(c.pointee.%s, c.pointee.n_%s) { %s }" % (
                name, cm, fld.name, decode_scalar(model, fld, "$0")))
        elif fld.type == FDP.TYPE_MESSAGE:
            w("self.%s = c.pointee.%s.map { %s(c: $0) }" % (name, cm, model.swift_type(fld)))
        else:
            w("self.%s = %s" % (name, decode_scalar(model, fld, "c.pointee.%s" % cm)))
    for oname, members in oneofs:
        w("switch c.pointee.%s_case.rawValue {" % oname)
        for fld in members:
            w("case %d: self.%s = .%s(%s)" % (
                fld.number, esc(camel_lower(oname)), esc(camel_lower(fld.name)),
                decode_scalar(model, fld, "c.pointee.%s" % c_member(fld.name))))
        w("default: self.%s = nil" % esc(camel_lower(oname)))
        w("}")
    w.dedent()
    w("}")
    w()
    # Encoding into C.
    w("func fill(_ c: UnsafeMutablePointer<%s>, arena: ProtoArena) throws(ProtoError) {" % c_name)
    w.indent()
    w("protobuf_c_message_init(Self.cDescriptor, c)")
    for fld in plain:
        name = "self.%s" % esc(camel_lower(fld.name))
        cm = c_member(fld.name)
        path = '"%s.%s"' % (full.split(".", 2)[-1], fld.name)
        if fld.label == FDP.LABEL_REPEATED:
            w("if !%s.isEmpty {" % name)
            w.indent()
            w("c.pointee.n_%s = %s.count" % (fld.name, name))
            w("c.pointee.%s = try arena.array(%s, of: %s.self) { (v) throws(ProtoError) in %s }" % (
                cm, name, c_elem_type(model, fld), encode_scalar(model, fld, "v", path)))
            w.dedent()
            w("}")
        elif fld.type == FDP.TYPE_MESSAGE:
            w("if let v = %s { c.pointee.%s = try arena.message(v) }" % (name, cm))
        elif fld.type == FDP.TYPE_STRING:
            w("c.pointee.%s = %s" % (cm, encode_scalar(model, fld, name, path)))
        else:
            w("c.pointee.%s = %s" % (cm, encode_scalar(model, fld, name, path)))
    for oname, members in oneofs:
        w("switch self.%s {" % esc(camel_lower(oname)))
        for fld in members:
            path = '"%s.%s"' % (full.split(".", 2)[-1], fld.name)
            w("case .%s(let v)?:" % esc(camel_lower(fld.name)))
            w.indent()
            w("c.pointee.%s_case = .init(rawValue: %d)" % (oname, fld.number))
            w("c.pointee.%s = %s" % (c_member(fld.name), encode_scalar(model, fld, "v", path)))
            w.dedent()
        w("case nil: break")
        w("}")
    w.dedent()
    w("}")
    w.dedent()
    w("}")
    for n in m.nested_type:
        w()
        emit_message_bridge(w, model, "%s.%s" % (full, n.name))


def swift_file(model, f):
    w = Writer()
    w(HEADER.rstrip("\n") % f.name)
    w()
    w("internal import CProtobufC")
    w("internal import ChatProtoC")
    for m in f.message_type:
        w()
        w("// MARK: - %s" % m.name)
        w()
        emit_message_struct(w, model, "%s.%s" % (f.package, m.name))
    for e in f.enum_type:
        w()
        emit_enum(w, model, e, e.name, e.name)
    for m in f.message_type:
        w()
        emit_message_bridge(w, model, "%s.%s" % (f.package, m.name))
    return w.text()


def methods_file(model):
    w = Writer()
    w("// Generated by scripts/generate from proto/. DO NOT EDIT.")
    w()
    w("/// Every method of every service in the contract, in declaration order.")
    w("public enum ChatMethods {")
    w.indent()
    entries = []
    for f in model.files:
        for s in f.service:
            w("/// The methods of `%s.%s`." % (f.package, s.name))
            w("public enum %s {" % s.name)
            w.indent()
            w('/// The service\'s full name.')
            w('public static let serviceName = "%s.%s"' % (f.package, s.name))
            for meth in s.method:
                req = model.messages[meth.input_type.lstrip(".")][2]
                resp = model.messages[meth.output_type.lstrip(".")][2]
                kind = ".serverStreaming" if meth.server_streaming else ".unary"
                var = camel_lower(camel_to_lower(meth.name))
                w("/// `/%s.%s/%s`" % (f.package, s.name, meth.name))
                w("public static let %s = ChatMethod<%s, %s>(" % (var, req, resp))
                w.indent()
                w('path: "/%s.%s/%s", kind: %s, idempotent: %s'
                  % (f.package, s.name, meth.name, kind, "true" if is_idempotent(meth) else "false"))
                w.dedent()
                w(")")
                entries.append("%s.%s.info" % (s.name, var))
            w.dedent()
            w("}")
            w()
    w("/// Every method, for the method listing and for routing.")
    w("public static let all: [ChatMethodInfo] = [")
    w.indent()
    for e in entries:
        w("%s," % e)
    w.dedent()
    w("]")
    w.dedent()
    w("}")
    return w.text()


def is_idempotent(method):
    """The contract's word on retries: NO_SIDE_EFFECTS or IDEMPOTENT is safe to retry as it is; a method without an
    idempotency_level is a mutation (a retry is safe only with the same idempotency key)."""
    return method.options.idempotency_level in (
        descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS, descriptor_pb2.MethodOptions.IDEMPOTENT)


def stub_name(service, method):
    """The client stub's name: the method in lowerCamelCase, prefixed with the service when it is one word."""
    name = camel_lower(camel_to_lower(method))
    if re.fullmatch(r"[A-Z][a-z]+", method):
        return camel_lower(camel_to_lower(service.replace("Service", ""))) + method
    return name


def stubs_file(model):
    w = Writer()
    w("// Generated by scripts/generate from proto/. DO NOT EDIT.")
    w()
    w("public import ChatProto")
    w()
    w("/// Typed stubs for every method of the contract.")
    w("extension ChatClient {")
    w.indent()
    first = True
    for f in model.files:
        for s in f.service:
            for meth in s.method:
                req = model.messages[meth.input_type.lstrip(".")][2]
                resp = model.messages[meth.output_type.lstrip(".")][2]
                var = camel_lower(camel_to_lower(meth.name))
                if not first:
                    w()
                first = False
                w("/// Calls `/%s.%s/%s`." % (f.package, s.name, meth.name))
                if meth.server_streaming:
                    w("public func %s(" % stub_name(s.name, meth.name))
                    w("    _ request: %s," % req)
                    w("    options: CallOptions = CallOptions()")
                    w(") async throws -> ResponseStream<%s> {" % resp)
                    w("    try await self.serverStream(ChatMethods.%s.%s, request, options: options)" % (s.name, var))
                else:
                    w("public func %s(" % stub_name(s.name, meth.name))
                    w("    _ request: %s," % req)
                    w("    options: CallOptions = CallOptions()")
                    w(") async throws -> %s {" % resp)
                    w("    try await self.unary(ChatMethods.%s.%s, request, options: options)" % (s.name, var))
                w("}")
    w.dedent()
    w("}")
    return w.text()


def umbrella_header(model, headers):
    out = ["/* Generated by scripts/generate. DO NOT EDIT. */",
           "#ifndef CHAT_PROTO_C_H", "#define CHAT_PROTO_C_H", "", "#include <protobuf-c/protobuf-c.h>"]
    for h in headers:
        out.append('#include "%s"' % h)
    out.append("")
    out.append("/* Descriptor accessors: Swift cannot take the address of an imported C constant. */")
    for full in sorted(model.messages):
        c_lower = model.messages[full][4]
        out.append("static inline const ProtobufCMessageDescriptor *chat_descriptor_%s(void) {" % c_lower)
        out.append("    return &%s__descriptor;" % c_lower)
        out.append("}")
    out.append("")
    out.append("#endif")
    return "\n".join(out) + "\n"


def main():
    desc_path, root = sys.argv[1], sys.argv[2]
    fds = descriptor_pb2.FileDescriptorSet()
    with open(desc_path, "rb") as fh:
        fds.ParseFromString(fh.read())
    model = Model(fds)
    gen_dir = os.path.join(root, "Sources/ChatProto/Generated")
    os.makedirs(gen_dir, exist_ok=True)
    for f in model.files:
        base = os.path.splitext(os.path.basename(f.name))[0]
        with open(os.path.join(gen_dir, "%s.pb.swift" % camel_upper(base)), "w") as fh:
            fh.write(swift_file(model, f))
    with open(os.path.join(gen_dir, "Methods.swift"), "w") as fh:
        fh.write(methods_file(model))
    stubs_dir = os.path.join(root, "Sources/ChatClient/Generated")
    os.makedirs(stubs_dir, exist_ok=True)
    with open(os.path.join(stubs_dir, "ChatClient+Stubs.swift"), "w") as fh:
        fh.write(stubs_file(model))
    headers = ["%s.pb-c.h" % os.path.splitext(f.name)[0] for f in model.files]
    with open(os.path.join(root, "Sources/ChatProtoC/include/ChatProtoC.h"), "w") as fh:
        fh.write(umbrella_header(model, headers))
    with open(os.path.join(root, "Sources/ChatProtoC/include/module.modulemap"), "w") as fh:
        fh.write("module ChatProtoC {\n    header \"ChatProtoC.h\"\n    export *\n}\n")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import fixtures

    fix_dir = os.path.join(root, "Tests/ChatProtoTests/Generated")
    os.makedirs(fix_dir, exist_ok=True)
    with open(os.path.join(fix_dir, "Fixtures.swift"), "w") as fh:
        fh.write(fixtures.swift_fixtures(model))


if __name__ == "__main__":
    main()
