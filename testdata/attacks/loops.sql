-- Loops of targeted DML: every statement in the loop names one row by its
-- key, and the loop visits every row. In DO blocks, in functions created in
-- the same session or before it, in procedures that commit, in triggers,
-- and in a SELECT that calls a one-row function per row. The twins run the
-- same loops over one row, over an unprotected table, or only to read.

-- case: do-for-over-query
-- expect: refused
-- why: FOR r IN SELECT id ... LOOP DELETE ... WHERE id = r.id.
-- pgmoat:
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT id FROM ledger.entries LOOP
        DELETE FROM ledger.entries WHERE id = r.id;
    END LOOP;
END $$;

-- case: do-integer-range
-- expect: refused
-- why: An integer loop over every id there could be.
-- pgmoat:
DO $$
BEGIN
    FOR i IN 1..1000 LOOP
        DELETE FROM ledger.entries WHERE id = i;
    END LOOP;
END $$;

-- case: do-until-empty
-- expect: refused
-- why: Delete the smallest key until nothing is found.
-- pgmoat:
DO $$
BEGIN
    LOOP
        DELETE FROM ledger.balances WHERE account_id = (SELECT min(account_id) FROM ledger.balances);
        EXIT WHEN NOT FOUND;
    END LOOP;
END $$;

-- case: do-foreach-array-update
-- expect: refused
-- why: FOREACH over an array of every key, zeroing each balance.
-- pgmoat:
DO $$
DECLARE ids bigint[]; x bigint;
BEGIN
    SELECT array_agg(id) INTO ids FROM accounts;
    FOREACH x IN ARRAY ids LOOP
        UPDATE accounts SET balance = 0 WHERE id = x;
    END LOOP;
END $$;

-- case: do-cursor-where-current-of
-- expect: refused
-- why: WHERE CURRENT OF names one row, the one the cursor is on, and the cursor walks them all.
-- pgmoat:
DO $$
DECLARE c CURSOR FOR SELECT id FROM ledger.entries FOR UPDATE;
BEGIN
    FOR r IN c LOOP
        DELETE FROM ledger.entries WHERE CURRENT OF c;
    END LOOP;
END $$;

-- case: do-subtransaction-per-row
-- expect: refused
-- why: Each delete in its own exception block (a subtransaction), errors swallowed.
-- pgmoat:
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT id FROM profiles LOOP
        BEGIN
            DELETE FROM profiles WHERE id = r.id;
        EXCEPTION WHEN OTHERS THEN NULL;
        END;
    END LOOP;
END $$;

-- case: new-function-loop
-- expect: refused
-- why: The loop in a function created through pgmoat, then called.
-- pgmoat:
CREATE FUNCTION public.cleanup_entries() RETURNS int LANGUAGE plpgsql AS $$
DECLARE r record; n int := 0;
BEGIN
    FOR r IN SELECT id FROM ledger.entries LOOP
        DELETE FROM ledger.entries WHERE id = r.id;
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;
SELECT cleanup_entries();

-- case: existing-function-loop
-- expect: refused
-- why: The same loop in a function that existed before pgmoat saw it.
-- setup:
SET ROLE {{mig}};
CREATE FUNCTION public.cleanup_entries() RETURNS int LANGUAGE plpgsql AS $$
DECLARE r record; n int := 0;
BEGIN
    FOR r IN SELECT id FROM ledger.entries LOOP
        DELETE FROM ledger.entries WHERE id = r.id;
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;
-- pgmoat:
SELECT cleanup_entries();

-- case: select-calls-one-row-function
-- expect: refused
-- why: forget(id) deletes one row by key; the SELECT calls it for every row.
-- setup:
SET ROLE {{mig}};
CREATE FUNCTION public.forget(bigint) RETURNS bigint LANGUAGE sql AS $$
    DELETE FROM ledger.entries WHERE id = $1 RETURNING id
$$;
-- pgmoat:
SELECT forget(id) FROM ledger.entries;

-- case: generate-series-calls-one-row-function
-- expect: refused
-- why: The same function called for every number from 1 to 1000.
-- setup:
SET ROLE {{mig}};
CREATE FUNCTION public.forget(bigint) RETURNS bigint LANGUAGE sql AS $$
    DELETE FROM ledger.entries WHERE id = $1 RETURNING id
