import SwitchboardCore

/// The data of the open packet (`0{"sid":…}`): what the client needs to run the session.
///
/// Intervals are whole milliseconds on the wire, so they are kept as milliseconds here.
public struct EngineHandshake: Sendable, Hashable {
    /// The session id the client puts in `?sid=` on every later request.
    public var sid: String
    /// The transports the client may upgrade to: `["websocket"]` on polling, `[]` on a WebSocket.
    public var upgrades: [String]
    public var pingIntervalMilliseconds: Int64
    public var pingTimeoutMilliseconds: Int64
    /// The most bytes a POST body or a WebSocket message from the client may have; the client splits its
    /// payloads to fit.
    public var maxPayload: Int

    public init(sid: String, upgrades: [String], pingIntervalMilliseconds: Int64, pingTimeoutMilliseconds: Int64, maxPayload: Int) {
        self.sid = sid
        self.upgrades = upgrades
        self.pingIntervalMilliseconds = pingIntervalMilliseconds
        self.pingTimeoutMilliseconds = pingTimeoutMilliseconds
        self.maxPayload = maxPayload
    }

    /// The JSON object in the reference server's key order.
    public var json: JSONValue {
        [
            "sid": .string(self.sid),
            "upgrades": .array(self.upgrades.map(JSONValue.string)),
            "pingInterval": .number(String(self.pingIntervalMilliseconds)),
            "pingTimeout": .number(String(self.pingTimeoutMilliseconds)),
            "maxPayload": .number(String(self.maxPayload)),
        ]
    }

    init(json text: ArraySlice<UInt8>) throws(EngineIOError) {
        let value: JSONValue
        do { value = try JSONValue.parse(Array(text)) } catch { throw .invalidHandshake(error.description) }
        guard let object = value.objectValue, let sid = object["sid"]?.stringValue else {
            throw .invalidHandshake("no \"sid\" string")
        }
        guard case .array(let upgrades)? = object["upgrades"] else { throw .invalidHandshake("no \"upgrades\" array") }
        self.sid = sid
        self.upgrades = upgrades.compactMap(\.stringValue)
        self.pingIntervalMilliseconds = try Self.integer(object, "pingInterval")
        self.pingTimeoutMilliseconds = try Self.integer(object, "pingTimeout")
        self.maxPayload = Int(try Self.integer(object, "maxPayload"))
    }

    private static func integer(_ object: JSONObject, _ key: String) throws(EngineIOError) -> Int64 {
        guard case .number(let text)? = object[key], let value = Int64(text), value >= 0 else {
            throw .invalidHandshake("\"\(key)\" is not a non-negative integer")
        }
        return value
    }
}
