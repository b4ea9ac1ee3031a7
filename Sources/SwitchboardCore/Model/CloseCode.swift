/// The WebSocket close codes the gateway sends or records (RFC 6455 §7.4), named for why it uses them.
public enum CloseCode {
    public static let normal: UInt16 = 1000
    /// Server draining or an idle connection let go: the client should reconnect, perhaps elsewhere.
    public static let goingAway: UInt16 = 1001
    public static let protocolError: UInt16 = 1002
    /// A binary frame where the configuration accepts text only.
    public static let unsupportedData: UInt16 = 1003
    /// Recorded for `$disconnect` when the peer sent a close frame without a code.
    public static let noStatus: UInt16 = 1005
    /// Recorded for `$disconnect` when the connection ended without a close handshake.
    public static let abnormal: UInt16 = 1006
    public static let invalidPayload: UInt16 = 1007
    public static let policyViolation: UInt16 = 1008
    public static let messageTooBig: UInt16 = 1009
    public static let internalError: UInt16 = 1011
    /// The server is restarting or lost the connection's state: reconnect (RFC 6455 registry).
    public static let serviceRestart: UInt16 = 1012
    public static let tryAgainLater: UInt16 = 1013

    /// Whether a peer may send `code` in a close frame (RFC 6455 §7.4.1–2): 1000–1003, 1007–1014, 3000–4999.
    public static func isValidOnWire(_ code: UInt16) -> Bool {
        switch code {
        case 1000...1003, 1007...1014, 3000...4999: true
        default: false
        }
    }
}
