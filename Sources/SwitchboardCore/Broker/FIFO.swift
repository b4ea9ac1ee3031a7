/// A first-in, first-out queue with O(1) amortised `append` and `removeFirst` (an array and the index of its head,
/// compacted once half of it is spent). SwitchboardCore has no dependencies, so no `Deque` from swift-collections.
public struct FIFO<Element> {
    private var storage: [Element] = []
    private var head = 0

    public init() {}

    public var isEmpty: Bool { self.head == self.storage.count }
    public var count: Int { self.storage.count - self.head }
    public var first: Element? { self.isEmpty ? nil : self.storage[self.head] }

    public mutating func append(_ element: Element) {
        self.storage.append(element)
    }

    @discardableResult
    public mutating func removeFirst() -> Element {
        let element = self.storage[self.head]
        self.head += 1
        if self.head > 32, self.head * 2 > self.storage.count {
            self.storage.removeFirst(self.head)
            self.head = 0
        }
        return element
    }

    /// The elements from the `offset`-th on (0 is the first).
    public func suffix(from offset: Int) -> ArraySlice<Element> {
        self.storage[(self.head + offset)...]
    }
}
