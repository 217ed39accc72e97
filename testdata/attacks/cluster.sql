-- Cluster-level lockouts: statements that leave every table and row in
-- place and lock the application out of all of them at once, through its
-- database, its role, settings the server applies to its next sessions,
-- or locks that outlive the session that took them (PREPARE TRANSACTION).
-- The application probe logs in anew after the case, as an application
-- server restarting would. Cases that change the whole cluster (ALTER
-- SYSTEM) are exclusive; the harness resets them afterwards.

-- case: database-connection-limit-zero
-- expect: refused
-- why: The database's owner sets its connection limit to 0: only superusers get in.
-- pgmoat:
ALTER DATABASE {{db}} CONNECTION LIMIT 0;

-- case: database-disallows-connections
-- expect: refused
-- as: superuser
-- database: postgres
-- why: ALLOW_CONNECTIONS false, from another database: nobody gets in, superusers included.
-- pgmoat:
ALTER DATABASE {{db}} ALLOW_CONNECTIONS false;

-- case: revoke-connect
-- expect: refused
-- why: The owner revokes CONNECT from PUBLIC, which is where the application's right to connect came from.
-- pgmoat:
REVOKE CONNECT ON DATABASE {{db}} FROM PUBLIC;

-- case: role-nologin
-- expect: refused
-- as: superuser
-- why: The application's role may no longer log in.
-- pgmoat:
ALTER ROLE {{app}} NOLOGIN;

-- case: role-valid-until-past
-- expect: refused
-- as: superuser
-- why: The application's password expired in 2001.
-- pgmoat:
ALTER ROLE {{app}} VALID UNTIL '2001-01-01';

-- case: role-password-changed
-- expect: refused
-- as: superuser
-- why: A new password the application does not know.
-- pgmoat:
ALTER ROLE {{app}} PASSWORD 'rotated-and-lost';

-- case: role-connection-limit-zero
-- expect: refused
-- as: superuser
-- why: CONNECTION LIMIT 0 on the role rather than the database.
-- pgmoat:
ALTER ROLE {{app}} CONNECTION LIMIT 0;

-- case: role-noinherit
-- expect: refused
-- as: superuser
-- why: NOINHERIT: the application's role no longer has its group's privileges, though it is still a member.
-- pgmoat:
ALTER ROLE {{app}} NOINHERIT;

-- case: revoke-group-membership
-- expect: refused
-- as: superuser
-- why: REVOKE of a role, not of a privilege: every grant the application had came through it.
-- pgmoat:
REVOKE attack_rw FROM {{app}};

-- case: role-read-only
-- expect: refused
-- as: superuser
-- why: Every new session of the application starts read-only.
-- pgmoat:
ALTER ROLE {{app}} SET default_transaction_read_only = on;

-- case: database-read-only
-- expect: refused
-- why: The database's owner makes every new session in it read-only.
-- pgmoat:
ALTER DATABASE {{db}} SET default_transaction_read_only = on;

-- case: database-search-path
-- expect: refused
-- why: The application's unqualified table names stop resolving in new sessions.
-- pgmoat:
ALTER DATABASE {{db}} SET search_path = pg_catalog;

-- case: role-in-database-search-path
-- expect: refused
-- as: superuser
-- why: The same, for the application's role in this database only.
-- pgmoat:
ALTER ROLE {{app}} IN DATABASE {{db}} SET search_path = ledger;

-- case: role-replication-role
-- expect: refused
-- as: superuser
-- why: session_replication_role = replica for the application: no foreign key is checked, no trigger fires.
-- pgmoat:
ALTER ROLE {{app}} SET session_replication_role = replica;

-- case: session-replication-role
-- expect: refused
-- as: superuser
-- why: In the session itself: the append-only trigger no longer fires, and a targeted DELETE removes an audit row.
-- pgmoat:
SET session_replication_role = replica;
DELETE FROM ledger.audit_trail WHERE id = 5;

-- case: system-read-only
-- expect: refused
-- as: superuser
-- flags: exclusive
-- why: ALTER SYSTEM and a reload make every session of the cluster read-only, live ones included.
-- pgmoat:
ALTER SYSTEM SET default_transaction_read_only = on;
SELECT pg_reload_conf();
SELECT pg_sleep(1);

-- case: system-replication-role
-- expect: refused
-- as: superuser
-- flags: exclusive
-- why: The same for session_replication_role: foreign keys and triggers off cluster-wide.
-- pgmoat:
ALTER SYSTEM SET session_replication_role = replica;
SELECT pg_reload_conf();
SELECT pg_sleep(1);

-- case: every-role-read-only
-- expect: refused
-- as: superuser
-- flags: exclusive
-- why: ALTER ROLE ALL names no role: every new session of every role in every database starts read-only.
-- pgmoat:
ALTER ROLE ALL SET default_transaction_read_only = on;

-- case: prepared-transaction-holds-lock
-- expect: refused
-- flags: two-phase
-- why: A prepared transaction keeps its ACCESS EXCLUSIVE lock on accounts after the session has gone.
-- pgmoat:
BEGIN;
LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE;
PREPARE TRANSACTION 'deploy-lock';

-- case: prepared-transaction-holds-row-locks
-- expect: refused
-- flags: two-phase
-- why: A prepared transaction keeps a lock on every ledger row: the application's updates wait, then fail.
-- pgmoat:
BEGIN;
SELECT id FROM ledger.entries FOR UPDATE;
PREPARE TRANSACTION 'deploy-rows';

-- case: database-connection-limit-raised
-- expect: allowed
-- why: Twin: a connection limit above what the server takes.
-- pgmoat:
ALTER DATABASE {{db}} CONNECTION LIMIT 500;

-- case: role-harmless-attributes
-- expect: allowed
-- as: superuser
-- why: Twin: VALID UNTIL infinity, LOGIN, a role setting that changes no answer, and GRANT instead of REVOKE.
-- pgmoat:
ALTER ROLE {{app}} VALID UNTIL 'infinity';
ALTER ROLE {{app}} LOGIN;
ALTER ROLE {{app}} SET work_mem = '8MB';
GRANT attack_rw TO {{app}};

-- case: database-harmless-setting
-- expect: allowed
-- why: Twin: a database setting that changes no answer.
-- pgmoat:
ALTER DATABASE {{db}} SET work_mem = '16MB';

-- case: system-harmless-setting
-- expect: allowed
-- as: superuser
-- flags: exclusive
-- why: Twin: ALTER SYSTEM of a logging setting, and a reload.
-- pgmoat:
ALTER SYSTEM SET log_min_duration_statement = '2s';
SELECT pg_reload_conf();
SELECT pg_sleep(1);

-- case: session-replication-role-origin
-- expect: allowed
-- as: superuser
-- why: Twin: session_replication_role set to origin, its default.
-- pgmoat:
SET session_replication_role = origin;
SELECT count(*) FROM ledger.audit_trail;

-- case: prepared-transaction-of-unprotected-table
-- expect: allowed
-- flags: two-phase
-- why: Twin: two-phase commit of a write to scratch, committed at once.
-- pgmoat:
BEGIN;
INSERT INTO scratch (note) VALUES ('two-phase');
PREPARE TRANSACTION 'scratch-1';
COMMIT PREPARED 'scratch-1';
