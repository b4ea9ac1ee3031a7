import Dispatch
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

    @Test func aStashedValueIsTakenOnceAndExpires() async {
        let clock = TestClock()
        let broker = InMemoryBroker(delivering: Sink(), now: clock.now)
        await broker.stash([1, 2], under: "k", for: .seconds(10))
        await broker.stash([3], under: "k", for: .seconds(10))  // replaces
        #expect(await broker.takeStashed("k") == [3])
        #expect(await broker.takeStashed("k") == nil)  // once
        await broker.stash([4], under: "old", for: .seconds(10))
        clock.advance(by: .seconds(11))
        #expect(await broker.takeStashed("old") == nil)
    }

    /// A client cannot grow the stash past its bounds: the oldest entries go first.
    @Test func theStashIsBounded() async {
        let broker = InMemoryBroker(delivering: Sink())
        let bound = InMemoryBroker.maximumStashed
        let value = [UInt8](repeating: 0, count: 1024)
        for index in 0..<(bound.bytes / value.count + 10) { await broker.stash(value, under: "k\(index)", for: .seconds(60)) }
        #expect(await broker.takeStashed("k0") == nil)
        #expect(await broker.takeStashed("k\(bound.bytes / value.count + 9)") == value)
        #expect(await broker.takeStashed("big") == nil)
        await broker.stash([UInt8](repeating: 0, count: bound.bytes + 1), under: "big", for: .seconds(60))
        #expect(await broker.takeStashed("big") == nil)
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

/// The in-memory broker split into stripes: rooms and connections in different stripes do not wait on each other,
/// and what the node guarantees as a whole (offset order, the byte budget, the room count, listings) still holds.
///
/// Nothing here measures time, so nothing can flake on a slow or busy machine: independence is checked by
/// construction (one room's delivery waits for another's), order by recording what is delivered.
@Suite struct StripedBrokerTests {
    /// Which stripe a key is in (the broker uses the default count).
    let stripes = Striped(())

    /// `count` rooms with ids of one length, each in a stripe of its own.
    func rooms(_ count: Int) -> [RoomID] {
        var rooms: [RoomID] = []
        var taken = Set<Int>()
        for number in 100...999 where rooms.count < count {
            let room = RoomID("r\(number)")!
            if taken.insert(self.stripes.index(of: room.rawValue)).inserted { rooms.append(room) }
        }
        return rooms
    }

    func message(_ room: RoomID, _ text: String = "m") -> RoomMessage {
        ServerFrames.message(room, message: .string(text), sender: "u", timestamp: 0)
    }

    /// Each room's offsets in the order delivered; notices two deliveries to one room at once.
    final class Recorder: LocalDelivery {
        let delivered = Mutex<[RoomID: [Int64]]>([:])
        let delivering = Mutex<Set<RoomID>>([])
        let overlapped = Atomic(false)

        func deliver(_ frame: OutboundFrame, to audience: Audience) {
            guard case .room(let room, _) = audience else { return }
            if !self.delivering.withLock({ $0.insert(room).inserted }) { self.overlapped.store(true, ordering: .relaxed) }
            let offset = Int64(String(decoding: frame.bytes, as: UTF8.self).split(separator: ":").last!.dropLast())!
            self.delivered.withLock { $0[room, default: []].append(offset) }
            self.delivering.withLock { _ = $0.remove(room) }
        }

        func perform(_ command: ConnectionCommand, on connection: ConnectionID) {}
    }

    final class Sink: LocalDelivery {
        func deliver(_ frame: OutboundFrame, to audience: Audience) {}
        func perform(_ command: ConnectionCommand, on connection: ConnectionID) {}
    }

    @Test func roomsInDifferentStripesPublishConcurrentlyEachInOffsetOrder() async {
        let recorder = Recorder()
        let broker = InMemoryBroker(delivering: recorder, history: HistoryLimits(messages: 10, age: .seconds(60)))
        let rooms = self.rooms(2)
        await withTaskGroup { group in
            for _ in 0..<8 {
                group.addTask {
                    for _ in 0..<500 {
                        for room in rooms { broker.publish(self.message(room)) }
                    }
                }
            }
        }
        for room in rooms {
            let offsets = recorder.delivered.withLock { $0[room] ?? [] }
            #expect(offsets.count == 4000)
            #expect(offsets.indices.first { offsets[$0] != $0 + 1 } == nil, "the first offset delivered out of order")
            #expect(await broker.lastOffset(of: room) == 4000)
            guard case .messages(let kept) = await broker.history(of: room, after: 3990, limit: 100) else {
                Issue.record("the last 10 are kept")
                continue
            }
            #expect(kept.map(\.offset) == Array(3991...4000))
        }
        let overlapped = recorder.overlapped.load(ordering: .relaxed)
        #expect(!overlapped)
    }

    /// A publish waiting in its delivery holds its own room's stripe and nothing else.
    @Test func aRoomWaitingInDeliveryDoesNotHoldUpAnotherStripe() {
        final class Gate: LocalDelivery {
            let waiting: RoomID
            let entered = DispatchSemaphore(value: 0)
            let otherDelivered = DispatchSemaphore(value: 0)
            let sawOther = Atomic(false)

            init(waiting: RoomID) { self.waiting = waiting }

            func deliver(_ frame: OutboundFrame, to audience: Audience) {
                guard case .room(let room, _) = audience else { return }
                guard room == self.waiting else {
                    self.otherDelivered.signal()
                    return
                }
                self.entered.signal()
                // The timeout only ends the test when it fails: with one lock for the node, the other room's publish
                // would wait for this delivery, which waits for it.
                self.sawOther.store(self.otherDelivered.wait(timeout: .now() + 10) == .success, ordering: .relaxed)
            }

            func perform(_ command: ConnectionCommand, on connection: ConnectionID) {}
        }
        let rooms = self.rooms(2)
        let gate = Gate(waiting: rooms[0])
        let broker = InMemoryBroker(delivering: gate)
        let done = DispatchSemaphore(value: 0)
        let first = self.message(rooms[0])
        DispatchQueue.global().async {
            broker.publish(first)
            done.signal()
        }
        gate.entered.wait()
        broker.publish(self.message(rooms[1]))
        done.wait()
        let sawOther = gate.sawOther.load(ordering: .relaxed)
        #expect(sawOther)
    }

    /// The byte budget is the node's, not a stripe's: the oldest message goes first, whichever room it is in.
    @Test func theByteBudgetEvictsOldestFirstAcrossStripes() async {
        let rooms = self.rooms(2)
        let size = self.message(rooms[0]).frame(offset: 1).bytes.count
        let broker = InMemoryBroker(delivering: Sink(), history: HistoryLimits(messages: 100, age: .seconds(60), totalBytes: 3 * size))
        for room in [rooms[0], rooms[1], rooms[0], rooms[1]] { broker.publish(self.message(room)) }
        #expect(broker.historyBytes == 3 * size)
        #expect(await broker.history(of: rooms[0], after: 0, limit: 10) == .lost(oldest: 2))
        #expect(await self.offsets(broker, rooms[1], after: 0) == [1, 2])
        broker.publish(self.message(rooms[0]))
        #expect(broker.historyBytes == 3 * size)
        #expect(await self.offsets(broker, rooms[0], after: 1) == [2, 3])
        #expect(await broker.history(of: rooms[1], after: 0, limit: 10) == .lost(oldest: 2))
        #expect(await self.offsets(broker, rooms[1], after: 1) == [2])
        // One message that takes the place of all three: rooms[0] loses both of its own at once.
        let big = self.message(rooms[1], String(repeating: "x", count: 2 * size))
        broker.publish(big)
        #expect(broker.historyBytes == big.frame(offset: 3).bytes.count)
        #expect(await broker.lastOffset(of: rooms[0]) == 0)  // nothing kept and no members: forgotten
        #expect(await self.offsets(broker, rooms[1], after: 2) == [3])
    }

    func offsets(_ broker: InMemoryBroker, _ room: RoomID, after offset: Int64) async -> [Int64]? {
        guard case .messages(let kept) = await broker.history(of: room, after: offset, limit: 100) else { return nil }
        return kept.map(\.offset)
    }

    @Test func theRoomCountFollowsJoinsAndLeavesAcrossStripes() async throws {
        let rooms = (0..<200).map { RoomID("room\($0)")! }
        #expect(Set(rooms.map { self.stripes.index(of: $0.rawValue) }).count > 32)
        let broker = InMemoryBroker(delivering: Sink())
        let members = [RoomMember(connection: .random(), userId: "a"), RoomMember(connection: .random(), userId: "b")]
        try await withThrowingTaskGroup { group in
            for member in members {
                group.addTask { for room in rooms { _ = try await broker.join(room, member: member, listing: 1) } }
            }
            try await group.waitForAll()
        }
        #expect(broker.localRoomCount == 200)
        for _ in 0..<2 {
            for room in rooms { await broker.leave(room, member: members[1]) }  // the second time, not a member
        }
        #expect(broker.localRoomCount == 200)
        for room in rooms.prefix(100) { await broker.leave(room, member: members[0]) }
        #expect(broker.localRoomCount == 100)
        for room in rooms + [RoomID("elsewhere")!] { await broker.leave(room, member: members[0]) }
        #expect(broker.localRoomCount == 0)
        _ = try await broker.join(rooms[0], member: members[1], listing: 1)
        #expect(broker.localRoomCount == 1)
    }

    /// Every page of a listing, following its cursors; checks each cursor is the key of its page's last item.
    func pages<Item>(key: (Item) -> String, _ page: (String?) async -> Page<Item>) async -> [[Item]] {
        var pages: [[Item]] = []
        var cursor: String?
        repeat {
            let next = await page(cursor)
            pages.append(next.items)
            #expect(next.next == nil || next.next == next.items.last.map(key))
            cursor = next.next
        } while cursor != nil && pages.count < 1000
        return pages
    }

    @Test func listingsPageOverAllStripesInKeyOrder() async throws {
        let broker = InMemoryBroker(delivering: Sink())
        var ids: [ConnectionID] = []
        for index in 0..<300 {
            let id = ConnectionID.random()
            ids.append(id)
            try await broker.register(ConnectionInfo(id: id, userId: "u\(index)", connectedAt: 0, sourceIp: "", userAgent: "", stage: nil))
            _ = try await broker.join(RoomID("room\(index % 50)")!, member: RoomMember(connection: id, userId: "u\(index)"), listing: 1)
        }
        let connections = await self.pages(key: \.info.id.rawValue) { await broker.connections(after: $0, limit: 7) }
        #expect(connections.map(\.count) == Array(repeating: 7, count: 42) + [6])
        #expect(connections.joined().map(\.info.id.rawValue) == ids.map(\.rawValue).sorted())
        #expect(await broker.connection(ids[7])?.rooms == [RoomID("room7")!])

        let rooms = await self.pages(key: \.room.rawValue) { await broker.rooms(after: $0, limit: 7) }
        #expect(rooms.joined().map { "\($0.room)=\($0.members)" } == (0..<50).map { "room\($0)" }.sorted().map { "\($0)=6" })

        let members = await self.pages(key: \.connection.rawValue) { await broker.members(of: RoomID("room3")!, after: $0, limit: 4) }
        #expect(members.map(\.count) == [4, 2])
        #expect(members.joined().map(\.connection.rawValue) == stride(from: 3, to: 300, by: 50).map { ids[$0].rawValue }.sorted())
    }

    /// When the rest of a listing is all in one stripe, that stripe alone tells whether another page follows.
    @Test func aListingWhoseRestIsInOneStripeStillSaysMoreFollow() async throws {
        let broker = InMemoryBroker(delivering: Sink())
        let stripe = self.stripes.index(of: "r100")
        let rooms = (100...9999).lazy.map { RoomID("r\($0)")! }.filter { self.stripes.index(of: $0.rawValue) == stripe }.prefix(5).map(\.self)
        for room in rooms { _ = try await broker.join(room, member: RoomMember(connection: .random(), userId: "u"), listing: 1) }
        let pages = await self.pages(key: \.room.rawValue) { await broker.rooms(after: $0, limit: 4) }
        let sorted = rooms.map(\.rawValue).sorted()
        #expect(pages.map { $0.map(\.room.rawValue) } == [Array(sorted.prefix(4)), [sorted.last!]])
    }
}

/// A clock tests move by hand.
final class TestClock: Sendable {
    private let instant = Mutex(ContinuousClock.now)
    var now: @Sendable () -> ContinuousClock.Instant { { self.instant.withLock { $0 } } }
    func advance(by duration: Duration) { self.instant.withLock { $0 += duration } }
}

/// The queries a broker forwards to its node's connections, answered as by a node without any: these tests' sinks
/// only record deliveries.
extension LocalDelivery {
    func deliverDirect(_ frame: OutboundFrame, to connection: ConnectionID) async -> DirectDelivery { .notHere }
    func count(_ audience: Audience) async -> Int { 0 }
    func lastActive(_ ids: [ConnectionID]) async -> [ConnectionID: Int64] { [:] }
}
