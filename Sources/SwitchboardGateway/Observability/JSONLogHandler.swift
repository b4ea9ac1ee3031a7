import Foundation
import Logging

/// Log lines as JSON objects, one per line on standard error: what log shippers (CloudWatch, Loki, Datadog) parse
/// without a pattern. Metadata becomes top-level keys beside `ts`, `level`, `logger` and `msg`.
public struct JSONLogHandler: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    private let label: String

    public init(label: String, level: Logger.Level) {
        self.label = label
        self.logLevel = level
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var members: [JSONObject.Member] = [
            .init("ts", .string(ISO8601.string(epochMilliseconds: Int64((Date().timeIntervalSince1970 * 1000).rounded())))),
            .init("level", .string(event.level.rawValue)),
            .init("logger", .string(self.label)),
            .init("msg", .string(event.message.description)),
        ]
        let merged = self.metadata.merging(event.metadata ?? [:]) { _, new in new }
        for (key, value) in merged.sorted(by: { $0.key < $1.key }) {
            members.append(.init(key, .string(value.description)))
        }
        var line = JSONValue.object(JSONObject(members)).jsonBytes
        line.append(0x0A)
        FileHandle.standardError.write(Data(line))
    }
}
