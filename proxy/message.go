package proxy

import (
	"bytes"
	"fmt"
	"unsafe"

	"github.com/jackc/pgx/v5/pgproto3"
)

// ClientMessage is one frontend message. Its bytes point into the
// session's read buffer, and the session reuses the ClientMessage itself
// for the next message: both are valid only until Intercept returns, so
// copy whatever must outlive the call (a held statement, Bind parameters);
// Text copies a field only when it must.
type ClientMessage struct {
	// Type is the message type byte ('Q', 'P', 'B', 'E', 'F', 'S', ...).
	Type byte
	// Raw is the whole message, type byte and length included.
	Raw []byte

	dec *frontendDecoder
	// owned is set when Raw is a buffer of the message's own, which the
	// proxy never reuses (see Text).
	owned bool
}

// Text returns b, a field of the message such as QueryText's SQL, as a
// string. A message larger than the session's read buffer has a buffer of
// its own that the proxy never writes again: its fields come without a
// copy, so a 60 MB statement costs 60 MB and not twice that (a string kept
// keeps the whole message alive). A smaller message lives in the read
// buffer, which the next message overwrites: its fields are copied.
func (m *ClientMessage) Text(b []byte) string {
	if m.owned && len(b) > 0 {
		return unsafe.String(unsafe.SliceData(b), len(b))
	}
	return string(b)
}

// Borrow returns b, a field of the message, as a string without a copy,
// for a judgement that keeps nothing of it. borrowed says whether the
// string is only lent: a message in the read buffer is valid until the
// session reads its next one (the Interceptor handles it before that), so
// whatever keeps the string must copy it (or take Text instead). A message
// with a buffer of its own lends nothing: its strings stay valid.
func (m *ClientMessage) Borrow(b []byte) (s string, borrowed bool) {
	if len(b) == 0 {
		return "", false
	}
	return unsafe.String(unsafe.SliceData(b), len(b)), !m.owned
}

// Body returns the message body (Raw without its 5-byte header).
func (m *ClientMessage) Body() []byte { return m.Raw[5:] }

// Decode decodes the message into a pgproto3 value owned by the session
// and reused for the next message of the same type. A malformed message is
// a *protocolError, which closes the session with FATAL 08P01.
func (m *ClientMessage) Decode() (pgproto3.FrontendMessage, error) {
	return m.dec.decode(m.Type, m.Raw[5:])
}

// The accessors below decode what enforcement reads of the messages it
// judges, without copying: the slices they return point into Raw, like
// Raw itself. They are as lenient as the relay (what follows the fields
// they read is left to the server to judge); a message too short for the
// fields is malformed, a *protocolError, which closes the session with
// FATAL 08P01.

// QueryText returns the SQL text of a Query message.
func (m *ClientMessage) QueryText() ([]byte, error) {
	if err := m.want('Q'); err != nil {
		return nil, err
	}
	sql, _, ok := cstring(m.Body())
	if !ok {
		return nil, m.malformed()
	}
	return sql, nil
}

// ParseStatement returns the name ("" for the unnamed statement) and the
// SQL text of the statement a Parse message prepares.
func (m *ClientMessage) ParseStatement() (name, sql []byte, err error) {
	return m.twoStrings('P')
}

// DeclaredTypesFrom returns the parameter types a Parse message declares
// whose OIDs are at least min: pgmoat asks whether the client names types
// of the database's own (FirstNormalObjectId), whose input runs when the
// statement is bound.
func (m *ClientMessage) DeclaredTypesFrom(min uint32) ([]uint32, error) {
	if err := m.want('P'); err != nil {
		return nil, err
	}
	_, rest, ok := cstring(m.Body())
	if ok {
		_, rest, ok = cstring(rest)
	}
	if !ok || len(rest) < 2 {
		return nil, m.malformed()
	}
	n := int(rest[0])<<8 | int(rest[1])
	rest = rest[2:]
	if len(rest) < 4*n {
		return nil, m.malformed()
	}
	var out []uint32
	for i := 0; i < n; i++ {
		oid := uint32(rest[4*i])<<24 | uint32(rest[4*i+1])<<16 | uint32(rest[4*i+2])<<8 | uint32(rest[4*i+3])
		if oid >= min {
			out = append(out, oid)
		}
	}
	return out, nil
}

// BindNames returns the portal a Bind message creates and the prepared
// statement it binds ("" for the unnamed ones).
func (m *ClientMessage) BindNames() (portal, stmt []byte, err error) {
	return m.twoStrings('B')
}

