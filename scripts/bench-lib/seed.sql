-- The benchmark's data set: one tenant, 10,000 threads over 100 learners, 100 messages each (1,000,000 messages),
-- inserted in time order so that one thread's messages are spread over the heap (as in the peers' pgbench data).
-- Run as the superuser (row-level security does not apply). Thread ids are md5('bench-thread-N'), so pgbench can
-- address them.
\set tenant '00000000-0000-4000-8000-000000000001'
INSERT INTO chat.threads (tenant_id, id, learner_id, title, last_seq, event_seq, created_by, created_by_role,
                          last_activity_at)
SELECT :'tenant', md5('bench-thread-' || t)::uuid, md5('bench-learner-' || (t % 100))::uuid, 'bench ' || t, 100, 100,
       'seed', 'teacher', now() - interval '1 minute' * (t % 60)
FROM generate_series(1, 10000) t;
INSERT INTO chat.messages (tenant_id, thread_id, seq, learner_id, author_id, author_role, body, idempotency_key,
                           created_at, event_seq)
SELECT :'tenant', md5('bench-thread-' || t)::uuid, s, md5('bench-learner-' || (t % 100))::uuid, 'seed', 'teacher',
       repeat('x', 100), 'seed-' || t || '-' || s, now() - interval '1 second' * (100 - s), s
FROM generate_series(1, 100) s CROSS JOIN generate_series(1, 10000) t;
VACUUM (ANALYZE) chat.threads, chat.messages;
-- One long thread for the streaming scenario: 200,000 messages of 100 bytes, replayed by WatchThread.
INSERT INTO chat.threads (tenant_id, id, learner_id, title, last_seq, event_seq, created_by, created_by_role)
VALUES (:'tenant', md5('bench-stream-thread')::uuid, md5('bench-learner-0')::uuid, 'bench stream', 200000, 200000,
        'seed', 'teacher');
INSERT INTO chat.messages (tenant_id, thread_id, seq, learner_id, author_id, author_role, body, idempotency_key,
                           created_at, event_seq)
SELECT :'tenant', md5('bench-stream-thread')::uuid, s, md5('bench-learner-0')::uuid, 'seed', 'teacher',
       repeat('y', 100), 'stream-' || s, now() - interval '1 millisecond' * (200000 - s), s
FROM generate_series(1, 200000) s;
VACUUM (ANALYZE) chat.messages;
