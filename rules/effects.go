package rules

import (
	"fmt"
	"strings"
)

// Operation is the kind of harm a statement can do.
type Operation uint8

// Operations. The destructive ones (every operation but OpNone) count
// against protected objects; OpNone marks a statement pgmoat judged harmless.
const (
	OpNone Operation = iota
	OpDrop
	OpTruncate
	OpDeleteAll
	OpUpdateAll
	OpAlterDestructive
	OpOpaque
	OpLexerState
	OpUnparseable
	// OpContract takes away part of what a protected table promises its
	// application: privileges, row-level security, constraints, defaults,
	// identity and sequences, triggers and rules, unique indexes, replica
	// identity and publication membership.
	OpContract
	// OpClusterAdmin locks applications out of everything at once: roles
	// that can no longer log in, databases that take no connections,
	// settings that make every session read-only or switch off triggers
	// and foreign keys, prepared transactions that keep locks.
	OpClusterAdmin
	numOps
)

var opNames = [numOps]string{"none", "drop", "truncate", "delete_all", "update_all", "alter_destructive", "opaque", "lexer_state", "unparseable", "contract", "cluster_admin"}

const destructiveOps opSet = (1<<numOps - 1) &^ (1 << OpNone)

func (o Operation) String() string {
	if o < numOps {
		return opNames[o]
	}
	return fmt.Sprintf("Operation(%d)", uint8(o))
}

// ParseOperation parses an operation name as written in the policy.
func ParseOperation(s string) (Operation, bool) {
	for i := OpDrop; i < numOps; i++ {
		if opNames[i] == s {
			return i, true
		}
	}
	return 0, false
}

func operationNames() []string { return opNames[OpDrop:] }

// ObjectKind says what an Object names.
type ObjectKind uint8

// Object kinds. KindEverything stands for "possibly every protected
// object": what opaque code, unparseable text or a CASCADE pgmoat cannot
// follow may touch.
const (
	KindTable ObjectKind = iota
	KindSchema
	KindDatabase
	KindEverything
)

func (k ObjectKind) String() string {
	switch k {
	case KindTable:
		return "table"
	case KindSchema:
		return "schema"
	case KindDatabase:
		return "database"
	case KindEverything:
		return "everything"
	}
	return fmt.Sprintf("ObjectKind(%d)", uint8(k))
}

// Object is what an effect hits, with its name resolved as far as pgmoat
// can: Schema is set when the name was qualified or resolved through the
// search path and catalog; otherwise Candidates lists the schemas the name
// may resolve to, and AnySchema says the search path is unknown so it may
// be in any schema.
type Object struct {
	Kind       ObjectKind
	Schema     string
	Name       string
	Candidates []string
	AnySchema  bool
	// Under is set when the relation descends, as a partition or an
	// inheritance child at any depth, from a table the policy protects:
	// protection flows down to it.
	Under *Ancestor
}

// Ancestor is the protected table an Object descends from (Object.Under).
type Ancestor struct {
	// Schema and Name name the ancestor; Schema is "" when pgmoat does not
	// know which schema's table of that name it is.
	Schema, Name string
	// Lineage says how the object descends from it, for people:
	// "public.events_2024 is a partition of public.events".
	Lineage string
}

// String renders the object for people: billing.invoices,
// invoices (in billing or public), invoices (search_path unknown).
func (o Object) String() string {
	switch {
	case o.Kind == KindEverything:
		return "every protected table"
	case o.Kind == KindSchema || o.Kind == KindDatabase:
		return QuoteIdent(o.Name)
	case o.Schema != "":
		return qualified(o.Schema, o.Name)
	case len(o.Candidates) > 0:
		return QuoteIdent(o.Name) + " (search_path: " + strings.Join(o.Candidates, ", ") + ")"
	default:
		return QuoteIdent(o.Name) + " (search_path unknown)"
	}
}

// Effect is one thing a statement would do: an operation on an object.
type Effect struct {
	Op     Operation
	Object Object
	// What describes the effect, e.g. "DROP TABLE billing.invoices" or
	// "DELETE FROM public.users without a restrictive WHERE".
	What string
	// Where says where in the statement it sits when not at the top:
	// "writable CTE", "EXPLAIN ANALYZE", "body of function f_sql", ...
	Where string
	// Doubt says the statement may do this but analysis cannot tell
	// whether it will (DoubtNone: it will). With EngineOptions.Verify the
	// proxy runs such a statement under guard and checks its real effect
	// before it can commit (the verdict's action is Verify); without it
	// (pgmoat check) see settle.
	Doubt Doubt
}

// Doubt is why an effect is only possible.
type Doubt uint8

// Doubts.
const (
	DoubtNone Doubt = iota
	// DoubtRows: which rows a filter matches only running it tells
	// (DELETE ... WHERE id > 0).
	DoubtRows
	// DoubtCode: the statement runs code pgmoat cannot follow, inside the
	// statement's transaction (EXECUTE of a computed string, a trigger).
	DoubtCode
	// DoubtDDL: what the database alone knows, and pgmoat check, which
	// has none, does not report: DDL whose static analysis found nothing
	// destructive but whose reach through dependencies (CASCADE, a shared
	// type or sequence, a function a protected table calls) the database
	// decides, and COMMIT when deferred triggers of the database's own may
	// run. Verified when it runs.
	DoubtDDL
)

// Possible reports whether the effect is only possible (see Doubt).
func (ef *Effect) Possible() bool { return ef.Doubt != DoubtNone }

// NumOperations is the number of operations, OpNone included: operations
// are numbered 0 to NumOperations-1.
const NumOperations = numOps
