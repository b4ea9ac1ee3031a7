import SwitchboardCore
import Testing

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
        }
        let broker = InMemoryBroker(delivering: Sink())
        let room = RoomID("big")!
        var last = RoomRoster(userIds: [], count: 0)
        for index in 0..<1000 {
            last = try await broker.join(room, member: RoomMember(connection: .random(), userId: "u\(index)"), listing: 10)
        }
        #expect(last.count == 1000)
        #expect(last.userIds.count == 10)
        #expect(broker.roomCount == 1)
    }
}

@Suite struct HistoryTests {
    final class Sink: LocalDelivery {
        func deliver(_ frame: OutboundFrame, to audience: Audience) {}
        func perform(_ command: ConnectionCommand, on connection: ConnectionID) {}
    }

    let room = RoomID("r")!

    func text(_ frame: OutboundFrame) -> String { String(decoding: frame.bytes, as: UTF8.self) }

    @Test func offsetsIncreaseAndRejoinersGetWhatTheyMissed() async {
        let broker = InMemoryBroker(delivering: Sink(), history: HistoryLimits(messages: 3, age: .seconds(60)))
        #expect(await broker.lastOffset(of: self.room) == 0)
        #expect(await broker.history(of: self.room, after: 0) == .messages([]))
        for n in 1...5 { broker.publish(ServerFrames.message(self.room, message: .number(String(n)), sender: "u", timestamp: 0)) }
        #expect(await broker.lastOffset(of: self.room) == 5)
        guard case .messages(let missed) = await broker.history(of: self.room, after: 3) else {
            Issue.record("expected messages")
            return
        }
        #expect(
            missed.map(self.text) == [4, 5].map { #"{"action":"message","roomId":"r","message":\#($0),"sender":"u","timestamp":0,"offset":\#($0)}"# }
        )
        #expect(await broker.history(of: self.room, after: 5) == .messages([]))
        #expect(await broker.history(of: self.room, after: 1) == .lost(oldest: 3))  // only 3 kept
        #expect(await broker.history(of: self.room, after: 9) == .lost(oldest: 3))  // from before a restart
    }

    @Test func oldMessagesAreLost() async throws {
        let broker = InMemoryBroker(delivering: Sink(), history: HistoryLimits(messages: 10, age: .milliseconds(50)))
        broker.publish(ServerFrames.message(self.room, message: "old", sender: "u", timestamp: 0))
        try await Task.sleep(for: .milliseconds(80))
        #expect(await broker.history(of: self.room, after: 0) == .lost(oldest: 2))
    }
}
