/// `sendMessage` frames that look like a chat client's: a JSON object with ids, a user, and a text of English-like
/// sentences, about `bytes` long in all. The texts come from a fixed seed, so every server gets the same ones, and
/// they differ from message to message (a pool of 256), as real messages do: a compressor that keeps its window
/// sees vocabulary again, not the same message again.
struct ChatPayload: Sendable {
    private let texts: [String]

    init(bytes: Int, pool: Int = 256) {
        let envelope = Self.frame(room: "bench-4294967295-0", sentAt: 1_000_000_000_000, sequence: 1_000_000, text: "").utf8.count
        let length = max(bytes - envelope, 16)
        self.texts = (0..<pool).map { Self.text(seed: UInt64($0), length: length) }
    }

    /// A `sendMessage` to `room` carrying `sentAt` as its `t` (the first key of `message`, where scenarios look).
    func frame(room: String, sentAt: UInt64, sequence: Int) -> String {
        Self.frame(room: room, sentAt: sentAt, sequence: sequence, text: self.texts[sequence % self.texts.count])
    }

    private static func frame(room: String, sentAt: UInt64, sequence: Int, text: String) -> String {
        let mentions = sequence % 3 == 0 ? #"["u\#(sequence % 997)"]"# : "[]"
        return #"{"action":"sendMessage","roomId":"\#(room)","message":{"t":\#(sentAt),"id":"msg-\#(sequence)","#
            + #""user":{"id":"sender","name":"Bench Sender","avatar":"https://example.com/avatars/sender.png"},"#
            + #""text":"\#(text)","mentions":\#(mentions),"client":"switchboard-bench/1.0"}}"#
    }

    /// Sentences of common chat words, exactly `length` bytes of ASCII with nothing to escape in JSON.
    private static func text(seed: UInt64, length: Int) -> String {
        // SplitMix64, each text from a start scrambled out of its seed (consecutive raw seeds would give the same
        // stream shifted by one step).
        func mix(_ value: UInt64) -> UInt64 {
            var z = value
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        var state = mix(seed &+ 0x2545_F491_4F6C_DD1D)
        func next(_ bound: Int) -> Int {
            state &+= 0x9E37_79B9_7F4A_7C15
            return Int(mix(state) % UInt64(bound))
        }
        var text = ""
        while text.utf8.count < length {
            let count = 4 + next(11)
            for index in 0..<count {
                var word = words[next(words.count)]
                if index == 0 { word = word.prefix(1).uppercased() + word.dropFirst() }
                text += word
                text += index == count - 1 ? [". ", "? ", "! ", ", and "][next(4) == 0 ? next(4) : 0] : " "
            }
        }
        return String(text.utf8.prefix(length))!
    }

    private static let words = """
        the a to and of is in it you that for on this we are with be have not can just at so do but if what about \
        all will was from they get there one like time when up out now how know think see make meeting today \
        tomorrow week deploy release build test review branch merge issue fix bug server client room message \
        channel team please thanks sure sounds good great idea update later lunch coffee call after before \
        morning afternoon tonight again still already maybe probably really quick question check link doc \
        notes plan ticket customer data change config latency error logs dashboard metrics alert night shift \
        yesterday Monday Friday weekend everyone anyone someone here back soon done ready waiting looks right \
        wrong better faster slower page team's new old first last next version staging production rollback \
        @alice @bob @carol @dave
        """.split(separator: " ").map(String.init)
}
