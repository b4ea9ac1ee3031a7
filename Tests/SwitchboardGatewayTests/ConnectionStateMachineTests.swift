import NIOCore
import SwitchboardConfiguration
import SwitchboardCore
import SwitchboardWebSocket
import Testing

@testable import SwitchboardGateway

/// Every transition of ``ConnectionStateMachine``, with plain values for time.
@Suite struct ConnectionStateMachineTests {
    typealias Machine = ConnectionStateMachine
    let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
    let room = RoomID("lobby")!

    func machine(
        maxRooms: Int = 2,
        abuseCloseAfter: Int = 3,
        idle: TimeAmount? = nil,
        rate: TokenBucket? = nil,
        expiresAt: Int64? = nil
    ) -> Machine {
        var machine = Machine(
            rules: .init(
                maxRooms: maxRooms,
                outboundQueueBytes: 100,
                closeTimeout: .seconds(5),
                abuseCloseAfter: abuseCloseAfter,
                expiredCloseCode: 4001,
                slowConsumerCloseCode: 1008,
                pongTimeout: .seconds(60)
            ),
            liveness: Liveness(pingInterval: .seconds(25), pongTimeout: .seconds(60), idleTimeout: idle, now: self.start),
            rateBucket: rate,
            expiresAt: expiresAt,
            connectedAt: 0
        )
        #expect(machine.started(channelActive: true) == .none)
        return machine
    }

    func message(_ text: String) -> Machine.Work { .message(ByteBuffer(string: text), isText: true) }

    // MARK: Lifecycle

    @Test func aChannelGoneBeforeTheHandlerDisconnectsAtOnceWith1006() {
        var machine = Machine(
            rules: self.machine().rules,
            liveness: Liveness(pingInterval: .seconds(1), pongTimeout: .seconds(2), idleTimeout: nil, now: self.start),
            rateBucket: nil,
            expiresAt: nil,
            connectedAt: 0
        )
        #expect(machine.started(channelActive: false) == .disconnect(.init(code: 1006, reason: "connection lost")))
        #expect(machine.channelClosed() == .none)
    }

    @Test func disconnectRunsExactlyOnceWithTheFirstStatus() {
        var machine = self.machine()
        #expect(machine.closeRequested(.init(code: 4000, reason: "kicked")) == .close(.init(code: 4000, reason: "kicked")))
        #expect(machine.closeRequested(.init(code: 1001, reason: "again")) == .none)
        machine.protocolEnded(.init(code: 1000, reason: "peer"))
        #expect(machine.channelClosed() == .disconnect(.init(code: 4000, reason: "kicked")))
        #expect(machine.channelClosed() == .none)
        #expect(machine.failed("late") == .none)
        #expect(machine.closeTimerFired() == .none)
        #expect(machine.tick(now: self.start + .seconds(100), wallClock: 0) == .none)
    }

    @Test func thePeersCloseStatusIsReportedWhenItClosedFirst() {
        var machine = self.machine()
        machine.protocolEnded(.init(code: 1000, reason: "bye"))
        #expect(machine.received(ByteBuffer(string: "late"), isText: true, now: self.start) == .none)
        #expect(machine.channelClosed() == .disconnect(.init(code: 1000, reason: "bye")))
    }

    @Test func aProtocolErrorCloseIsDroppedAfterTheCloseTimeout() {
        var machine = self.machine()
        machine.closeStarted(.init(code: 1002, reason: "bad"))
        #expect(machine.tick(now: self.start + .seconds(100), wallClock: 0) == .none)
        #expect(machine.closeTimerFired() == .drop)
        #expect(machine.channelClosed() == .disconnect(.init(code: 1002, reason: "bad")))
    }

    @Test func anErrorBelowTheProtocolDropsWith1006() {
        var machine = self.machine()
        #expect(machine.failed("reset") == .drop)
        #expect(machine.channelClosed() == .disconnect(.init(code: 1006, reason: "reset")))
    }

    @Test func aSlowConsumerIsClosedNowOnce() {
        var machine = self.machine()
        let status = Machine.CloseStatus(code: 1008, reason: "slow consumer: over 100 bytes queued")
        #expect(machine.writabilityLost() == .closeNow(status))
        #expect(machine.writabilityLost() == .none)
        #expect(machine.channelClosed() == .disconnect(status))
    }

    // MARK: Liveness

    @Test func pingsThenDropsASilentPeer() {
        var machine = self.machine()
        #expect(machine.tick(now: self.start + .seconds(25), wallClock: 0) == .sendPing)
        machine.heard(now: self.start + .seconds(30))
        #expect(machine.tick(now: self.start + .seconds(89), wallClock: 0) == .sendPing)
        #expect(machine.tick(now: self.start + .seconds(90), wallClock: 0) == .drop)
        #expect(machine.channelClosed() == .disconnect(.init(code: 1006, reason: "no pong within 60.0 seconds")))
    }