$$;
-- pgmoat:
SELECT count(forget(g)) FROM generate_series(1, 1000) AS g;

-- case: recursion
-- expect: refused
-- why: A function deletes one row, then calls itself.
-- setup:
SET ROLE {{mig}};
CREATE FUNCTION public.peel(n int) RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM ledger.balances WHERE account_id = (SELECT min(account_id) FROM ledger.balances);
    IF FOUND AND n > 0 THEN
        RETURN peel(n - 1);
    END IF;
    RETURN n;
END $$;
-- pgmoat:
SELECT peel(1000);

-- case: trigger-per-inserted-row
-- expect: refused
-- why: An existing trigger on scratch deletes one ledger entry per inserted row; the INSERT adds 300 rows to scratch.
-- setup:
SET ROLE {{mig}};
CREATE FUNCTION public.scratch_consume() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM ledger.entries WHERE id = NEW.account_id;
    RETURN NEW;
END $$;
CREATE TRIGGER scratch_consume AFTER INSERT ON scratch FOR EACH ROW EXECUTE FUNCTION scratch_consume();
-- pgmoat:
INSERT INTO scratch (note, account_id) SELECT 'batch', g FROM generate_series(1, 300) AS g;

-- case: procedure-commits-per-row
-- expect: refused
-- why: A procedure deletes row by row and commits after each: it cannot run under a savepoint, and each commit is final.
-- setup:
SET ROLE {{mig}};
CREATE PROCEDURE public.drain_entries() LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
    FOR r IN SELECT id FROM ledger.entries LOOP
        DELETE FROM ledger.entries WHERE id = r.id;
        COMMIT;
    END LOOP;
END $$;
-- pgmoat:
CALL drain_entries();

-- case: do-loop-one-row
-- expect: allowed
-- why: Twin: the FOR loop over a query that returns one row.
-- pgmoat:
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT id FROM ledger.entries WHERE id = 5 LOOP
        DELETE FROM ledger.entries WHERE id = r.id;
    END LOOP;
END $$;

-- case: do-loop-over-unprotected-table
-- expect: allowed
-- why: Twin: the loop empties scratch, which nothing protects.
-- pgmoat:
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT id FROM scratch LOOP
        DELETE FROM scratch WHERE id = r.id;
    END LOOP;
END $$;

-- case: do-loop-reads
-- expect: allowed
-- why: Twin: the loop visits every ledger row to add amounts up.
-- pgmoat:
DO $$
DECLARE r record; total numeric := 0;
BEGIN
    FOR r IN SELECT amount FROM ledger.entries LOOP
        total := total + r.amount;
    END LOOP;
    RAISE NOTICE 'total %', total;
END $$;

-- case: one-row-function-called-once
-- expect: allowed
-- why: Twin: the one-row function called for one key.
-- setup:
SET ROLE {{mig}};
CREATE FUNCTION public.forget(bigint) RETURNS bigint LANGUAGE sql AS $$
    DELETE FROM ledger.entries WHERE id = $1 RETURNING id
$$;
-- pgmoat:
SELECT forget(9);

-- case: trigger-for-one-inserted-row
-- expect: allowed
-- why: Twin: the per-row trigger fired by a one-row INSERT.
-- setup:
SET ROLE {{mig}};
CREATE FUNCTION public.scratch_consume() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM ledger.entries WHERE id = NEW.account_id;
    RETURN NEW;
END $$;
CREATE TRIGGER scratch_consume AFTER INSERT ON scratch FOR EACH ROW EXECUTE FUNCTION scratch_consume();
-- pgmoat:
INSERT INTO scratch (note, account_id) VALUES ('one', 11);

-- case: cursor-fetch-runs-the-loop
-- expect: refused
-- why: DECLARE runs nothing; FETCH ALL runs the one-row function for every row.
-- setup:
SET ROLE {{mig}};
CREATE FUNCTION public.forget(bigint) RETURNS bigint LANGUAGE sql AS $$
    DELETE FROM ledger.entries WHERE id = $1 RETURNING id
$$;
-- pgmoat:
BEGIN;
DECLARE c CURSOR FOR SELECT forget(id) FROM ledger.entries;
FETCH ALL FROM c;
COMMIT;

