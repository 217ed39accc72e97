package proxy

import (
	"errors"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

func clientMessage(t testing.TB, msg pgproto3.FrontendMessage) *ClientMessage {
	t.Helper()
	raw, err := msg.Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &ClientMessage{Type: raw[0], Raw: raw}
}

// TestClientMessageAccessors checks that the accessors enforcement uses
// read what pgproto3 encodes, reject truncated messages as protocol
// violations (FATAL 08P01 for the client) and allocate nothing.
func TestClientMessageAccessors(t *testing.T) {
	q := clientMessage(t, &pgproto3.Query{String: "SELECT 1; DROP TABLE t"})
	if sql, err := q.QueryText(); err != nil || string(sql) != "SELECT 1; DROP TABLE t" {
		t.Errorf("QueryText = %q, %v", sql, err)
	}
	p := clientMessage(t, &pgproto3.Parse{Name: "s1", Query: "SELECT $1", ParameterOIDs: []uint32{23}})
	if name, sql, err := p.ParseStatement(); err != nil || string(name) != "s1" || string(sql) != "SELECT $1" {
		t.Errorf("ParseStatement = %q, %q, %v", name, sql, err)
	}
	b := clientMessage(t, &pgproto3.Bind{DestinationPortal: "p1", PreparedStatement: "s1", Parameters: [][]byte{[]byte("x")}})
	if portal, stmt, err := b.BindNames(); err != nil || string(portal) != "p1" || string(stmt) != "s1" {
		t.Errorf("BindNames = %q, %q, %v", portal, stmt, err)
	}
	e := clientMessage(t, &pgproto3.Execute{Portal: "p1", MaxRows: 10})
	if portal, err := e.ExecutePortal(); err != nil || string(portal) != "p1" {
		t.Errorf("ExecutePortal = %q, %v", portal, err)
	}
	c := clientMessage(t, &pgproto3.Close{ObjectType: 'S', Name: "s1"})
	if kind, name, err := c.CloseTarget(); err != nil || kind != 'S' || string(name) != "s1" {
		t.Errorf("CloseTarget = %c, %q, %v", kind, name, err)
	}
	if n := testing.AllocsPerRun(100, func() {
		q.QueryText()
		p.ParseStatement()
		b.BindNames()
		e.ExecutePortal()
		c.CloseTarget()
	}); n != 0 {
		t.Errorf("accessors allocate %v times", n)
	}

	for _, m := range []struct {
		typ  byte
		body string
		want string
	}{
		{'Q', "SELECT 1", "malformed Query message"},
		{'P', "s1\x00SELECT 1", "malformed Parse message"},
		{'P', "s1", "malformed Parse message"},
		{'B', "p1\x00s1", "malformed Bind message"},
		{'E', "", "malformed Execute message"},
		{'C', "S", "malformed Close message"},
	} {
		msg := &ClientMessage{Type: m.typ, Raw: frame(m.typ, []byte(m.body))}
		var err error
		switch m.typ {
		case 'Q':
			_, err = msg.QueryText()
		case 'P':
			_, _, err = msg.ParseStatement()
		case 'B':
			_, _, err = msg.BindNames()
		case 'E':
			_, err = msg.ExecutePortal()
		case 'C':
			_, _, err = msg.CloseTarget()
		}
		var pe *protocolError
		if !errors.As(err, &pe) || pe.msg != m.want {
			t.Errorf("%c %q: err = %v, want protocol error %q", m.typ, m.body, err, m.want)
		}
	}
	// Reading a message as another type is the Interceptor's bug, not
	// the client's: not a protocol violation.
	var pe *protocolError
	if _, err := p.QueryText(); err == nil || errors.As(err, &pe) {
		t.Errorf("QueryText of a Parse: %v", err)
	}
}

func TestDecodeParameterStatus(t *testing.T) {
	body, _ := (&pgproto3.ParameterStatus{Name: "client_encoding", Value: "SJIS"}).Encode(nil)
	if name, value, err := DecodeParameterStatus(body[5:]); err != nil || name != "client_encoding" || value != "SJIS" {
		t.Errorf("DecodeParameterStatus = %q, %q, %v", name, value, err)
	}
	if _, _, err := DecodeParameterStatus([]byte("client_encoding")); err == nil {
		t.Error("a truncated ParameterStatus decoded")
	}
}

// FuzzClientMessageAccessors feeds arbitrary bodies to the accessors: they
// must not panic, and whatever pgproto3 decodes they must read alike.
func FuzzClientMessageAccessors(f *testing.F) {
	f.Add(byte('Q'), []byte("SELECT 1\x00"))
	f.Add(byte('P'), []byte("s\x00SELECT $1\x00\x00\x01\x00\x00\x00\x17"))
	f.Add(byte('B'), []byte("p\x00s\x00\x00\x00\x00\x00\x00\x00"))
	f.Add(byte('E'), []byte("p\x00\x00\x00\x00\x00"))
	f.Add(byte('C'), []byte("Ss\x00"))
	f.Fuzz(func(t *testing.T, typ byte, body []byte) {
		var dec frontendDecoder
		m := &ClientMessage{Type: typ, Raw: frame(typ, body), dec: &dec}
		decoded, derr := m.Decode()
		switch typ {
		case 'Q':
			sql, err := m.QueryText()
			if q, ok := decoded.(*pgproto3.Query); derr == nil && ok && (err != nil || string(sql) != q.String) {
				t.Errorf("QueryText = %q, %v; pgproto3 %q", sql, err, q.String)
			}
		case 'P':
			name, sql, err := m.ParseStatement()
			if p, ok := decoded.(*pgproto3.Parse); derr == nil && ok && (err != nil || string(name) != p.Name || string(sql) != p.Query) {
				t.Errorf("ParseStatement = %q, %q, %v; pgproto3 %q, %q", name, sql, err, p.Name, p.Query)
			}
		case 'B':
			portal, stmt, err := m.BindNames()
			if b, ok := decoded.(*pgproto3.Bind); derr == nil && ok && (err != nil || string(portal) != b.DestinationPortal || string(stmt) != b.PreparedStatement) {
				t.Errorf("BindNames = %q, %q, %v; pgproto3 %q, %q", portal, stmt, err, b.DestinationPortal, b.PreparedStatement)
			}
		case 'E':
			portal, err := m.ExecutePortal()
			if e, ok := decoded.(*pgproto3.Execute); derr == nil && ok && (err != nil || string(portal) != e.Portal) {
				t.Errorf("ExecutePortal = %q, %v; pgproto3 %q", portal, err, e.Portal)
			}
		case 'C':
			kind, name, err := m.CloseTarget()
			if c, ok := decoded.(*pgproto3.Close); derr == nil && ok && (err != nil || kind != c.ObjectType || string(name) != c.Name) {
				t.Errorf("CloseTarget = %c, %q, %v; pgproto3 %c, %q", kind, name, err, c.ObjectType, c.Name)
			}
		}
	})
}
