import Synchronization

/// State split over a fixed number of locks by a hash of its key, so callers with unrelated keys do not wait on
/// each other. Each stripe holds its own share of the state (say, the rooms whose ids hash to it).
struct Striped<State>: Sendable {
    /// A class, because a `Mutex` cannot be copied and so cannot be an element of an array.
    private final class Stripe: Sendable {
        let state: Mutex<State>
        init(_ state: sending State) { self.state = Mutex(state) }
    }

    private let stripes: [Stripe]

    init(_ initial: @autoclosure () -> State, count: Int = 64) {
        self.stripes = (0..<count).map { _ in Stripe(initial()) }
    }

    /// The stripe of a key: FNV-1a over its UTF-8 bytes. Cheap for short ids, and the same in every run, so tests
    /// can choose keys in different stripes.
    func index(of key: String) -> Int {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in key.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return Int(hash % UInt64(self.stripes.count))
    }

    /// Runs `body` on the stripe of `key`, under its lock.
    func withLock<Result: Sendable>(_ key: String, _ body: (inout State) -> Result) -> Result {
        self.stripes[self.index(of: key)].state.withLock { body(&$0) }
    }

    /// What `body` makes of every stripe, each locked in turn, never two at once.
    func flatMap<Element: Sendable>(_ body: (inout State) -> [Element]) -> [Element] {
        self.stripes.flatMap { stripe in stripe.state.withLock { body(&$0) } }
    }
}
