extension StringProtocol {
    /// The text without leading and trailing whitespace (no Foundation needed). Shared by the configuration parsers
    /// and the management API's SigV4 header parsing, so it is visible to the package's targets but not public.
    package func trimmingWhitespace() -> String {
        String(self.drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed())
    }
}
