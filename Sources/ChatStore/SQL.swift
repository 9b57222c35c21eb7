internal import ChatDomain
public import ChatProto

/// A statement whose interpolated values become bind parameters, never SQL text.
///
/// `"SELECT * FROM chat.threads WHERE tenant_id = \(tenant) AND id = \(id)"` is sent as
/// `... tenant_id = $1 AND id = $2` with the two values bound. Raw SQL (an identifier, a fixed fragment) needs
/// `\(unsafeRaw:)`, which is never to be used with a value from a caller.
public struct SQL: Sendable, Hashable, ExpressibleByStringInterpolation {
    /// The statement text, with `$n` placeholders.
    public private(set) var text: String
    /// The bound values, as text; nil is SQL NULL.
    public private(set) var binds: [String?]
    /// The statement only takes locks and writes nothing (so it assigns no transaction id): a transaction that
    /// inserts an idempotency key runs such leading statements before the key's insert (see `threadEventLock`).
    var takesLocksOnly = false

    /// Creates a statement from text and binds that already match its placeholders. Internal: outside this module
    /// statements are built only by interpolation, which binds every value.
    init(text: String, binds: [String?]) {
        self.text = text
        self.binds = binds
    }

    public init(stringLiteral value: String) {
        self.text = value
        self.binds = []
    }

    public init(stringInterpolation: StringInterpolation) {
        self.text = stringInterpolation.text
        self.binds = stringInterpolation.binds
    }

    /// Builds the text and the binds.
    public struct StringInterpolation: StringInterpolationProtocol {
        var text = ""
        var binds: [String?] = []

        public init(literalCapacity: Int, interpolationCount: Int) {
            self.text.reserveCapacity(literalCapacity + interpolationCount * 3)
            self.binds.reserveCapacity(interpolationCount)
        }

        public mutating func appendLiteral(_ literal: String) {
            self.text += literal
        }

        /// Binds a value as the next `$n` parameter.
        public mutating func appendInterpolation(_ value: some SQLBindable) {
            self.binds.append(value.sqlText)
            self.text += "$\(self.binds.count)"
        }

        /// Binds an optional value; nil is SQL NULL.
        public mutating func appendInterpolation(_ value: (some SQLBindable)?) {
            self.binds.append(value?.sqlText)
            self.text += "$\(self.binds.count)"
        }

        /// Appends raw SQL text. Only for fixed fragments written in our own code.
        public mutating func appendInterpolation(unsafeRaw fragment: String) {
            self.text += fragment
        }
    }
}

/// A value that can be bound as a text-format parameter.
public protocol SQLBindable: Sendable {
    /// The value in PostgreSQL's text input format; nil is SQL NULL.
    var sqlText: String? { get }
}

extension String: SQLBindable {
    public var sqlText: String? { self }
}

extension Int: SQLBindable {
    public var sqlText: String? { String(self) }
}

extension Int64: SQLBindable {
    public var sqlText: String? { String(self) }
}

extension Int32: SQLBindable {
    public var sqlText: String? { String(self) }
}

extension UInt64: SQLBindable {
    public var sqlText: String? { String(self) }
}

extension Bool: SQLBindable {
    public var sqlText: String? { self ? "t" : "f" }
}

extension Array: SQLBindable where Element == String {
    /// A PostgreSQL array literal: every element double-quoted, with `"` and `\` escaped.
    public var sqlText: String? {
        var literal = "{"
        for (index, element) in self.enumerated() {
            if index > 0 { literal += "," }
            literal += "\""
            for character in element.unicodeScalars {
                if character == "\"" || character == "\\" { literal += "\\" }
                literal.unicodeScalars.append(character)
            }
            literal += "\""
        }
        return literal + "}"
    }
}

// The contract's enums bind as what the database stores: a role as its name, an event type or audit kind as its
// number.

extension Role: SQLBindable {
    public var sqlText: String? { self.claimName }
}

extension EventType: SQLBindable {
    public var sqlText: String? { String(self.rawValue) }
}

extension AuditKind: SQLBindable {
    public var sqlText: String? { String(self.rawValue) }
}
