-- The application probe: what the application does every minute, run by the
-- least-privileged application role ({{app}}) connecting straight to the
-- server, before and after each case. Each block is one protected table's
-- ordinary queries (public tables unqualified, as the application writes
-- them); all blocks run in one transaction that is rolled back, each
-- statement under its own savepoint, so that the probe changes nothing but
-- sequences. A case must leave every answer (rows, or SQLSTATE and message)
-- the same. Inserted ids are answered as "fresh" (greater than every id
-- before), not by value, because the probe's own earlier runs advanced the
-- sequences. Statements marked "must fail" check a rule the application
-- relies on (a foreign key, a check, an append-only trigger).

-- probe: public.accounts
SELECT id, customer_id, email, nickname, status, balance, (address).city FROM accounts WHERE id = 2;
SELECT count(*) FROM accounts WHERE status = 'active'::account_status;
INSERT INTO accounts (customer_id, email) VALUES (1, 'probe@example.com')
    RETURNING customer_id, email, nickname, status, balance, ref IS NOT NULL AS has_ref,
              id > (SELECT max(id) FROM accounts) AS fresh_id;
UPDATE accounts SET nickname = 'renamed', balance = balance + 1 WHERE id = 3 RETURNING id, nickname, balance;
DELETE FROM accounts WHERE id = 40 RETURNING id, email;
-- must fail: a balance cannot be negative
UPDATE accounts SET balance = -5 WHERE id = 4;

-- probe: public.orders
SELECT id, account_id, placed, amount FROM orders WHERE id = 5;
SELECT count(*) FROM orders WHERE placed >= '2023-01-01' AND placed < '2024-01-01';
INSERT INTO orders (account_id, placed, amount) VALUES (2, '2024-03-01', 9.99)
    RETURNING account_id, placed, amount, id > (SELECT max(id) FROM orders) AS fresh_id;
UPDATE orders SET amount = amount + 1 WHERE id = 60 RETURNING id, placed, amount;
DELETE FROM orders WHERE id = 7 RETURNING id, placed;
-- must fail: an order belongs to an account
INSERT INTO orders (id, account_id, placed, amount) VALUES (1000000, 999999, '2024-03-01', 1);

-- probe: public.events
SELECT id, account_id, kind, at FROM events WHERE id = 2;
SELECT count(*) FROM events;
INSERT INTO events (account_id, kind) VALUES (3, 'probe')
    RETURNING account_id, kind, at, id > (SELECT max(id) FROM events) AS fresh_id;
UPDATE events SET kind = 'logout' WHERE id = 3 RETURNING id, kind;
DELETE FROM events WHERE id = 35 RETURNING id, kind;

-- probe: public.profiles
SELECT id, handle, score, bio FROM profiles WHERE id = 2;
INSERT INTO profiles (handle, score, bio) VALUES ('probe', 1.5, 'hi')
    RETURNING handle, score, bio, id > (SELECT max(id) FROM profiles) AS fresh_id;
UPDATE profiles SET bio = 'updated' WHERE id = 3 RETURNING id, bio;
DELETE FROM profiles WHERE id = 4 RETURNING id, handle;

-- probe: ledger.entries
SELECT id, account_id, kind, amount, memo FROM ledger.entries WHERE id = 2;
INSERT INTO ledger.entries (account_id, kind, amount, memo) VALUES (5, 'credit', 100, 'probe')
    RETURNING account_id, kind, amount, memo, id > (SELECT max(id) FROM ledger.entries) AS fresh_id;
SELECT balance FROM ledger.balances WHERE account_id = 5;
INSERT INTO ledger.entries (account_id, kind, amount) VALUES (6, 'debit', 2) RETURNING account_id, kind, amount, memo;
UPDATE ledger.entries SET memo = 'corrected' WHERE id = 3 RETURNING id, memo;
DELETE FROM ledger.entries WHERE id = 4 RETURNING id;
-- must fail: an entry belongs to an account
INSERT INTO ledger.entries (account_id, kind, amount) VALUES (999999, 'debit', 1);

-- probe: ledger.balances
SELECT account_id, balance FROM ledger.balances WHERE account_id = 2;

-- probe: ledger.audit_trail
SELECT id, entry_id, note FROM ledger.audit_trail WHERE id = 2;
INSERT INTO ledger.audit_trail (entry_id, note) VALUES (1, 'probe')
    RETURNING entry_id, note, id > (SELECT max(id) FROM ledger.audit_trail) AS fresh_id;
-- must fail: the audit trail is append-only
DELETE FROM ledger.audit_trail WHERE id = 3;
