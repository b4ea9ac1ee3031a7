import NIOCore
import SwitchboardCore
import Testing

@testable import SwitchboardGateway

/// Where a recovered socket's rooms resume, on the real in-memory broker, and what a broker answering nonsense (a
/// Redis that lost or mangled its data) makes of it: never a trap, never a loop.
@Suite struct SocketIORecoveryTests {
    /// The in-memory broker over a test node's hub, keeping enough history for the searches below.
    func broker(keeping messages: Int = 1_000) -> InMemoryBroker {
        InMemoryBroker(delivering: TestNode().gateway.hub, history: HistoryLimits(messages: messages, age: .seconds(600)))
    }

    /// A room with `count` messages, the n-th (from 1) sent at `1_000 + 10 n` ms.
    func room(_ name: String, _ count: Int, on broker: InMemoryBroker) -> RoomID {
        let room = RoomID(name)!
        for n in 1...count { broker.publish(ServerFrames.message(room, message: "m", sender: "u", timestamp: Int64(1_000 + 10 * n))) }
        return room
    }

    @Test func theReplayOfAnotherRoomStartsAtTheFirstMessageFromTheNamedOnesTime() async {
        let broker = self.broker()
        let long = self.room("long", 500, on: broker)
        // 1,000 + 10 n >= 3,005 from n = 201 on: the replay starts after 200, whatever the step back found first.
        #expect(await SocketIORecovery.lastBefore(3_005, in: long, broker: broker) == 200)
        #expect(await SocketIORecovery.lastBefore(0, in: long, broker: broker) == 0)  // everything is newer
        #expect(await SocketIORecovery.lastBefore(99_999, in: long, broker: broker) == 500)  // nothing is
        #expect(await SocketIORecovery.lastBefore(5, in: RoomID("empty")!, broker: broker) == 0)

        let short = self.room("short", 3, on: broker)
        let session = SocketIORecovery.Session(sid: .random(), userId: "u", namespace: "/", rooms: [long, short], heardAt: 0)
        // The client saw long's 201st message (sent at 3,010): long resumes after it, short from 3,010 on (none).
        let points = await SocketIORecovery.resumePoints(session, offset: "201@long", droppedBefore: 0, broker: broker)
        #expect(points.map { "\($0.room)@\($0.after)" } == ["long@201", "short@3"])
        // An offset that names no room of the session: every room from the time the socket was last heard.
        let fallback = await SocketIORecovery.resumePoints(session, offset: "7@elsewhere", droppedBefore: 1_015, broker: broker)
        #expect(fallback.map { "\($0.room)@\($0.after)" } == ["long@1", "short@1"])
    }

    /// What a mangled shared store could answer.
    struct Nonsense: ForwardingBroker {
        let inner: InMemoryBroker
        let last: Int64
        let history: RoomHistory

        func lastOffset(of room: RoomID) async -> Int64 { self.last }
        func history(of room: RoomID, after offset: Int64, limit: Int) async -> RoomHistory { self.history }
    }

    @Test(arguments: [
        (Int64.min, RoomHistory.messages([])), (Int64.max, .lost(oldest: .min)), (Int64.max, .unavailable),
        (500, .messages([HistoryEntry(offset: .min, frame: .text(["timestamp": 1]))])),
        (500, .messages([HistoryEntry(offset: 3, frame: .text(["timestamp": 1]))])),  // never moves forward
    ])
    func nonsenseFromTheBrokerEndsTheSearch(last: Int64, history: RoomHistory) async {
        let broker = Nonsense(inner: self.broker(), last: last, history: history)
        let after = await SocketIORecovery.lastBefore(2, in: RoomID("r")!, broker: broker)
        #expect(after >= 0)
    }
}
