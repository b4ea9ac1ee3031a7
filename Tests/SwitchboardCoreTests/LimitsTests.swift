import SwitchboardCore
import Testing

@Suite struct LimitsTests {
    @Test func bucketAllowsBurstThenRate() {
        var bucket = TokenBucket(rate: 2, burst: 3, now: 0)
        var taken: [Bool] = []
        for now in [0, 0, 0, 0, 0.4, 0.5, 0.5, 100, 100, 100, 100] { taken.append(bucket.take(now: now)) }
        // Three from the burst, then one every half second; a long pause refills to the burst, not beyond.
        #expect(taken == [true, true, true, false, false, true, false, true, true, true, false])
    }

    @Test(arguments: [
        ("chat:*", "chat:lobby", true), ("chat:*", "chats:lobby", false), ("*", "anything", true), ("team-*-ops", "team-a-ops", true),
        ("team-*-ops", "team-a-dev", false), ("lobby", "lobby", true), ("lobby", "lobby2", false), ("a*b*c", "aXbYc", true), ("a*b*c", "aXbY", false),
    ])
    func globs(_ pattern: String, _ text: String, _ expected: Bool) {
        #expect(Glob.matches(pattern, text) == expected)
    }
}