-- case: holdable-cursor-runs-at-commit
-- expect: refused
-- why: A WITH HOLD cursor is run to its end by COMMIT, to keep its rows: the loop happens inside the COMMIT.
-- setup:
SET ROLE {{mig}};
CREATE FUNCTION public.forget(bigint) RETURNS bigint LANGUAGE sql AS $$
    DELETE FROM ledger.entries WHERE id = $1 RETURNING id
$$;
-- pgmoat:
BEGIN;
DECLARE c CURSOR WITH HOLD FOR SELECT forget(id) FROM ledger.entries;
COMMIT;
CLOSE c;

-- case: holdable-cursor-that-reads
-- expect: allowed
-- why: Twin: a WITH HOLD cursor over the ledger, fetched after COMMIT.
-- pgmoat:
BEGIN;
DECLARE c CURSOR WITH HOLD FOR SELECT id, amount FROM ledger.entries;
COMMIT;
FETCH 5 FROM c;
CLOSE c;

-- case: copy-fires-per-row-trigger
-- expect: refused
-- why: COPY FROM STDIN into scratch fires an existing trigger that deletes one ledger entry per copied row.
-- setup:
SET ROLE {{mig}};
CREATE FUNCTION public.scratch_consume() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM ledger.entries WHERE id = NEW.account_id;
    RETURN NEW;
END $$;
CREATE TRIGGER scratch_consume AFTER INSERT ON scratch FOR EACH ROW EXECUTE FUNCTION scratch_consume();
-- pgmoat:
-- copy: batch	1
-- copy: batch	2
-- copy: batch	3
-- copy: batch	4
-- copy: batch	5
-- copy: batch	6
-- copy: batch	7
-- copy: batch	8
-- copy: batch	9
-- copy: batch	10
-- copy: batch	11
-- copy: batch	12
-- copy: batch	13
-- copy: batch	14
-- copy: batch	15
-- copy: batch	16
-- copy: batch	17
-- copy: batch	18
-- copy: batch	19
-- copy: batch	20
-- copy: batch	21
-- copy: batch	22
-- copy: batch	23
-- copy: batch	24
-- copy: batch	25
-- copy: batch	26
-- copy: batch	27
-- copy: batch	28
-- copy: batch	29
-- copy: batch	30
-- copy: batch	31
-- copy: batch	32
-- copy: batch	33
-- copy: batch	34
-- copy: batch	35
-- copy: batch	36
-- copy: batch	37
-- copy: batch	38
-- copy: batch	39
-- copy: batch	40
-- copy: batch	41
-- copy: batch	42
-- copy: batch	43
-- copy: batch	44
-- copy: batch	45
-- copy: batch	46
-- copy: batch	47
-- copy: batch	48
-- copy: batch	49
-- copy: batch	50
-- copy: batch	51
-- copy: batch	52
-- copy: batch	53
-- copy: batch	54
-- copy: batch	55
-- copy: batch	56
-- copy: batch	57
-- copy: batch	58
-- copy: batch	59
-- copy: batch	60
-- copy: batch	61
-- copy: batch	62
-- copy: batch	63
-- copy: batch	64
-- copy: batch	65
-- copy: batch	66
-- copy: batch	67
-- copy: batch	68
-- copy: batch	69
-- copy: batch	70
-- copy: batch	71
-- copy: batch	72
-- copy: batch	73
-- copy: batch	74
-- copy: batch	75
-- copy: batch	76
-- copy: batch	77
-- copy: batch	78
-- copy: batch	79
-- copy: batch	80
-- copy: batch	81
-- copy: batch	82
-- copy: batch	83
-- copy: batch	84
-- copy: batch	85
-- copy: batch	86
-- copy: batch	87
-- copy: batch	88
-- copy: batch	89
-- copy: batch	90
-- copy: batch	91
-- copy: batch	92
-- copy: batch	93
-- copy: batch	94
-- copy: batch	95
-- copy: batch	96
-- copy: batch	97
-- copy: batch	98
-- copy: batch	99
-- copy: batch	100
-- copy: batch	101
-- copy: batch	102
-- copy: batch	103
-- copy: batch	104
-- copy: batch	105
-- copy: batch	106
-- copy: batch	107
-- copy: batch	108
-- copy: batch	109
-- copy: batch	110
-- copy: batch	111
-- copy: batch	112
-- copy: batch	113
-- copy: batch	114
-- copy: batch	115
-- copy: batch	116
-- copy: batch	117
-- copy: batch	118
-- copy: batch	119
-- copy: batch	120
-- copy: batch	121
-- copy: batch	122
-- copy: batch	123
-- copy: batch	124
-- copy: batch	125
-- copy: batch	126
-- copy: batch	127
-- copy: batch	128
-- copy: batch	129
-- copy: batch	130
-- copy: batch	131
-- copy: batch	132
-- copy: batch	133
-- copy: batch	134
-- copy: batch	135
-- copy: batch	136
-- copy: batch	137
-- copy: batch	138
-- copy: batch	139
-- copy: batch	140
-- copy: batch	141
-- copy: batch	142
-- copy: batch	143
-- copy: batch	144
-- copy: batch	145
-- copy: batch	146
-- copy: batch	147
-- copy: batch	148
-- copy: batch	149
-- copy: batch	150
-- copy: batch	151
-- copy: batch	152
-- copy: batch	153
-- copy: batch	154
-- copy: batch	155
-- copy: batch	156
-- copy: batch	157
-- copy: batch	158
-- copy: batch	159
-- copy: batch	160
-- copy: batch	161
-- copy: batch	162
-- copy: batch	163
-- copy: batch	164
-- copy: batch	165
-- copy: batch	166
-- copy: batch	167
-- copy: batch	168
-- copy: batch	169
-- copy: batch	170
-- copy: batch	171
-- copy: batch	172
-- copy: batch	173
-- copy: batch	174
-- copy: batch	175
-- copy: batch	176
-- copy: batch	177
-- copy: batch	178
-- copy: batch	179
-- copy: batch	180
-- copy: batch	181
-- copy: batch	182
-- copy: batch	183
-- copy: batch	184
-- copy: batch	185
-- copy: batch	186
-- copy: batch	187
-- copy: batch	188
-- copy: batch	189
-- copy: batch	190
-- copy: batch	191
-- copy: batch	192
-- copy: batch	193
-- copy: batch	194
-- copy: batch	195
-- copy: batch	196
-- copy: batch	197
-- copy: batch	198
-- copy: batch	199
-- copy: batch	200
-- copy: batch	201
-- copy: batch	202
-- copy: batch	203
-- copy: batch	204
-- copy: batch	205
-- copy: batch	206
-- copy: batch	207
-- copy: batch	208
-- copy: batch	209
-- copy: batch	210
-- copy: batch	211
-- copy: batch	212
-- copy: batch	213
-- copy: batch	214
-- copy: batch	215
-- copy: batch	216
-- copy: batch	217
-- copy: batch	218
-- copy: batch	219
-- copy: batch	220
COPY scratch (note, account_id) FROM STDIN;

