DO $$
BEGIN
  EXECUTE 'TRUNCATE billing.payments';
END
$$;
WITH gone AS (DELETE FROM public.users RETURNING id) SELECT count(*) FROM gone;
