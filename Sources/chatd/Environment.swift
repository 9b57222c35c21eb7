import ArgumentParser
import Foundation

/// Every flag of a subcommand may also come from the environment: `--rate-per-user 7` is `CHATD_RATE_PER_USER=7`,
/// a boolean flag is set by `true` or `1`. The command line wins over the environment. The names are read from the
/// subcommand's own help (its one definition of its flags), so a new flag gets its variable with no other edit;
/// a `CHATD_` variable that names no flag of the subcommand is an error, as a mistyped flag is.
enum Environment {
    /// The prefix of chatd's variables.
    static let prefix = "CHATD_"

    /// The variable of a flag: `--rate-per-user` is `CHATD_RATE_PER_USER`.
    static func variable(forFlag flag: String) -> String {
        Self.prefix + flag.uppercased().replacingOccurrences(of: "-", with: "_")
    }

    /// The flags a command takes, from its help: each with whether it takes a value.
    static func flags(of command: any ParsableCommand.Type) -> [String: Bool] {
        var flags: [String: Bool] = [:]
        for line in command.helpMessage(includeHidden: true, columns: 10_000).split(separator: "\n") {
            let text = line.drop { $0 == " " }
            guard text.hasPrefix("--") else { continue }
            let words = text.split(separator: " ")
            for (index, word) in words.enumerated() where word.hasPrefix("--") {
                let name = String(word.dropFirst(2).prefix { $0 != "," && $0 != " " })
                guard !name.isEmpty, name != "help", name != "version" else { continue }
                let next = index + 1 < words.count ? words[index + 1] : ""
                flags[name] = next.hasPrefix("<")
            }
        }
        return flags
    }

    /// `arguments` with the environment's flags added where the command line does not give them.
    ///
    /// - Parameters:
    ///   - flags: the flags of the command being run; only these are added.
    ///   - known: every flag of chatd's commands: a variable naming one of these that this command lacks is left
    ///     alone (one environment file serves `serve` and `migrate`), any other `CHATD_` variable is an error.
    static func arguments(
        _ arguments: [String],
        environment: [String: String],
        flags: [String: Bool],
        known: Set<String>
    ) throws -> [String] {
        var given = Set<String>()
        for argument in arguments where argument.hasPrefix("--") {
            given.insert(String(argument.dropFirst(2).prefix { $0 != "=" }))
        }
        var added: [String] = []
        let byVariable = Dictionary(uniqueKeysWithValues: flags.keys.map { (Self.variable(forFlag: $0), $0) })
        for (variable, value) in environment.sorted(by: { $0.key < $1.key }) where variable.hasPrefix(Self.prefix) {
            guard let flag = byVariable[variable] else {
                if known.contains(where: { Self.variable(forFlag: $0) == variable }) { continue }
                throw ValidationError("\(variable) names no flag of chatd (see chatd serve --help)")
            }
            guard !given.contains(flag) else { continue }
            if flags[flag] == true {
                added += ["--\(flag)", value]
            } else {
                switch value.lowercased() {
                case "1", "true", "yes": added.append("--\(flag)")
                case "0", "false", "no", "": break
                default: throw ValidationError("\(variable) is a switch: true or false, not \(value)")
                }
            }
        }
        return arguments + added
    }
}
