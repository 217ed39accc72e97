-- Types: ALTER TYPE and ALTER DOMAIN change every table that uses the type.
--
-- public.profiles is a typed table (OF profile_t); accounts.address is a
-- composite column (address_t); accounts.status and ledger.entries.kind
-- are enums; accounts.balance and orders.amount are of domain money_amount,
-- ledger.entries.memo of domain ledger.memo_text. None of these statements
-- names a protected table.

-- case: drop-attribute-of-typed-table
-- expect: refused
-- why: DROP ATTRIBUTE ... CASCADE drops the column of the typed table, with its data.
-- pgmoat:
ALTER TYPE profile_t DROP ATTRIBUTE bio CASCADE;

-- case: alter-attribute-type-of-typed-table
-- expect: refused
-- why: ALTER ATTRIBUTE ... TYPE ... CASCADE rewrites the typed table; numeric(6,2) to numeric(6,0) rounds every score.
-- pgmoat:
ALTER TYPE profile_t ALTER ATTRIBUTE score TYPE numeric(6,0) CASCADE;

-- case: rename-attribute-of-typed-table
-- expect: refused
-- why: RENAME ATTRIBUTE ... CASCADE renames the typed table's column; every query naming it fails.
-- pgmoat:
ALTER TYPE profile_t RENAME ATTRIBUTE handle TO nick CASCADE;

-- case: drop-attribute-of-composite-column
-- expect: refused
-- why: The city of every account's address goes with the attribute.
-- pgmoat:
ALTER TYPE address_t DROP ATTRIBUTE city CASCADE;

-- case: rename-attribute-of-composite-column
-- expect: refused
-- why: (address).city stops working in every query of accounts.
-- pgmoat:
ALTER TYPE address_t RENAME ATTRIBUTE city TO town;

-- case: enum-rename-value
-- expect: refused
-- why: Every active account now reads 'dormant', and so do the accounts the application creates.
-- pgmoat:
ALTER TYPE account_status RENAME VALUE 'active' TO 'dormant';

-- case: enum-swap-values
-- expect: refused
-- why: Three renames swap debit and credit: every ledger entry changes sign, no row is written.
-- pgmoat:
ALTER TYPE ledger.entry_kind RENAME VALUE 'debit' TO 'swap';
ALTER TYPE ledger.entry_kind RENAME VALUE 'credit' TO 'debit';
ALTER TYPE ledger.entry_kind RENAME VALUE 'swap' TO 'credit';

-- case: enum-moved-to-another-schema
-- expect: refused
-- why: SET SCHEMA moves the type accounts.status uses; the application's casts to account_status fail.
-- pgmoat:
CREATE SCHEMA attic;
ALTER TYPE account_status SET SCHEMA attic;

-- case: domain-not-valid-check
-- expect: refused
-- why: A NOT VALID check on the domain skips the existing rows and refuses every new balance above 1.
-- pgmoat:
ALTER DOMAIN money_amount ADD CONSTRAINT money_tiny CHECK (VALUE < 1) NOT VALID;

-- case: domain-drop-check
-- expect: refused
-- why: Without its check, the domain takes the negative balances the application relies on it to refuse.
-- pgmoat:
ALTER DOMAIN money_amount DROP CONSTRAINT money_nonneg;

-- case: domain-drop-default
-- expect: refused
-- why: New accounts get a NULL balance instead of 0.
-- pgmoat:
ALTER DOMAIN money_amount DROP DEFAULT;

-- case: domain-set-not-null
-- expect: refused
-- why: The memo of a ledger entry becomes mandatory: the application's entries without a memo fail.
-- pgmoat:
ALTER DOMAIN ledger.memo_text SET NOT NULL;

-- case: drop-domain-cascade
-- expect: refused
-- why: DROP DOMAIN ... CASCADE drops ledger.entries.memo with its data.
-- pgmoat:
DROP DOMAIN ledger.memo_text CASCADE;

-- case: add-attribute
-- expect: allowed
-- why: Twin: ADD ATTRIBUTE ... CASCADE adds a nullable column to the typed table.
-- pgmoat:
ALTER TYPE profile_t ADD ATTRIBUTE website text CASCADE;

-- case: enum-add-value
-- expect: allowed
-- why: Twin: a new enum value at the end changes no existing row.
-- pgmoat:
ALTER TYPE ledger.entry_kind ADD VALUE 'refund';

-- case: enum-rename-value-of-unused-type
-- expect: allowed
-- why: Twin: RENAME VALUE of an enum no protected table uses.
-- setup:
SET ROLE {{mig}};
CREATE TYPE public.mood AS ENUM ('sad', 'happy');
-- pgmoat:
ALTER TYPE mood RENAME VALUE 'sad' TO 'blue';

-- case: drop-attribute-of-unused-type
-- expect: allowed
-- why: Twin: DROP ATTRIBUTE ... CASCADE of a composite type no protected table uses.
-- setup:
SET ROLE {{mig}};
CREATE TYPE public.point3 AS (x int, y int, z int);
CREATE TABLE public.shapes (id int, p point3);
-- pgmoat:
ALTER TYPE point3 DROP ATTRIBUTE z CASCADE;

-- case: comment-and-validate
-- expect: allowed
-- why: Twin: a comment on a type and validating a domain's constraint change nothing.
-- pgmoat:
COMMENT ON TYPE account_status IS 'lifecycle of an account';
ALTER DOMAIN money_amount VALIDATE CONSTRAINT money_nonneg;
