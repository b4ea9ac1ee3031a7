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