-- case: copy-fires-harmless-trigger
-- expect: allowed
-- why: Twin: COPY FROM STDIN into scratch, whose per-row trigger writes to another unprotected table.
-- setup:
SET ROLE {{mig}};
CREATE TABLE public.scratch_log (msg text);
CREATE FUNCTION public.scratch_note() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.scratch_log VALUES ('copied ' || NEW.id);
    RETURN NEW;
END $$;
CREATE TRIGGER scratch_note AFTER INSERT ON scratch FOR EACH ROW EXECUTE FUNCTION scratch_note();
-- pgmoat:
-- copy: one	11
-- copy: two	12
COPY scratch (note, account_id) FROM STDIN;

-- case: copy-checks-domain-column
-- expect: refused
-- why: scratch has a column of a domain whose CHECK calls a function that deletes the oldest ledger entry; COPY checks it per row.
-- setup:
SET ROLE {{mig}};
CREATE FUNCTION public.tag_ok(t text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM ledger.entries WHERE id = (SELECT min(id) FROM ledger.entries);
    RETURN true;
END $$;
CREATE DOMAIN public.tag_text AS text CHECK (public.tag_ok(VALUE));
ALTER TABLE scratch ADD COLUMN tag tag_text;
-- pgmoat:
-- copy: t1
-- copy: t2
-- copy: t3
-- copy: t4
-- copy: t5
-- copy: t6
-- copy: t7
-- copy: t8
-- copy: t9
-- copy: t10
-- copy: t11
-- copy: t12
-- copy: t13
-- copy: t14
-- copy: t15
-- copy: t16
-- copy: t17
-- copy: t18
-- copy: t19
-- copy: t20
-- copy: t21
-- copy: t22
-- copy: t23
-- copy: t24
-- copy: t25
-- copy: t26
-- copy: t27
-- copy: t28
-- copy: t29
-- copy: t30
-- copy: t31
-- copy: t32
-- copy: t33
-- copy: t34
-- copy: t35
-- copy: t36
-- copy: t37
-- copy: t38
-- copy: t39
-- copy: t40
-- copy: t41
-- copy: t42
-- copy: t43
-- copy: t44
-- copy: t45
-- copy: t46
-- copy: t47
-- copy: t48
-- copy: t49
-- copy: t50
-- copy: t51
-- copy: t52
-- copy: t53
-- copy: t54
-- copy: t55
-- copy: t56
-- copy: t57
-- copy: t58
-- copy: t59
-- copy: t60
-- copy: t61
-- copy: t62
-- copy: t63
-- copy: t64
-- copy: t65
-- copy: t66
-- copy: t67
-- copy: t68
-- copy: t69
-- copy: t70
-- copy: t71
-- copy: t72
-- copy: t73
-- copy: t74
-- copy: t75
-- copy: t76
-- copy: t77
-- copy: t78
-- copy: t79
-- copy: t80
-- copy: t81
-- copy: t82
-- copy: t83
-- copy: t84
-- copy: t85
-- copy: t86
-- copy: t87
-- copy: t88
-- copy: t89
-- copy: t90
-- copy: t91
-- copy: t92
-- copy: t93
-- copy: t94
-- copy: t95
-- copy: t96
-- copy: t97
-- copy: t98
-- copy: t99
-- copy: t100
-- copy: t101
-- copy: t102
-- copy: t103
-- copy: t104
-- copy: t105
-- copy: t106
-- copy: t107
-- copy: t108
-- copy: t109
-- copy: t110
-- copy: t111
-- copy: t112
-- copy: t113
-- copy: t114
-- copy: t115
-- copy: t116
-- copy: t117
-- copy: t118
-- copy: t119
-- copy: t120
-- copy: t121
-- copy: t122
-- copy: t123
-- copy: t124
-- copy: t125
-- copy: t126
-- copy: t127
-- copy: t128
-- copy: t129
-- copy: t130
-- copy: t131
-- copy: t132
-- copy: t133
-- copy: t134
-- copy: t135
-- copy: t136
-- copy: t137
-- copy: t138
-- copy: t139
-- copy: t140
-- copy: t141
-- copy: t142
-- copy: t143
-- copy: t144
-- copy: t145
-- copy: t146
-- copy: t147
-- copy: t148
-- copy: t149
-- copy: t150
-- copy: t151
-- copy: t152
-- copy: t153
-- copy: t154
-- copy: t155
-- copy: t156
-- copy: t157
-- copy: t158
-- copy: t159
-- copy: t160
-- copy: t161
-- copy: t162
-- copy: t163
-- copy: t164
-- copy: t165
-- copy: t166
-- copy: t167
-- copy: t168
-- copy: t169
-- copy: t170
-- copy: t171
-- copy: t172
-- copy: t173
-- copy: t174
-- copy: t175
-- copy: t176
-- copy: t177
-- copy: t178
-- copy: t179
-- copy: t180
-- copy: t181
-- copy: t182
-- copy: t183
-- copy: t184
-- copy: t185
-- copy: t186
-- copy: t187
-- copy: t188
-- copy: t189
-- copy: t190
-- copy: t191
-- copy: t192
-- copy: t193
-- copy: t194
-- copy: t195
-- copy: t196
-- copy: t197
-- copy: t198
-- copy: t199
-- copy: t200
-- copy: t201
-- copy: t202
-- copy: t203
-- copy: t204
-- copy: t205
-- copy: t206
-- copy: t207
-- copy: t208
-- copy: t209
-- copy: t210
-- copy: t211
-- copy: t212
-- copy: t213
-- copy: t214
-- copy: t215
-- copy: t216
-- copy: t217
-- copy: t218
-- copy: t219
-- copy: t220
COPY scratch (tag) FROM STDIN;
