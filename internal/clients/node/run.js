'use strict';
// run.js runs a fixed node-postgres scenario against one server and prints
// its results as one JSON document on stdout. pgmoat's tests run it directly
// against PostgreSQL and through pgmoat and compare the two documents, so
// the output holds nothing that differs between runs (no timings, no pids).
//
// Usage: node run.js '<config JSON>'   (or the JSON in $PGMOAT_NODE_CONFIG)
// Config: {"host", "port", "user", "password", "database",
//          "ssl": false | {"rejectUnauthorized": bool, "ca": "/path/ca.pem"},
//          "scenario": "full" (default) | "connect" | "error",
//          "query": the statement the "error" scenario runs}
// The "error" scenario runs query, which must fail, and reports every
// field of the error node-postgres gives the application.
// Exit status: 0 on success; 1 on an unexpected failure, with
// {"error": {"message", "code"}} on stderr; 2 on bad usage; 3 on timeout.

const fs = require('fs');
const { Client } = require('pg');

const TIMEOUT_MS = 60000;

function loadConfig() {
  const raw = process.argv[2] || process.env.PGMOAT_NODE_CONFIG;
  if (!raw) {
    process.stderr.write('usage: node run.js \'{"host":...,"port":...,"user":...}\'\n');
    process.exit(2);
  }
  const c = JSON.parse(raw);
  const cfg = {
    host: c.host || '127.0.0.1',
    port: c.port,
    user: c.user,
    database: c.database || c.user,
    application_name: 'pgmoat-node-client',
    connectionTimeoutMillis: 20000,
    ssl: false,
  };
  if (c.password) cfg.password = c.password;
  if (c.ssl && typeof c.ssl === 'object') {
    cfg.ssl = { rejectUnauthorized: c.ssl.rejectUnauthorized !== false };
    if (c.ssl.ca) cfg.ssl.ca = fs.readFileSync(c.ssl.ca);
  } else if (c.ssl === true) {
    cfg.ssl = { rejectUnauthorized: false };
  }
  return { cfg, scenario: c.scenario || 'full', query: c.query };
}

// plain turns driver values into JSON that says exactly what arrived.
function plain(v) {
  if (v === null || v === undefined) return null;
  if (Buffer.isBuffer(v)) return { bytea_hex: v.toString('hex') };
  if (v instanceof Date) return v.toISOString();
  if (typeof v === 'bigint') return v.toString();
  if (Array.isArray(v)) return v.map(plain);
  if (typeof v === 'object') {
    const o = {};
    for (const k of Object.keys(v)) o[k] = plain(v[k]);
    return o;
  }
  return v;
}

function summary(res) {
  return {
    command: res.command,
    rowCount: res.rowCount,
    fields: res.fields.map((f) => ({ name: f.name, dataTypeID: f.dataTypeID })),
    rows: res.rows.map(plain),
  };
}

function pgError(err) {
  return { code: err.code || null, severity: err.severity || null, message: err.message };
}

async function expectError(client, query) {
  try {
    await client.query(query);
  } catch (err) {
    if (!err.code) throw err; // not a server error: unexpected
    return pgError(err);
  }
  throw new Error(`expected an error from ${JSON.stringify(query)}`);
}

const TYPES_SQL = `SELECT * FROM (VALUES
  (1, 'one'::text, 1.50::numeric, true, '2024-01-02 03:04:05.123+00'::timestamptz,
   '\\x00ff10'::bytea, 9007199254740993::int8, NULL::int),
  (2, 'two, with ''quotes'', ünïcode and a tab:\t', -12345678901234567890.0001, false,
   '1999-12-31 23:59:59+00', ''::bytea, -1, NULL),
  (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL)
) AS t(i, txt, num, flag, ts, bin, big, nothing)`;

