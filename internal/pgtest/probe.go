package pgtest

import (
	"context"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Authentication methods as pg_hba.conf names them, as AuthMethod reports.
const (
	MethodTrust    = "trust"
	MethodPassword = "password"
	MethodMD5      = "md5"
	MethodSCRAM    = "scram-sha-256"
)

// AuthMethod asks the server which authentication method it uses for user
// on a plain TCP connection, by sending a startup message and reading the
// first authentication request. It never sends a password.
func (c *Cluster) AuthMethod(ctx context.Context, user string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", c.Addr())
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	fe := pgproto3.NewFrontend(conn, conn)
	fe.Send(&pgproto3.StartupMessage{
		ProtocolVersion: pgproto3.ProtocolVersionNumber,
		Parameters:      map[string]string{"user": user, "database": "postgres"},
	})
	if err := fe.Flush(); err != nil {
		return "", err
	}
	msg, err := fe.Receive()
	if err != nil {
		return "", err
	}
	switch m := msg.(type) {
	case *pgproto3.AuthenticationOk:
		return MethodTrust, nil
	case *pgproto3.AuthenticationCleartextPassword:
		return MethodPassword, nil
	case *pgproto3.AuthenticationMD5Password:
		return MethodMD5, nil
	case *pgproto3.AuthenticationSASL:
		if slices.Contains(m.AuthMechanisms, "SCRAM-SHA-256") {
			return MethodSCRAM, nil
		}
		return "", fmt.Errorf("SASL without SCRAM-SHA-256: %v", m.AuthMechanisms)
	case *pgproto3.ErrorResponse:
		return "", fmt.Errorf("server refused %s: %s (SQLSTATE %s)", user, m.Message, m.Code)
	default:
		return "", fmt.Errorf("unexpected first message %T for %s", msg, user)
	}
}
