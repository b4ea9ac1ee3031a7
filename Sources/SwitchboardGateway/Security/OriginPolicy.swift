import Foundation

/// Which browser origins may open a WebSocket. Browsers send `Origin`; other clients usually do not, and are not
/// refused for it (an origin check protects browsers' users from other sites, not the gateway from scripts).
enum OriginPolicy {
    /// `allowed` empty: any origin. Entries are exact (`https://app.example.com`) or wildcard subdomains
    /// (`https://*.example.com`, which does not match `https://example.com` itself).
    static func allows(_ origin: String, _ allowed: [String]) -> Bool {
        guard !allowed.isEmpty else { return true }
        let origin = origin.lowercased()
        return allowed.contains { entry in
            let entry = entry.lowercased()
            guard let star = entry.range(of: "://*.") else { return origin == entry }
            let scheme = entry[..<star.lowerBound]
            let suffix = "." + entry[star.upperBound...]
            guard origin.hasPrefix(scheme + "://") else { return false }
            let host = origin.dropFirst(scheme.count + 3)
            return host.hasSuffix(suffix) && host.count > suffix.count && !host.dropLast(suffix.count).contains("/")
        }
    }

    /// Three base64url segments separated by dots: a JWS compact token, as browsers pass it in a subprotocol.
    static func looksLikeJWT(_ text: String) -> Bool {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 3 && parts[0].count > 4 && parts.allSatisfy { $0.allSatisfy { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" } }
    }
}
