import ChatClient
import ChatDomain
import ChatProto
import ChatStore
import ChatStoreTestSupport
import Foundation
import Testing

/// The messages of PostgreSQL's logical replication protocol (pgoutput, protocol version 1) that the outbox's
/// changes arrive as: what Debezium reads. Only what the test needs is decoded; columns are in text form.
enum PgOutputMessage: Equatable {
    case begin(xid: UInt32)
    case commit
    case relation(id: UInt32, namespace: String, name: String, columns: [String])
    case insert(relation: UInt32, values: [String?])
    case update(relation: UInt32)
    case delete(relation: UInt32, key: [String?])
    case other(Character)

    struct Malformed: Error, CustomStringConvertible {
        var description: String
    }

    /// Decodes one message (one row of `pg_logical_slot_get_binary_changes`).
    static func decode(_ bytes: [UInt8]) throws -> PgOutputMessage {
        var reader = Reader(bytes: bytes)
        let tag = Character(UnicodeScalar(try reader.byte()))
        switch tag {
        case "B":
            _ = try reader.int64()  // final LSN
            _ = try reader.int64()  // commit time
            return .begin(xid: try reader.uint32())
        case "C":
            return .commit
        case "R":
            let id = try reader.uint32()
            let namespace = try reader.string()
            let name = try reader.string()
            _ = try reader.byte()  // replica identity
            let count = Int(try reader.uint16())
            var columns: [String] = []
            for _ in 0..<count {
                _ = try reader.byte()  // flags
                columns.append(try reader.string())
                _ = try reader.uint32()  // type
                _ = try reader.uint32()  // type modifier
            }
            return .relation(id: id, namespace: namespace, name: name, columns: columns)
        case "I":
            let relation = try reader.uint32()
            guard try reader.byte() == UInt8(ascii: "N") else { throw Malformed(description: "insert without N") }
            return .insert(relation: relation, values: try reader.tuple())
        case "U":
            return .update(relation: try reader.uint32())
        case "D":
            let relation = try reader.uint32()
            let kind = try reader.byte()
            guard kind == UInt8(ascii: "K") || kind == UInt8(ascii: "O") else {
                throw Malformed(description: "delete without K or O")
            }
            return .delete(relation: relation, key: try reader.tuple())
        default:
            return .other(tag)
        }
    }

    private struct Reader {
        let bytes: [UInt8]
        var offset = 0

        mutating func byte() throws -> UInt8 {
            guard self.offset < self.bytes.count else { throw Malformed(description: "truncated") }
            defer { self.offset += 1 }
            return self.bytes[self.offset]
        }

        mutating func integer(_ width: Int) throws -> UInt64 {
            var value: UInt64 = 0
            for _ in 0..<width { value = value << 8 | UInt64(try self.byte()) }
            return value
        }

        mutating func uint16() throws -> UInt16 { UInt16(try self.integer(2)) }
        mutating func uint32() throws -> UInt32 { UInt32(try self.integer(4)) }
        mutating func int64() throws -> Int64 { Int64(bitPattern: try self.integer(8)) }

        mutating func string() throws -> String {
            guard let end = self.bytes[self.offset...].firstIndex(of: 0) else {
                throw Malformed(description: "unterminated string")
            }
            defer { self.offset = end + 1 }
            return String(decoding: self.bytes[self.offset..<end], as: UTF8.self)
        }

        mutating func tuple() throws -> [String?] {
            let count = Int(try self.uint16())
            var values: [String?] = []
            for _ in 0..<count {
                switch try self.byte() {
                case UInt8(ascii: "n"): values.append(nil)
                case UInt8(ascii: "u"): throw Malformed(description: "an unchanged TOAST value")
                case UInt8(ascii: "t"):
                    let length = Int(try self.uint32())
                    guard self.offset + length <= self.bytes.count else { throw Malformed(description: "truncated") }
                    values.append(String(decoding: self.bytes[self.offset..<self.offset + length], as: UTF8.self))
                    self.offset += length
                default: throw Malformed(description: "unknown column kind")
                }
            }
            return values
        }
    }
}

/// The bytes of a bytea in PostgreSQL's hex output form (`\x0a1b...`).
func byteaBytes(_ text: String) -> [UInt8] {
    let hex = Array(text.utf8.dropFirst(2))
    var bytes: [UInt8] = []
    bytes.reserveCapacity(hex.count / 2)
    var index = 0
    while index + 1 < hex.count {
        let pair = String(decoding: hex[index...index + 1], as: UTF8.self)
        bytes.append(UInt8(pair, radix: 16) ?? 0)
        index += 2
    }
    return bytes
}

