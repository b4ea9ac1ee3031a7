import Synchronization
import Testing

@testable import SwitchboardCore

@Suite struct ModelTests {
    @Test func connectionIDsLookLikeAPIGatewaysAndDiffer() {
        var ids = Set<ConnectionID>()
        for _ in 0..<10_000 {
            let id = ConnectionID.random()
            #expect(id.rawValue.utf8.count == 16)
            #expect(id.rawValue.hasSuffix("="))
            #expect(ConnectionID(id.rawValue) == id)
            ids.insert(id)
        }
        #expect(ids.count == 10_000)
    }

    @Test func connectionIDsRejectUnsafeText() {
        #expect(ConnectionID("") == nil)
        #expect(ConnectionID("a b") == nil)
        #expect(ConnectionID("../etc") == nil)
        #expect(ConnectionID(String(repeating: "a", count: 129)) == nil)
    }

    @Test func namesUseAFixedCharacterSet() {
        #expect(Name.problem(with: "room-1_a.b:c@d", field: "roomId") == nil)
        #expect(Name.problem(with: "", field: "roomId") == "roomId must not be empty")
        #expect(Name.problem(with: "room\n1", field: "roomId") != nil)
        #expect(Name.problem(with: "room*", field: "roomId") != nil)
        #expect(Name.problem(with: "é", field: "userId") != nil)
    }

    @Test func inMemoryBrokerRostersAreCappedWithTheTotal() async throws {
        final class Sink: LocalDelivery {
            func deliver(_ frame: OutboundFrame, to audience: Audience) {}
            func perform(_ command: ConnectionCommand, on connection: ConnectionID) {}
            func deliverDirect(_ frame: OutboundFrame, to connection: ConnectionID) async -> DirectDelivery { .notHere }
            func count(_ audience: Audience) async -> Int { 0 }
            func lastActive(_ ids: [ConnectionID]) async -> [ConnectionID: Int64] { [:] }
        }
        let broker = InMemoryBroker(delivering: Sink())
        let room = RoomID("big")!
        var last = RoomRoster(userIds: [], count: 0)
        for index in 0..<1000 {
            last = try await broker.join(room, member: RoomMember(connection: .random(), userId: "u\(index)"), listing: 10)
        }
        #expect(last.count == 1000)
        #expect(last.userIds.count == 10)
        #expect(broker.localRoomCount == 1)
    }
}

@Suite struct HistoryTests {
    final class Sink: LocalDelivery {
        func deliver(_ frame: OutboundFrame, to audience: Audience) {}
        func perform(_ command: ConnectionCommand, on connection: ConnectionID) {}
        func deliverDirect(_ frame: OutboundFrame, to connection: ConnectionID) async -> DirectDelivery { .notHere }
        func count(_ audience: Audience) async -> Int { 0 }
        func lastActive(_ ids: [ConnectionID]) async -> [ConnectionID: Int64] { [:] }
    }

    let room = RoomID("r")!

    func text(_ frame: OutboundFrame) -> String { String(decoding: frame.bytes, as: UTF8.self) }

    @Test func offsetsIncreaseAndRejoinersGetWhatTheyMissed() async {
        let broker = InMemoryBroker(delivering: Sink(), history: HistoryLimits(messages: 3, age: .seconds(60)))
        #expect(await broker.lastOffset(of: self.room) == 0)
        #expect(await broker.history(of: self.room, after: 0, limit: 100) == .messages([]))
        for n in 1...5 { broker.publish(ServerFrames.message(self.room, message: .number(String(n)), sender: "u", timestamp: 0)) }
        #expect(await broker.lastOffset(of: self.room) == 5)
        guard case .messages(let missed) = await broker.history(of: self.room, after: 3, limit: 100) else {
            Issue.record("expected messages")
            return
        }
        #expect(
            missed.map { self.text($0.frame) }
                == [4, 5].map { #"{"action":"message","roomId":"r","message":\#($0),"sender":"u","timestamp":0,"offset":\#($0)}"# }
        )
        #expect(await broker.history(of: self.room, after: 5, limit: 100) == .messages([]))
        #expect(await broker.history(of: self.room, after: 1, limit: 100) == .lost(oldest: 3))  // only 3 kept
        #expect(await broker.history(of: self.room, after: 9, limit: 100) == .lost(oldest: 3))  // from before a restart
    }

