BEGIN;
ALTER TABLE public.users RENAME COLUMN email TO email_address;
DROP TABLE IF EXISTS public.users_archive, public.users;
COMMIT;
