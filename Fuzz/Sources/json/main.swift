import FuzzDriver
import SwitchboardCore

/// SwitchboardCore's JSON parser on arbitrary bytes. Nothing may trap, and a parsed value must survive a round trip:
/// its serialisation parses back to an equal value, which serialises to the same bytes.
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let value = try? JSONValue.parse(bytes) else { return 0 }
    let written = value.jsonBytes
    let reparsed: JSONValue
    do {
        reparsed = try JSONValue.parse(written)
    } catch {
        fatalError("the serialisation of a parsed value does not parse (\(error)): \(value.jsonString)")
    }
    precondition(reparsed == value, "round trip changed the value: \(value) became \(reparsed)")
    precondition(reparsed.jsonBytes == written, "round trip changed the serialisation")
    precondition(written.count <= 6 * bytes.count + 2, "serialisation is \(written.count) bytes for \(bytes.count) of input")
    return 0
}

switchboard_fuzz_run(CommandLine.argc, CommandLine.unsafeArgv, fuzzOne)
