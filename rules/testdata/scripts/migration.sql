-- 0042_cleanup.sql
CREATE TABLE tmp_import (id int);
DROP TABLE tmp_import;

SET search_path TO billing;
  ALTER TABLE invoices
    DROP COLUMN paid;
RESET search_path;
DELETE FROM users WHERE id = 42;
