package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgmoat/pgmoat/migration"
	"github.com/pgmoat/pgmoat/rules"
)

// schemaCatalog builds check's catalog from a schema file: DDL such as
// pg_dump --schema-only writes (a psql script: its meta-commands and COPY
// data are left out).
func schemaCatalog(path string) (*rules.Catalog, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	f, err := migration.Read(path, string(b), migration.Plain)
	if err != nil {
		return nil, err
	}
	sec, _ := f.Section(migration.Up)
	c, err := rules.CatalogFromSQL(sec.SQL)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// liveCatalog reads check's catalog from a database, as pgmoat serve
// reads it at session start (rules.CatalogQuery), in a read-only
// transaction.
func liveCatalog(ctx context.Context, url string) (*rules.Catalog, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(context.Background())
	rows, err := tx.Query(ctx, rules.CatalogQuery)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	c := rules.NewCatalog()
	for rows.Next() {
		var kind, schema, name string
		var otherSchema, otherName *string
		if err := rows.Scan(&kind, &schema, &name, &otherSchema, &otherName); err != nil {
			return nil, err
		}
		if err := c.AddRow(kind, schema, name, deref(otherSchema), deref(otherName)); err != nil {
			return nil, err
		}
	}
	return c, rows.Err()
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