/// The outbox as Debezium's outbox event router reads it (migration 8): a replication slot with pgoutput and a
/// publication on the outbox decodes its rows in commit order, every row with the router's columns; erasure and
/// retention never update a row (the application role cannot), they delete it and insert its tombstone at the same
/// position, with the same aggregate id (the Kafka key), which a compacted topic then drops.
@Suite("The outbox through logical decoding")
struct OutboxDecodingTests {
    /// One decoded outbox row.
    struct Row {
        var xid: UInt32
        var columns: [String: String?]
        subscript(_ name: String) -> String? { self.columns[name] ?? nil }
    }

    @Test(
        "a pgoutput slot decodes every outbox insert in commit order with the router's columns; erasure deletes and inserts tombstones keyed alike, never an update"
    )
    func decoding() async throws {
        let harness = try await ServiceHarness()
        let walLevel = try await superuserQuery(harness.database, "SHOW wal_level")
        try #require(
            walLevel.first?[0] == "logical",
            "the test cluster runs with wal_level=logical (scripts/lib/postgres.sh); this one has \(walLevel)"
        )
        let slot = "chat_outbox_test_\(UInt32.random(in: 0...UInt32.max))"
        _ = try await superuserQuery(
            harness.database,
            "CREATE PUBLICATION \(slot) FOR TABLE chat.outbox"
        )
        _ = try await superuserQuery(
            harness.database,
            "SELECT pg_create_logical_replication_slot('\(slot)', 'pgoutput')"
        )
        // The slot holds WAL and the database until it is dropped.
        func dropSlot() async {
            _ = try? await superuserQuery(harness.database, "SELECT pg_drop_replication_slot('\(slot)')")
        }

