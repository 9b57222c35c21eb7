internal import Glibc

/// Reads the process environment without Foundation.
enum ProcessEnvironment {
    /// The value of the environment variable `name`, or nil when it is unset.
    static func value(for name: String) -> String? {
        guard let value = getenv(name) else { return nil }
        return String(cString: value)
    }
}
