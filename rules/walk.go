package rules

import (
	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// walk visits every message below m (m included) in depth-first order
// until visit returns false for a message, whose children are then
// skipped. It is the slow, complete path: the analyzer uses typed access
// for the common shapes and walk only where a construct may hide anywhere.
func walk(m proto.Message, visit func(proto.Message) bool) {
	if m == nil {
		return
	}
	walkReflect(m.ProtoReflect(), visit)
}

func walkReflect(r protoreflect.Message, visit func(proto.Message) bool) {
	if !r.IsValid() {
		return
	}
	if !visit(r.Interface()) {
		return
	}
	r.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList():
			if fd.Kind() == protoreflect.MessageKind {
				l := v.List()
				for i := 0; i < l.Len(); i++ {
					walkReflect(l.Get(i).Message(), visit)
				}
			}
		case fd.IsMap():
		case fd.Kind() == protoreflect.MessageKind:
			walkReflect(v.Message(), visit)
		}
		return true
	})
}

// rangeVars returns every relation reference below n.
func rangeVars(n *pg_query.Node) []*pg_query.RangeVar {
	var out []*pg_query.RangeVar
	walk(n, func(m proto.Message) bool {
		if rv, ok := m.(*pg_query.RangeVar); ok {
			out = append(out, rv)
		}
		return true
	})
	return out
}