// twoStrings returns the two NUL-terminated strings a message of type typ
// starts with.
func (m *ClientMessage) twoStrings(typ byte) (a, b []byte, err error) {
	if err := m.want(typ); err != nil {
		return nil, nil, err
	}
	a, rest, ok := cstring(m.Body())
	if ok {
		b, _, ok = cstring(rest)
	}
	if !ok {
		return nil, nil, m.malformed()
	}
	return a, b, nil
}

// ExecutePortal returns the portal an Execute message runs.
func (m *ClientMessage) ExecutePortal() ([]byte, error) {
	if err := m.want('E'); err != nil {
		return nil, err
	}
	portal, _, ok := cstring(m.Body())
	if !ok {
		return nil, m.malformed()
	}
	return portal, nil
}

// CloseTarget returns what a Close message closes: kind 'S' (a prepared
// statement) or 'P' (a portal), and its name.
func (m *ClientMessage) CloseTarget() (kind byte, name []byte, err error) {
	if err := m.want('C'); err != nil {
		return 0, nil, err
	}
	body := m.Body()
	if len(body) >= 2 {
		if name, _, ok := cstring(body[1:]); ok {
			return body[0], name, nil
		}
	}
	return 0, nil, m.malformed()
}

// want checks that an accessor is used on its message type: using one on
// another is a bug in the Interceptor, not in the client.
func (m *ClientMessage) want(typ byte) error {
	if m.Type != typ {
		return fmt.Errorf("proxy: %s message read as a %s message", messageName(m.Type), messageName(typ))
	}
	return nil
}

func (m *ClientMessage) malformed() error {
	return &protocolError{msg: "malformed " + messageName(m.Type) + " message"}
}

// messageName names the frontend message types enforcement reads.
func messageName(typ byte) string {
	switch typ {
	case 'Q':
		return "Query"
	case 'P':
		return "Parse"
	case 'B':
		return "Bind"
	case 'E':
		return "Execute"
	case 'C':
		return "Close"
	}
	return fmt.Sprintf("%q", typ)
}

// cstring returns the NUL-terminated string at the start of b and what
// follows it.
func cstring(b []byte) (s, rest []byte, ok bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return nil, nil, false
	}
	return b[:i], b[i+1:], true
}

// DecodeParameterStatus decodes the body of a ParameterStatus message
// ('S'), as a ReplyObserver receives it: the name of a run-time parameter
// and its new value.
func DecodeParameterStatus(body []byte) (name, value string, err error) {
	var ps pgproto3.ParameterStatus
	if err := ps.Decode(body); err != nil {
		return "", "", &protocolError{msg: "malformed ParameterStatus message", err: err}
	}
	return ps.Name, ps.Value, nil
}

// frontendDecoder holds one pgproto3 value per message type, as
// pgproto3.Backend does, so decoding allocates only what the values
// themselves copy.
type frontendDecoder struct {
	bind         pgproto3.Bind
	close        pgproto3.Close
	describe     pgproto3.Describe
	execute      pgproto3.Execute
	functionCall pgproto3.FunctionCall
	copyFail     pgproto3.CopyFail
	copyData     pgproto3.CopyData
	copyDone     pgproto3.CopyDone
	flush        pgproto3.Flush
	parse        pgproto3.Parse
	query        pgproto3.Query
	sync         pgproto3.Sync
	terminate    pgproto3.Terminate
}

func (d *frontendDecoder) decode(typ byte, body []byte) (pgproto3.FrontendMessage, error) {
	var msg pgproto3.FrontendMessage
	switch typ {
	case 'B':
		msg = &d.bind
	case 'C':
		msg = &d.close
	case 'D':
		msg = &d.describe
	case 'E':
		msg = &d.execute
	case 'F':
		msg = &d.functionCall
	case 'f':
		msg = &d.copyFail
	case 'd':
		msg = &d.copyData
	case 'c':
		msg = &d.copyDone
	case 'H':
		msg = &d.flush
	case 'P':
		msg = &d.parse
	case 'Q':
		msg = &d.query
	case 'S':
		msg = &d.sync
	case 'X':
		msg = &d.terminate
	default:
		return nil, &protocolError{msg: fmt.Sprintf("invalid frontend message type %q", typ)}
	}
	if err := msg.Decode(body); err != nil {
		return nil, &protocolError{msg: fmt.Sprintf("malformed %c message", typ), err: err}
	}
	return msg, nil
}

// steadyStateTypes are the frontend message types valid after startup.
var steadyStateTypes = [256]bool{
	'B': true, 'C': true, 'D': true, 'E': true, 'F': true, 'H': true,
	'P': true, 'Q': true, 'S': true, 'X': true, 'c': true, 'd': true, 'f': true,
}
