-- The contract of a protected table: what the application relies on, taken
-- away without deleting a row. Privileges, row-level security, constraints
-- that refuse the application's writes, defaults, identity and sequences,
-- triggers and rules (added, dropped, disabled, or their function
-- replaced), replica identity and publications, ownership. Several attacks
-- name no protected table at all. The twins only add to the contract.

-- case: revoke-select
-- expect: refused
-- why: The application's group loses SELECT on accounts.
-- pgmoat:
REVOKE SELECT ON accounts FROM attack_rw;

-- case: revoke-schema-usage
-- expect: refused
-- why: Without USAGE on schema ledger no ledger table can be reached, though every table grant stays.
-- pgmoat:
REVOKE USAGE ON SCHEMA ledger FROM attack_rw;

-- case: revoke-sequence-usage
-- expect: refused
-- why: orders.id defaults to nextval of a sequence the application may no longer use: every new order fails.
-- pgmoat:
REVOKE USAGE ON SEQUENCE orders_id_seq FROM attack_rw;

-- case: revoke-execute-of-default-function
-- expect: refused
-- why: accounts.ref defaults to new_ref(); without EXECUTE for PUBLIC, every new account fails.
-- pgmoat:
REVOKE EXECUTE ON FUNCTION new_ref() FROM PUBLIC;

-- case: enable-rls-without-policy
-- expect: refused
-- why: Row-level security with no policy: the application sees and writes nothing in the ledger.
-- pgmoat:
ALTER TABLE ledger.entries ENABLE ROW LEVEL SECURITY;

-- case: tighten-policy
-- expect: refused
-- why: The policy that lets the application see profiles now lets it see none.
-- pgmoat:
ALTER POLICY profiles_app ON profiles USING (false);

-- case: restrictive-policy
-- expect: refused
-- why: CREATE POLICY looks additive; AS RESTRICTIVE it filters every row out.
-- pgmoat:
CREATE POLICY lockdown ON profiles AS RESTRICTIVE USING (id < 0);

-- case: not-valid-check
-- expect: refused
-- why: A NOT VALID check leaves the existing rows alone and refuses the application's new accounts and updates.
-- pgmoat:
ALTER TABLE accounts ADD CONSTRAINT accounts_corp_only CHECK (email LIKE '%@corp.example') NOT VALID;

-- case: set-not-null
-- expect: refused
-- why: Every account has a nickname today; the application creates accounts without one.
-- pgmoat:
ALTER TABLE accounts ALTER COLUMN nickname SET NOT NULL;

-- case: unique-index
-- expect: refused
-- why: A new unique index on customer_id holds for the data today and refuses a second account per customer.
-- pgmoat:
CREATE UNIQUE INDEX accounts_one_per_customer ON accounts (customer_id);

-- case: unique-index-concurrently
-- expect: refused
-- why: The same, built CONCURRENTLY (outside any transaction block) on the audit trail.
-- pgmoat:
CREATE UNIQUE INDEX CONCURRENTLY audit_one_per_entry ON ledger.audit_trail (entry_id);

-- case: drop-default
-- expect: refused
-- why: status is NOT NULL and the application never sets it.
-- pgmoat:
ALTER TABLE accounts ALTER COLUMN status DROP DEFAULT;

-- case: drop-identity
-- expect: refused
-- why: ledger.entries.id is GENERATED ALWAYS; without identity every insert fails on NOT NULL.
-- pgmoat:
ALTER TABLE ledger.entries ALTER COLUMN id DROP IDENTITY;

-- case: restart-identity
-- expect: refused
-- why: The identity restarts at 1: the next entries collide with existing keys.
-- pgmoat:
ALTER TABLE ledger.entries ALTER COLUMN id RESTART WITH 1;

-- case: setval-of-default-sequence
-- expect: refused
-- why: setval on the sequence behind accounts.ref's default function: the next refs collide with existing ones.
-- pgmoat:
SELECT setval('ref_seq', 1);

-- case: set-default-constant
-- expect: refused
-- why: profiles.id defaults to 1 from now on.
-- pgmoat:
ALTER TABLE profiles ALTER COLUMN id SET DEFAULT 1;

-- case: before-trigger-rewrites-new
-- expect: refused
-- why: A BEFORE trigger that zeroes the balance of every row written from now on.
-- pgmoat:
CREATE FUNCTION public.zero_balance() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.balance := 0;
    RETURN NEW;
END $$;
CREATE TRIGGER zero_balance BEFORE INSERT OR UPDATE ON accounts FOR EACH ROW EXECUTE FUNCTION zero_balance();

-- case: instead-nothing-rule
-- expect: refused
-- why: A DO INSTEAD NOTHING rule swallows every new ledger entry; the application sees INSERT 0 0.
-- pgmoat:
CREATE RULE swallow AS ON INSERT TO ledger.entries DO INSTEAD NOTHING;

-- case: disable-trigger
-- expect: refused
-- why: The trigger that keeps balances in step with entries stops firing.
-- pgmoat:
ALTER TABLE ledger.entries DISABLE TRIGGER entries_apply;

-- case: enable-replica-trigger
-- expect: refused
-- why: ENABLE REPLICA TRIGGER reads like enabling; the trigger then fires only on replicas.
-- pgmoat:
ALTER TABLE ledger.entries ENABLE REPLICA TRIGGER entries_apply;

