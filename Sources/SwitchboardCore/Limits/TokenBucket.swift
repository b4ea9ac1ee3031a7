/// API Gateway's throttling model: a bucket of `burst` tokens refilled at `rate` per second; a request takes one or is
/// refused. A value type over injected time (seconds on any monotonic scale), so tests need no clock.
public struct TokenBucket: Sendable, Hashable {
    public let rate: Double
    public let burst: Double
    private var tokens: Double
    private var updatedAt: Double

    /// A `burst` of 0 (or less) means one second's worth of `rate`.
    public init(rate: Double, burst: Int, now: Double) {
        self.rate = rate
        self.burst = Double(burst > 0 ? burst : max(1, Int(rate.rounded(.up))))
        self.tokens = self.burst
        self.updatedAt = now
    }

    /// Takes a token if there is one.
    public mutating func take(now: Double) -> Bool {
        self.tokens = min(self.burst, self.tokens + max(0, now - self.updatedAt) * self.rate)
        self.updatedAt = now
        guard self.tokens >= 1 else { return false }
        self.tokens -= 1
        return true
    }
}

/// Glob patterns for room names in token claims: `*` matches any run of characters (`chat:*`, `team-*-ops`, `*`).
public enum Glob {
    public static func matches(_ pattern: some StringProtocol, _ text: some StringProtocol) -> Bool {
        let pattern = Array(pattern.utf8)
        let text = Array(text.utf8)
        var (p, t) = (0, 0)
        var (star, mark) = (-1, 0)
        while t < text.count {
            if p < pattern.count, pattern[p] == text[t] {
                p += 1
                t += 1
            } else if p < pattern.count, pattern[p] == UInt8(ascii: "*") {
                star = p
                mark = t
                p += 1
            } else if star >= 0 {
                p = star + 1
                mark += 1
                t = mark
            } else {
                return false
            }
        }
        while p < pattern.count, pattern[p] == UInt8(ascii: "*") { p += 1 }
        return p == pattern.count
    }
}