    @Test func idleAndExpiredTokensClose() {
        var idle = self.machine(idle: .seconds(10))
        #expect(idle.tick(now: self.start + .seconds(10), wallClock: 0) == .close(.init(code: 1001, reason: "idle timeout")))
        var expired = self.machine(expiresAt: 5000)
        #expect(expired.tick(now: self.start, wallClock: 4999) == .none)
        #expect(expired.tick(now: self.start, wallClock: 5000) == .close(.init(code: 4001, reason: "token expired")))
    }

    // MARK: Order around backend calls

    @Test func workWaitsBehindABackendCallInOrder() {
        var machine = self.machine()
        #expect(machine.received(ByteBuffer(string: "a"), isText: true, now: self.start) == .run(self.message("a")))
        machine.backendCallStarted()
        #expect(machine.received(ByteBuffer(string: "b"), isText: true, now: self.start) == .none)
        #expect(machine.commanded(.join(self.room)) == .none)
        #expect(machine.received(ByteBuffer(string: "c"), isText: true, now: self.start) == .none)
        machine.backendCallEnded()
        #expect(machine.next() == .run(self.message("b")))
        #expect(machine.next() == .run(.command(.join(self.room))))
        // The join starts a call of its own: "c" waits for it too.
        machine.backendCallStarted()
        #expect(machine.next() == .none)
        machine.backendCallEnded()
        #expect(machine.next() == .run(self.message("c")))
        #expect(machine.next() == .resumeReads)
    }

    @Test func aCloseCommandActsAtOnceAndDropsTheBacklog() {
        var machine = self.machine()
        machine.backendCallStarted()
        _ = machine.received(ByteBuffer(string: "queued"), isText: true, now: self.start)
        #expect(machine.commanded(.close(code: 4000, reason: "bye")) == .close(.init(code: 4000, reason: "bye")))
        machine.backendCallEnded()
        // Closing: nothing more is run, but reads resume so the peer's close can arrive.
        #expect(machine.next() == .resumeReads)
        _ = machine.channelClosed()
        #expect(machine.next() == .none)
    }

    // MARK: Throttling

    @Test func throttlingRefusesThenClosesAfterTooManyInARow() {
        var machine = self.machine(abuseCloseAfter: 3, rate: TokenBucket(rate: 1, burst: 1, now: 0))
        #expect(machine.throttle(stageAdmitted: true, now: 0) == .admit)
        #expect(machine.throttle(stageAdmitted: true, now: 0) == .refuse(reason: "connection_rate"))
        #expect(machine.throttle(stageAdmitted: false, now: 0) == .refuse(reason: "message_rate"))
        #expect(
            machine.throttle(stageAdmitted: true, now: 0)
                == .close(reason: "connection_rate", .init(code: 1008, reason: "rate limit exceeded"))
        )
        #expect(!machine.isOpen)
    }

    @Test func anAdmittedMessageResetsTheRefusalCount() {
        var machine = self.machine(abuseCloseAfter: 2)
        #expect(machine.throttle(stageAdmitted: false, now: 0) == .refuse(reason: "message_rate"))
        #expect(machine.throttle(stageAdmitted: true, now: 0) == .admit)
        #expect(machine.throttle(stageAdmitted: false, now: 0) == .refuse(reason: "message_rate"))
    }

    // MARK: Rooms

    @Test func roomsAreBoundedAndAJoinAnsweredAfterTheEndIsUndone() {
        var machine = self.machine(maxRooms: 1)
        #expect(machine.mayJoin(self.room))
        #expect(machine.joined(self.room) == .new)
        #expect(machine.joined(self.room) == .already)
        #expect(machine.mayJoin(self.room))
        #expect(!machine.mayJoin(RoomID("other")!))
        let (first, second) = (machine.left(self.room), machine.left(self.room))
        #expect(first && !second)
        _ = machine.channelClosed()
        #expect(machine.joined(self.room) == .gone)
    }

    @Test func aJoinAnsweredWhileClosingIsKeptForDisconnectToLeave() {
        var machine = self.machine()
        _ = machine.closeRequested(.init(code: 1000, reason: ""))
        #expect(machine.joined(self.room) == .new)
        #expect(machine.rooms == [self.room])
    }

    // MARK: Replay hold

    @Test func liveFramesWaitBehindAReplayWithinTheBound() {
        var machine = self.machine()
        #expect(machine.liveFrame(ByteBuffer(string: "live")) == .write)
        machine.replayStarted()
        #expect(machine.liveFrame(ByteBuffer(string: "one")) == .held)
        #expect(machine.liveFrame(ByteBuffer(string: "two")) == .held)
        #expect(!machine.heldOverBound)
        #expect(machine.replayEnded() == [ByteBuffer(string: "one"), ByteBuffer(string: "two")])
        #expect(machine.liveFrame(ByteBuffer(string: "after")) == .write)
        machine.replayStarted()
        #expect(machine.liveFrame(ByteBuffer(repeating: 0, count: 101)) == .held)
        #expect(machine.heldOverBound)
        _ = machine.writabilityLost()
        #expect(machine.liveFrame(ByteBuffer(string: "late")) == .discard)
        #expect(machine.replayEnded() == [])
    }
}
