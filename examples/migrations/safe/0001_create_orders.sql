-- Safe migrations: new tables, new columns, targeted data fixes.
CREATE TABLE public.orders (
    id bigserial PRIMARY KEY,
    user_id int NOT NULL REFERENCES public.users(id),
    total numeric(12, 2) NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_user_id_idx ON public.orders (user_id);