-- case: drop-append-only-trigger
-- expect: refused
-- why: The audit trail's append-only trigger goes: its rows can be deleted.
-- pgmoat:
DROP TRIGGER audit_append_only ON ledger.audit_trail;

-- case: disable-all-triggers
-- expect: refused
-- as: superuser
-- why: DISABLE TRIGGER ALL also switches off the foreign keys' internal triggers.
-- pgmoat:
ALTER TABLE ledger.entries DISABLE TRIGGER ALL;

-- case: replace-trigger-function
-- expect: refused
-- why: CREATE OR REPLACE of the trigger's function with a body that does nothing; no table is named.
-- pgmoat:
CREATE OR REPLACE FUNCTION ledger.apply_entry() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RETURN NEW;
END $$;

-- case: replace-default-function
-- expect: refused
-- why: new_ref() now returns a ref that exists: every new account collides.
-- pgmoat:
CREATE OR REPLACE FUNCTION public.new_ref() RETURNS text LANGUAGE sql VOLATILE AS $$ SELECT 'A-1' $$;

-- case: replica-identity-nothing
-- expect: refused
-- why: accounts is published (app_cdc); with REPLICA IDENTITY NOTHING every UPDATE and DELETE fails.
-- pgmoat:
ALTER TABLE accounts REPLICA IDENTITY NOTHING;

-- case: publish-table-without-key
-- expect: refused
-- why: A new publication of events (no primary key): every UPDATE and DELETE of events fails.
-- pgmoat:
CREATE PUBLICATION analytics FOR TABLE events;

-- case: publication-drops-table
-- expect: refused
-- why: The ledger leaves the change-data-capture publication; its subscribers stop seeing changes.
-- pgmoat:
ALTER PUBLICATION app_cdc DROP TABLE ledger.entries;

-- case: owner-change
-- expect: refused
-- why: The ledger's balances change owner.
-- pgmoat:
ALTER TABLE ledger.balances OWNER TO {{mig}};

-- case: foreign-key-from-unprotected-table
-- expect: refused
-- why: A new foreign key on scratch (not protected) pins account 40: the application can no longer delete it.
-- setup:
INSERT INTO scratch (note, account_id) VALUES ('keep', 40);
-- pgmoat:
ALTER TABLE scratch ADD CONSTRAINT scratch_account FOREIGN KEY (account_id) REFERENCES accounts;

-- case: grant
-- expect: allowed
-- why: Twin: GRANT instead of REVOKE.
-- pgmoat:
GRANT SELECT ON accounts, ledger.entries TO {{app}};

-- case: add-columns
-- expect: allowed
-- why: Twin: a nullable column and a column with a constant default.
-- pgmoat:
ALTER TABLE accounts ADD COLUMN referral_code text;
ALTER TABLE ledger.entries ADD COLUMN source text DEFAULT 'api';

-- case: non-unique-index-and-comment
-- expect: allowed
-- why: Twin: an index that refuses nothing, and a comment.
-- pgmoat:
CREATE INDEX accounts_customer ON accounts (customer_id);
COMMENT ON TABLE accounts IS 'customer accounts';

-- case: analyze-vacuum
-- expect: allowed
-- why: Twin: ANALYZE and VACUUM.
-- pgmoat:
ANALYZE accounts;
VACUUM ledger.entries;

-- case: unprotected-table-contract
-- expect: allowed
-- why: Twin: RLS, a policy, a trigger, a rule, a revoke and a publication on scratch, which nothing protects.
-- pgmoat:
ALTER TABLE scratch ENABLE ROW LEVEL SECURITY;
CREATE POLICY scratch_all ON scratch USING (true);
CREATE FUNCTION public.scratch_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.note := coalesce(NEW.note, 'stamped');
    RETURN NEW;
END $$;
CREATE TRIGGER scratch_stamp BEFORE INSERT ON scratch FOR EACH ROW EXECUTE FUNCTION scratch_stamp();
CREATE RULE scratch_quiet AS ON DELETE TO scratch DO INSTEAD NOTHING;
REVOKE ALL ON scratch FROM PUBLIC;
CREATE PUBLICATION scratch_pub FOR TABLE scratch;

-- case: new-function-not-used
-- expect: allowed
-- why: Twin: a new function no protected table calls, and a trigger function replaced by an identical one.
-- pgmoat:
CREATE FUNCTION public.audit_note(n text) RETURNS text LANGUAGE sql AS $$ SELECT 'note: ' || n $$;
CREATE OR REPLACE FUNCTION ledger.apply_entry() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ledger.balances AS b (account_id, balance)
    VALUES (NEW.account_id, CASE NEW.kind WHEN 'credit' THEN NEW.amount ELSE -NEW.amount END)
    ON CONFLICT (account_id) DO UPDATE SET balance = b.balance + EXCLUDED.balance;
    RETURN NEW;
END $$;

-- case: drop-owned-by-application-group
-- expect: refused
-- as: superuser
-- why: DROP OWNED BY the application's group owns nothing here, and revokes every privilege granted to it in this database.
-- pgmoat:
DROP OWNED BY attack_rw;

-- case: publish-all-tables
-- expect: refused
-- as: superuser
-- why: A publication FOR ALL TABLES names no table and takes UPDATE and DELETE away from every table without a key.
-- pgmoat:
CREATE PUBLICATION everything FOR ALL TABLES;
