ALTER TABLE public.users ADD COLUMN last_login timestamptz;
UPDATE public.users SET note = 'migrated' WHERE id = 42;
DELETE FROM billing.invoices WHERE paid AND id < 1000;
-- The words DROP TABLE users in a comment or a 'DROP TABLE users' literal are not statements.
INSERT INTO public.audit_log (msg) VALUES ('DROP TABLE users; TRUNCATE billing.invoices');
