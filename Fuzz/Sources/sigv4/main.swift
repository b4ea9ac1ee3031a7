import FuzzDriver

@testable import SwitchboardGateway

/// SigV4 verification of a management request read from the fuzz bytes, plus the canonicalisation helpers on the raw
/// bytes. Nothing may trap; a request that verifies must stop verifying when its body or method changes; and
/// percent-decoding undoes SigV4's URI encoding.
///
/// Input: lines `METHOD`, `URI`, then `Name: value` headers, an empty line, and the body (as in HTTP/1).
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data else { return 0 }
    let input = Array(UnsafeBufferPointer(start: data, count: size))

    let request = parse(input)
    for verifier in verifiers {
        for now in [signedAt, signedAt + 299, signedAt - 301, Int64.max, Int64.min] {
            guard verifier.problem(with: request, nowEpochSeconds: now) == nil else { continue }
            var tampered = request
            tampered.body.append(0x20)
            precondition(verifier.problem(with: tampered, nowEpochSeconds: now) != nil, "a signature survived a change of body")
            tampered = request
            tampered.method = request.method == "GET" ? "POST" : "GET"
            precondition(verifier.problem(with: tampered, nowEpochSeconds: now) != nil, "a signature survived a change of method")
        }
    }

    let text = String(decoding: input, as: UTF8.self)
    _ = SigV4Verifier.canonicalQueries(text)
    _ = SigV4Verifier.epochSeconds(text)
    _ = SigV4Verifier.splitURI(text)
    _ = SigV4Verifier.trimHeaderValue(text)
    _ = SigV4Verifier.payloadHash(declared: text, body: input)
    let encoded = SigV4Verifier.uriEncode(bytes: input, keepSlash: input.first.map { $0 & 1 == 0 } ?? false)
    precondition(SigV4Verifier.percentDecode(encoded.utf8) == input, "percentDecode(uriEncode(x)) != x")
    if let decoded = SigV4Verifier.percentDecode(input) {
        precondition(decoded.count <= input.count, "percent-decoding grew the input")
    }
    return 0
}

/// AWS's published SigV4 test suite key (`get-vanilla` and friends), for the `service` and `execute-api` scopes.
let verifiers = [
    SigV4Verifier(keys: ["AKIDEXAMPLE": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"], maxClockSkewSeconds: 300, service: "service"),
    SigV4Verifier(keys: ["AKIDEXAMPLE": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"], maxClockSkewSeconds: 300),
]
/// 2015-08-30T12:36:00Z, the test suite's signing time.
let signedAt: Int64 = 1_440_938_160

func parse(_ input: [UInt8]) -> SigV4Verifier.Request {
    let newline = UInt8(ascii: "\n")
    var lines: [String] = []
    var index = input.startIndex
    var body: [UInt8] = []
    while index < input.endIndex {
        let end = input[index...].firstIndex(of: newline) ?? input.endIndex
        if end == index, lines.count >= 2 {
            body = Array(input[min(end + 1, input.endIndex)...])
            break
        }
        lines.append(String(decoding: input[index..<end], as: UTF8.self))
        index = min(end + 1, input.endIndex)
    }
    var headers: [(name: String, value: String)] = []
    for line in lines.dropFirst(2) {
        let colon = line.firstIndex(of: ":") ?? line.endIndex
        let value = line[colon...].dropFirst().drop { $0 == " " }
        headers.append((String(line[..<colon]), String(value)))
    }
    return SigV4Verifier.Request(
        method: lines.first ?? "",
        uri: lines.count > 1 ? lines[1] : "",
        headers: headers,
        body: body
    )
}

switchboard_fuzz_run(CommandLine.argc, CommandLine.unsafeArgv, fuzzOne)