    @Test func oldMessagesAreLostEvenInARoomNobodyRejoins() async throws {
        let clock = TestClock()
        let broker = InMemoryBroker(delivering: Sink(), history: HistoryLimits(messages: 10, age: .seconds(60)), now: clock.now)
        let member = RoomMember(connection: .random(), userId: "u")
        _ = try await broker.join(self.room, member: member, listing: 1)
        broker.publish(ServerFrames.message(self.room, message: "old", sender: "u", timestamp: 0))
        clock.advance(by: .seconds(61))
        broker.pruneHistory()  // what `run()` does every second
        #expect(broker.historyBytes == 0)
        #expect(await broker.history(of: self.room, after: 0, limit: 100) == .lost(oldest: 2))
        // Once the room is empty and its history gone, it is forgotten, counter included.
        await broker.leave(self.room, member: member)
        #expect(await broker.lastOffset(of: self.room) == 0)
    }

    /// One client filling many rooms cannot grow memory past `totalBytes`: the oldest messages go first, whatever
    /// room they are in, and an empty room's history is forgotten.
    @Test func historyOfAllRoomsIsBoundedInBytes() async {
        let broker = InMemoryBroker(delivering: Sink(), history: HistoryLimits(messages: 100, age: .seconds(60), totalBytes: 100_000))
        let payload = JSONValue.string(String(repeating: "x", count: 1000))
        for index in 0..<300 {
            for _ in 0..<10 { broker.publish(ServerFrames.message(RoomID("room\(index)")!, message: payload, sender: "u", timestamp: 0)) }
        }
        #expect(broker.historyBytes <= 100_000)
        #expect(broker.historyBytes > 90_000)
        #expect(await broker.history(of: RoomID("room0")!, after: 0, limit: 100) == .messages([]))  // forgotten
        guard case .messages(let kept) = await broker.history(of: RoomID("room299")!, after: 0, limit: 100) else {
            Issue.record("the newest room keeps its messages")
            return
        }
        #expect(kept.map(\.offset) == Array(1...10))
    }

    /// A message too large to keep breaks the run of kept offsets: a rejoin across it hears historyLost, and a
    /// rejoin after it reads what follows (it used to index past the ring and trap).
    @Test func aMessageTooLargeToKeepIsLostNotSkipped() async {
        let broker = InMemoryBroker(delivering: Sink(), history: HistoryLimits(messages: 100, age: .seconds(60), totalBytes: 2000))
        let huge = JSONValue.string(String(repeating: "x", count: 3000))
        for message in ["1", "2", "3", huge, huge, "6"] as [JSONValue] {
            broker.publish(ServerFrames.message(self.room, message: message, sender: "u", timestamp: 0))
        }
        guard case .messages(let after5) = await broker.history(of: self.room, after: 5, limit: 100) else {
            Issue.record("messages after the gap are kept")
            return
        }
        #expect(after5.map(\.offset) == [6])
        #expect(await broker.history(of: self.room, after: 3, limit: 100) == .lost(oldest: 6))
        #expect(await broker.history(of: self.room, after: 1, limit: 100) == .lost(oldest: 6))
    }

    @Test func historyIsReadInPages() async {
        let broker = InMemoryBroker(delivering: Sink(), history: HistoryLimits(messages: 100, age: .seconds(60)))
        for n in 1...25 { broker.publish(ServerFrames.message(self.room, message: .number(String(n)), sender: "u", timestamp: 0)) }
        var after: Int64 = 0
        var pages: [[Int64]] = []
        while case .messages(let page) = await broker.history(of: self.room, after: after, limit: 10), let last = page.last {
            pages.append(page.map(\.offset))
            after = last.offset
        }
        #expect(pages == [Array(1...10), Array(11...20), Array(21...25)])
        #expect(await broker.history(of: self.room, after: .max, limit: 10) == .lost(oldest: 1))
    }
}

/// A clock tests move by hand.
final class TestClock: Sendable {
    private let instant = Mutex(ContinuousClock.now)
    var now: @Sendable () -> ContinuousClock.Instant { { self.instant.withLock { $0 } } }
    func advance(by duration: Duration) { self.instant.withLock { $0 += duration } }
}
