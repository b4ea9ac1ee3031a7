import SwitchboardCore

/// Parsers for configuration scalars. They throw with an empty key; ``ConfigurationOption`` fills it in.
enum Parse {
    static func fail(_ reason: String) -> ConfigurationError { ConfigurationError(key: "", reason: reason) }

    static func int(_ text: String, in range: ClosedRange<Int>) throws(ConfigurationError) -> Int {
        guard let value = Int(text.trimmingWhitespace()) else { throw fail("'\(text)' is not an integer") }
        guard range.contains(value) else { throw fail("\(value) is outside \(range.lowerBound)...\(range.upperBound)") }
        return value
    }

    static func bool(_ text: String) throws(ConfigurationError) -> Bool {
        switch text.trimmingWhitespace().lowercased() {
        case "true", "yes", "on", "1": return true
        case "false", "no", "off", "0": return false
        default: throw fail("'\(text)' is not a boolean (true or false)")
        }
    }

    static func choice<T: RawRepresentable & CaseIterable>(_ text: String, of: T.Type) throws(ConfigurationError) -> T
    where T.RawValue == String {
        guard let value = T(rawValue: text.trimmingWhitespace()) else {
            throw fail("'\(text)' is not one of \(T.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return value
    }

    /// The longest duration any setting takes: a year. Durations are turned into milliseconds and added to clocks,
    /// so an absurd value is refused here rather than overflowing there.
    static let maximumDuration: Duration = .seconds(365 * 24 * 3600)

    /// `250ms`, `25s`, `5m`, `1h`, or a bare number of seconds; at most a year.
    static func duration(_ text: String) throws(ConfigurationError) -> Duration {
        let trimmed = text.trimmingWhitespace()
        let units: [(String, Int64)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)]
        var milliseconds: (partialValue: Int64, overflow: Bool)?
        for (suffix, unit) in units where trimmed.hasSuffix(suffix) {
            if suffix == "s", trimmed.hasSuffix("ms") { continue }
            if let number = Int64(trimmed.dropLast(suffix.count)), number >= 0 { milliseconds = number.multipliedReportingOverflow(by: unit) }
        }
        if milliseconds == nil, let seconds = Int64(trimmed), seconds >= 0 { milliseconds = seconds.multipliedReportingOverflow(by: 1000) }
        guard let milliseconds else { throw fail("'\(text)' is not a duration (e.g. 500ms, 25s, 5m)") }
        let duration = Duration.milliseconds(milliseconds.partialValue)
        guard !milliseconds.overflow, duration <= self.maximumDuration else { throw fail("'\(text)' is longer than a year") }
        return duration
    }

    /// A duration above zero and at most `limit`.
    /// A duration where 0 turns the feature off (`nil`).
    static func durationOrOff(_ text: String, atMost limit: Duration) throws(ConfigurationError) -> Duration? {
        let duration = try self.duration(text)
        guard duration <= limit else { throw fail("'\(text)' must be at most \(limit)") }
        return duration == .zero ? nil : duration
    }

    static func positiveDuration(_ text: String, atMost limit: Duration) throws(ConfigurationError) -> Duration {
        let duration = try self.duration(text)
        guard duration > .zero, duration <= limit else { throw fail("'\(text)' must be above 0 and at most \(limit)") }
        return duration
    }

    /// `1024`, `64KiB`, `1MiB`, `1GiB` (also KB/MB/GB as binary multiples).
    static func bytes(_ text: String, in range: ClosedRange<Int>) throws(ConfigurationError) -> Int {
        let trimmed = text.trimmingWhitespace()
        let units: [(String, Int)] = [("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("KB", 1 << 10), ("MB", 1 << 20), ("GB", 1 << 30)]
        var value: Int?
        for (suffix, multiplier) in units where trimmed.hasSuffix(suffix) {
            guard let number = Int(trimmed.dropLast(suffix.count).trimmingWhitespace()) else { continue }
            let (product, overflow) = number.multipliedReportingOverflow(by: multiplier)
            guard !overflow else { throw fail("'\(text)' is too large") }
            value = product
        }
        guard let bytes = value ?? Int(trimmed) else { throw fail("'\(text)' is not a size (e.g. 65536, 64KiB, 1MiB)") }
        guard range.contains(bytes) else { throw fail("\(bytes) bytes is outside \(range.lowerBound)...\(range.upperBound)") }
        return bytes
    }
}
