import SwitchboardCore

/// A JSON value that may hold binary leaves: the arguments of Socket.IO events and acks.
///
/// On the wire each binary leaf becomes `{"_placeholder":true,"num":N}` in the JSON and travels as the N-th
/// attachment (a binary Engine.IO message); the packet decoder puts the bytes back.
public enum SocketValue: Sendable, Hashable {
    case null
    case bool(Bool)
    /// The number's literal JSON text, as ``JSONValue/number(_:)`` keeps it.
    case number(String)
    case string(String)
    case binary([UInt8])
    case array([SocketValue])
    case object([Member])

    public struct Member: Sendable, Hashable {
        public var key: String
        public var value: SocketValue

        public init(_ key: String, _ value: SocketValue) {
            self.key = key
            self.value = value
        }
    }

    /// A JSON value, taken as it is: no placeholder is replaced.
    public init(_ json: JSONValue) {
        switch json {
        case .null: self = .null
        case .bool(let value): self = .bool(value)
        case .number(let text): self = .number(text)
        case .string(let string): self = .string(string)
        case .array(let elements): self = .array(elements.map(SocketValue.init))
        case .object(let object): self = .object(object.members.map { Member($0.key, SocketValue($0.value)) })
        }
    }

    /// The value as JSON; `nil` when it holds binary.
    public var json: JSONValue? {
        switch self {
        case .null: return .null
        case .bool(let value): return .bool(value)
        case .number(let text): return .number(text)
        case .string(let string): return .string(string)
        case .binary: return nil
        case .array(let elements):
            var json: [JSONValue] = []
            for element in elements {
                guard let value = element.json else { return nil }
                json.append(value)
            }
            return .array(json)
        case .object(let members):
            var json: [JSONObject.Member] = []
            for member in members {
                guard let value = member.value.json else { return nil }
                json.append(JSONObject.Member(member.key, value))
            }
            return .object(JSONObject(json))
        }
    }

    /// The string, when this value is one.
    public var stringValue: String? {
        if case .string(let string) = self { return string }
        return nil
    }

    var containsBinary: Bool {
        switch self {
        case .binary: true
        case .array(let elements): elements.contains { $0.containsBinary }
        case .object(let members): members.contains { $0.value.containsBinary }
        case .null, .bool, .number, .string: false
        }
    }

    /// The JSON with placeholders, appending each binary leaf to `attachments` in document order.
    func deconstruct(into attachments: inout [[UInt8]]) -> JSONValue {
        switch self {
        case .binary(let bytes):
            attachments.append(bytes)
            return ["_placeholder": true, "num": .number(String(attachments.count - 1))]
        case .array(let elements):
            return .array(elements.map { $0.deconstruct(into: &attachments) })
        case .object(let members):
            return .object(JSONObject(members.map { JSONObject.Member($0.key, $0.value.deconstruct(into: &attachments)) }))
        case .null, .bool, .number, .string:
            return self.json ?? .null
        }
    }

    /// Puts the attachments back in place of their placeholders. As in the reference parser, an object whose
    /// `_placeholder` is `true` is a placeholder, and one whose `num` is not an attachment index is an error.
    init(reconstructing json: JSONValue, attachments: [[UInt8]]) throws(SocketIOError) {
        switch json {
        case .array(let elements):
            var values: [SocketValue] = []
            values.reserveCapacity(elements.count)
            for element in elements { values.append(try SocketValue(reconstructing: element, attachments: attachments)) }
            self = .array(values)
        case .object(let object) where object["_placeholder"] == .bool(true):
            // At most 9 digits, so the conversion cannot overflow before the range check.
            guard case .number(let text)? = object["num"], text.utf8.count <= 9, let index = Int(text), index >= 0,
                index < attachments.count
            else { throw .invalidPlaceholder }
            self = .binary(attachments[index])
        case .object(let object):
            var members: [Member] = []
            members.reserveCapacity(object.members.count)
            for member in object.members {
                members.append(Member(member.key, try SocketValue(reconstructing: member.value, attachments: attachments)))
            }
            self = .object(members)
        default:
            self = SocketValue(json)
        }
    }
}

extension SocketValue: ExpressibleByStringLiteral, ExpressibleByBooleanLiteral, ExpressibleByIntegerLiteral, ExpressibleByNilLiteral,
    ExpressibleByArrayLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(integerLiteral value: Int64) { self = .number(String(value)) }
    public init(nilLiteral: ()) { self = .null }
    public init(arrayLiteral elements: SocketValue...) { self = .array(elements) }
}
