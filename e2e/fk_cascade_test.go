package e2e

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/pgmoat/pgmoat/internal/moattest"
	"github.com/pgmoat/pgmoat/internal/pgtest"
)

// TestForeignKeyCascadeThroughProxy: in the corpus schema public.users
// references public.orgs ON DELETE CASCADE, so DELETE FROM orgs without a
// WHERE would empty the protected users table. pgmoat blocks it and users
// keeps its rows; a targeted DELETE of one org goes through, and the
// server cascades it as usual.
func TestForeignKeyCascadeThroughProxy(t *testing.T) {
	c := pgtest.Get(t)
	db := c.NewDatabase(t)
	ddl, err := os.ReadFile(filepath.Join(corpusDir, "schema.sql"))
	if err != nil {
		t.Fatal(err)
	}
	c.Exec(t, db, string(ddl))
	m := moattest.Start(t, c, moattest.Options{Config: corpusPolicy})
	conn := connect(t, m.SuperConnString(db))
	ctx := context.Background()
	check := direct(t, c, db)

	for _, sql := range []string{"DELETE FROM orgs", "DELETE FROM public.orgs WHERE true"} {
		_, err := conn.Exec(ctx, sql)
		wantBlocked(t, err, "public.users", sql)
		wantTable(t, check, "public.users", 50)
		wantTable(t, check, "public.orgs", 5)
	}
	wantUsable(t, conn)
	if _, err := conn.Exec(ctx, "DELETE FROM orgs WHERE id = 5"); err != nil {
		t.Fatalf("targeted DELETE FROM orgs: %v", err)
	}
	wantTable(t, check, "public.orgs", 4)
	wantTable(t, check, "public.users", 40)
}