        do {
            let admin = try harness.client(.tenantAdmin)
            let service = try harness.client(.service, user: "indexer")
            let first = try await admin.createThread(CreateThreadRequest(learnerId: Fixture.learnerA1, title: "T1"))
                .thread!
            for index in 1...3 {
                _ = try await admin.sendMessage(SendMessageRequest(threadId: first.id, body: "secret-\(index)"))
            }
            _ = try await admin.editMessage(EditMessageRequest(threadId: first.id, seq: 2, body: "secret-2b"))
            let other = try await admin.createThread(CreateThreadRequest(learnerId: Fixture.learnerA2, title: "T2"))
                .thread!
            _ = try await admin.sendMessage(SendMessageRequest(threadId: other.id, body: "kept"))
            // What our own stream delivered, in its order, before the erasure.
            let delivered = try await OutboxTrimTests.events(service, count: 7)
            #expect(delivered.count == 7)
            let officer = try harness.client(.privacyOfficer)
            _ = try await officer.eraseLearnerData(EraseLearnerDataRequest(learnerId: Fixture.learnerA1))

            // The application role may not update the outbox at all.
            let update = try await superuserQuery(
                harness.database,
                "SELECT has_table_privilege('chat_app', 'chat.outbox', 'UPDATE')::text, "
                    + "has_table_privilege('chat_app', 'chat.outbox', 'INSERT')::text"
            )
            #expect(update.first == ["false", "true"], "\(update)")

            let changes = try await superuserQuery(
                harness.database,
                """
                SELECT data FROM pg_logical_slot_get_binary_changes('\(slot)', NULL, NULL,
                    'proto_version', '1', 'publication_names', '\(slot)')
                """
            )
            var relations: [UInt32: [String]] = [:]
            var xid: UInt32 = 0
            var transactions: [UInt32] = []
            var inserts: [Row] = []
            var deletes: [(xid: UInt32, key: [String: String?])] = []
            var updates = 0
            for change in changes {
                let message = try PgOutputMessage.decode(byteaBytes(change[0] ?? ""))
                switch message {
                case .begin(let id):
                    xid = id
                    transactions.append(id)
                case .relation(let id, let namespace, let name, let columns):
                    #expect(namespace == "chat" && name == "outbox")
                    relations[id] = columns
                case .insert(let relation, let values):
                    let names = try #require(relations[relation])
                    inserts.append(Row(xid: xid, columns: Dictionary(uniqueKeysWithValues: zip(names, values))))
                case .delete(let relation, let key):
                    let names = try #require(relations[relation])
                    deletes.append((xid, Dictionary(uniqueKeysWithValues: zip(names, key))))
                case .update:
                    updates += 1
                case .commit, .other:
                    break
                }
            }
            #expect(updates == 0, "the outbox is insert-only")

            // Before the erasure: one insert per event, in the order our stream delivered them, each in its own
            // transaction, the transactions in commit order.
            let originals = inserts.filter { $0["erased"] == "f" }
            #expect(originals.map { $0["id"] ?? "" }.prefix(7) == delivered.map { String($0.id) }[...])
            #expect(Set(originals.prefix(7).map(\.xid)).count == 7)
            #expect(transactions.prefix(7) == originals.prefix(7).map(\.xid)[...])
            // The router's columns.
            for row in originals {
                #expect(UUID(uuidString: row["event_id"] ?? "") != nil, "\(row.columns)")
                #expect(row["tx_id"] == String(row.xid), "tx_id is the transaction's id: \(row.columns)")
            }
            let created = originals.filter { $0["type"] == String(EventType.messageCreated.rawValue) }
            #expect(created.count == 4)
            for row in created {
                #expect(row["event_type"] == "message.created" && row["aggregate_type"] == "message")
                #expect(row["aggregate_id"] == "\(Fixture.tenantA)/\(row["thread_id"] ?? "")/\(row["seq"] ?? "")")
            }
            let threadRows = originals.filter { $0["type"] == String(EventType.threadCreated.rawValue) }
            #expect(
                threadRows.map { $0["aggregate_id"] ?? "" } == [
                    "\(Fixture.tenantA)/\(first.id)", "\(Fixture.tenantA)/\(other.id)",
                ]
            )
            #expect(
                originals.contains {
                    $0["event_type"] == "message.edited" && $0["aggregate_id"] == "\(Fixture.tenantA)/\(first.id)/2"
                }
            )
            #expect(originals.contains { ($0["payload"] ?? "").contains("secret-1") })

            // The erasure: one transaction that deletes each of learner A1's chat events (5: the thread, three
            // messages, an edit) and inserts its tombstone at the same position with the same key, erased, without
            // payload, under a new event id; then the thread's THREAD_DELETED and the completion event.
            let erasureXid = try #require(deletes.first?.xid)
            #expect(deletes.count == 5 && deletes.allSatisfy { $0.xid == erasureXid }, "\(deletes.count)")
            let tombstones = inserts.filter {
                $0.xid == erasureXid && $0["type"] != String(EventType.threadDeleted.rawValue)
                    && $0["type"] != String(EventType.privacyErasureCompleted.rawValue)
            }
            #expect(tombstones.count == 5)
            for tombstone in tombstones {
                let original = try #require(originals.first { $0["id"] == tombstone["id"] })
                #expect(tombstone["erased"] == "t" && tombstone["payload"] == nil)
                #expect(tombstone["tx_id"] == original["tx_id"], "the same position")
                #expect(tombstone["aggregate_id"] == original["aggregate_id"], "the key of what it replaces")
                #expect(tombstone["event_id"] != original["event_id"])
                #expect(deletes.contains { $0.key["id"] == tombstone["id"] })
            }
            let threadDeleted = inserts.filter { $0["type"] == String(EventType.threadDeleted.rawValue) }
            #expect(threadDeleted.count == 1 && threadDeleted.first?["payload"] == nil)
            #expect(threadDeleted.first?["aggregate_id"] == "\(Fixture.tenantA)/\(first.id)")
            #expect(inserts.contains { $0.xid == erasureXid && $0["event_type"] == "privacy.erasure_completed" })

            // What is left holds no content of the learner, and our stream still shows the erased events in place.
            let leftovers = try await superuserQuery(
                harness.database,
                "SELECT count(*) FROM chat.outbox WHERE payload::text LIKE '%secret%'"
            )
            #expect(leftovers.first?[0] == "0")
            let after = try await OutboxTrimTests.events(service, count: 7)
            #expect(after.map(\.id) == delivered.map(\.id))
            #expect(after.filter(\.erased).count == 5)

            // Every type of the contract has a name (EVENTS.md lists them), and no two share one.
            let names = try await superuserQuery(
                harness.database,
                "SELECT t, chat.outbox_event_name(t::int2) FROM unnest(ARRAY[\(EventType.subscribable.map { String($0.rawValue) }.joined(separator: ","))]) t"
            )
            let events = try String(
                contentsOf: TestDatabase.repositoryRoot.appendingPathComponent("docs/EVENTS.md"),
                encoding: .utf8
            )
            #expect(Set(names.compactMap { $0[1] }).count == EventType.subscribable.count, "\(names)")
            for name in names.compactMap({ $0[1] }) {
                #expect(events.contains("`\(name)`"), "docs/EVENTS.md lists \(name)")
            }
        } catch {
            await dropSlot()
            throw error
        }
        await dropSlot()
    }
}
