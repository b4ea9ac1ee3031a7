import SwitchboardCore
import Testing

@Suite struct BuiltinAppsTests {
    let room = RoomID("lobby")!

    func handle(_ app: BuiltinApp, _ text: String, rooms: Set<RoomID> = []) -> [AppEffect] {
        let body = try? JSONValue.parse(text)
        let request = AppRequest(selectedKey: RouteSelectionExpression.default.routeKey(for: body), body: body, isBinary: false)
        return BuiltinApps.handle(app, request: request, userId: "alice", rooms: rooms, now: 42)
    }

    func error(_ message: String) -> [AppEffect] { [.error(message)] }

    @Test func pingAnswersPong() {
        #expect(self.handle(.ping, #"{"action":"ping"}"#) == [.reply(.text(["action": "pong", "timestamp": 42]))])
    }

    @Test func joinAndLeave() {
        #expect(self.handle(.joinRoom, #"{"action":"joinRoom","roomId":"lobby"}"#) == [.join(self.room, after: nil)])
        #expect(self.handle(.joinRoom, #"{"action":"joinRoom","roomId":"lobby","lastOffset":7}"#) == [.join(self.room, after: 7)])
        #expect(
            self.handle(.joinRoom, #"{"action":"joinRoom","roomId":"lobby","lastOffset":"7"}"#)
                == self.error("lastOffset must be a non-negative integer")
        )
        #expect(self.handle(.leaveRoom, #"{"action":"leaveRoom","roomId":"lobby"}"#, rooms: [self.room]) == [.leave(self.room)])
        #expect(self.handle(.leaveRoom, #"{"action":"leaveRoom","roomId":"lobby"}"#) == self.error("Not in room"))
        #expect(self.handle(.joinRoom, #"{"action":"joinRoom"}"#) == self.error("roomId required"))
        #expect(
            self.handle(.joinRoom, #"{"action":"joinRoom","roomId":"a b"}"#) == self.error("roomId may contain only letters, digits and _ - . : @")
        )
        let long = String(repeating: "x", count: 129)
        #expect(self.handle(.joinRoom, #"{"action":"joinRoom","roomId":"\#(long)"}"#) == self.error("roomId is longer than 128 bytes"))
    }

    @Test func sendMessageReachesTheRoomWithTheSenderStamped() {
        let effects = self.handle(.sendMessage, #"{"action":"sendMessage","roomId":"lobby","message":{"t":"hi"}}"#, rooms: [self.room])
        let message = ServerFrames.message(self.room, message: ["t": "hi"], sender: "alice", timestamp: 42)
        #expect(effects == [.roomMessage(message)])
        #expect(
            String(decoding: message.frame(offset: 12).bytes, as: UTF8.self)
                == #"{"action":"message","roomId":"lobby","message":{"t":"hi"},"sender":"alice","timestamp":42,"offset":12}"#
        )
    }

    @Test func sendMessageErrors() {
        #expect(self.handle(.sendMessage, #"{"action":"sendMessage","roomId":"lobby","message":"x"}"#) == self.error("Not in room"))
        #expect(
            self.handle(.sendMessage, #"{"action":"sendMessage","roomId":"lobby"}"#, rooms: [self.room]) == self.error("roomId and message required")
        )
        #expect(
            self.handle(.sendMessage, #"{"action":"sendMessage","roomId":"lobby","message":null}"#, rooms: [self.room])
                == self.error("roomId and message required")
        )
    }

    @Test func defaultRouteNamesTheUnknownAction() {
        #expect(self.handle(.unknownAction, #"{"action":"dance"}"#) == self.error("Unknown action: dance"))
        #expect(self.handle(.unknownAction, #"{"type":"dance"}"#) == self.error("Missing action"))
        #expect(self.handle(.unknownAction, "not json") == self.error("Invalid JSON"))
        #expect(self.handle(.unknownAction, "[1]") == self.error("Invalid JSON"))
    }

    @Test func echoReturnsAnyFrameAndOtherAppsRefuseBinary() {
        let binary = AppRequest(selectedKey: nil, body: nil, isBinary: true)
        #expect(BuiltinApps.handle(.echo, request: binary, userId: "u", rooms: [], now: 1) == [.echo])
        #expect(
            BuiltinApps.handle(.ping, request: binary, userId: "u", rooms: [], now: 1)
                == [.error("Binary frames are not supported by this route")]
        )
    }
}
