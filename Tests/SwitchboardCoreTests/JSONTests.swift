import SwitchboardCore
import Testing

@Suite struct JSONTests {
    @Test func parsesAndWritesBackTheSameText() throws {
        let text = #"{"action":"sendMessage","n":12345678901234567890,"f":-1.5e3,"a":[true,false,null],"s":"é\n\"x\""}"#
        let value = try JSONValue.parse(text)
        #expect(value.jsonString == text)
        #expect(value.objectValue?["n"] == .number("12345678901234567890"))
    }

    @Test func decodesEscapesAndSurrogatePairs() throws {
        let value = try JSONValue.parse(#""a\u00e9\ud83d\ude00\t\/""#)
        #expect(value == .string("aé😀\t/"))
        #expect(try JSONValue.parse(#""\ud800""#) == .string("\u{FFFD}"))
    }

    @Test(arguments: [
        "", "{", "[1,]", "{\"a\" 1}", "01", "1.", "-", "tru", "\"\u{01}\"", "\"abc", "{\"a\":1} x", "[1 2]", "\"\\x\"", "\"\\u12\"",
    ])
    func rejectsMalformedInput(_ text: String) {
        #expect(throws: JSONParseError.self) { try JSONValue.parse(text) }
    }

    @Test func boundsNestingDepth() throws {
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        #expect(throws: JSONParseError.self) { try JSONValue.parse(deep) }
        let fine = String(repeating: "[", count: 60) + String(repeating: "]", count: 60)
        #expect(throws: Never.self) { try JSONValue.parse(fine) }
    }

    @Test func duplicateKeysResolveToTheLastLikeJavaScript() throws {
        #expect(try JSONValue.parse(#"{"a":1,"a":2}"#).objectValue?["a"] == .number("2"))
    }

    @Test func escapesControlCharactersWhenWriting() {
        #expect(JSONValue.string("a\u{01}\"\\").jsonString == #""a\u0001\"\\""#)
    }
}