async function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function full(cfg, client, out) {
  out.simple = summary(await client.query("SELECT 1 AS one, 'hello'::text AS greeting"));
  out.multiStatement = (await client.query("SELECT 1 AS a; SELECT 'two' AS b")).map(summary);
  out.parameterized = summary(await client.query({
    text: 'SELECT $1::int + $2::int AS sum, $3::text AS label',
    values: [2, 40, 'forty-two'],
  }));
  out.prepared = [];
  for (const values of [[21, 'first'], [50, 'second']]) {
    out.prepared.push(summary(await client.query({
      name: 'pgmoat_prepared',
      text: 'SELECT $1::int * 2 AS doubled, $2::text AS tag',
      values,
    })));
  }
  out.typesSimple = summary(await client.query(`${TYPES_SQL} ORDER BY i`));
  out.typesExtended = summary(await client.query({ text: `${TYPES_SQL} WHERE i > $1 ORDER BY i`, values: [0] }));

  const count = async () => (await client.query('SELECT count(*)::int AS n FROM pgmoat_node_tx')).rows[0].n;
  await client.query('CREATE TEMP TABLE pgmoat_node_tx (id int)');
  out.transaction = {};
  await client.query('BEGIN');
  await client.query('INSERT INTO pgmoat_node_tx SELECT generate_series(1, 3)');
  out.transaction.insideBeforeRollback = await count();
  await client.query('ROLLBACK');
  out.transaction.afterRollback = await count();
  await client.query('BEGIN');
  await client.query({ text: 'INSERT INTO pgmoat_node_tx VALUES ($1)', values: [7] });
  await client.query('COMMIT');
  out.transaction.afterCommit = await count();

  out.error = await expectError(client, 'SELECT 1/0');
  out.afterError = summary(await client.query("SELECT 'still usable' AS after"));
  await client.query('BEGIN');
  out.errorInTransaction = await expectError(client, { text: 'SELECT $1::int', values: ['not a number'] });
  out.abortedTransaction = await expectError(client, 'SELECT 1');
  await client.query('ROLLBACK');

  const notices = [];
  client.on('notice', (n) => notices.push({ severity: n.severity, code: n.code, message: n.message }));
  await client.query("DO $$ BEGIN RAISE NOTICE 'pgmoat notice %', 42; END $$");
  out.notices = notices;

  const notifier = new Client(cfg);
  await notifier.connect();
  try {
    await client.query('LISTEN pgmoat_node');
    const got = new Promise((resolve) => client.once('notification', resolve));
    await notifier.query("SELECT pg_notify('pgmoat_node', 'hello from node')");
    const n = await withTimeout(got, 10000, 'the notification');
    out.notification = { channel: n.channel, payload: n.payload, fromNotifier: n.processId === notifier.processID };
    await client.query('UNLISTEN pgmoat_node');
  } finally {
    await notifier.end();
  }
}

// errorFields runs query, which must fail with a server error, and
// returns the error's fields as node-postgres exposes them (absent ones
// are null).
async function errorFields(client, query) {
  try {
    await client.query(query);
  } catch (err) {
    if (!err.code) throw err;
    const o = {};
    for (const k of ['severity', 'code', 'message', 'detail', 'hint', 'position', 'internalPosition',
      'internalQuery', 'where', 'schema', 'table', 'column', 'dataType', 'constraint', 'file', 'line', 'routine']) {
      o[k] = err[k] === undefined ? null : err[k];
    }
    return o;
  }
  throw new Error(`expected an error from ${JSON.stringify(query)}`);
}

async function main() {
  const { cfg, scenario, query } = loadConfig();
  const client = new Client(cfg);
  const out = { scenario };
  await client.connect();
  try {
    out.tls = Boolean(client.connection.stream.encrypted);
    const who = await client.query('SELECT current_user AS user, current_database() = $1 AS in_database', [cfg.database]);
    out.session = summary(who);
    if (scenario === 'full') {
      await full(cfg, client, out);
    } else if (scenario === 'error') {
      out.error = await errorFields(client, query);
    } else if (scenario !== 'connect') {
      throw new Error(`unknown scenario ${scenario}`);
    }
  } finally {
    await client.end();
  }
  process.stdout.write(JSON.stringify(out, null, 2) + '\n');
}

const timer = setTimeout(() => {
  process.stderr.write(JSON.stringify({ error: { message: `scenario did not finish in ${TIMEOUT_MS} ms`, code: null } }) + '\n');
  process.exit(3);
}, TIMEOUT_MS);
timer.unref();

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(JSON.stringify({ error: pgError(err) }) + '\n');
    process.exit(1);
  },
);
