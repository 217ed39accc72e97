-- A cleanup that looks harmless and is not.
SET search_path TO billing, public;
DELETE FROM invoices;                -- no WHERE: every invoice
UPDATE users SET note = '' WHERE 1 = 1;
