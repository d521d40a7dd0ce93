package torchbin

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The pickle VM below interprets the opcodes of protocols 0-5 that plain
// containers and state dicts use. It never imports or calls anything: a
// global is only a name checked against allowedGlobals, and REDUCE/NEWOBJ
// dispatch to the few Go functions in call. Every length read from the
// stream is checked against the bytes left before anything is allocated, so
// the memory a pickle can make us use is proportional to its own size.

const (
	// maxStack bounds the value stack plus the mark stack. Pickle writers
	// batch APPENDS/SETITEMS by 1000, so real pickles stay far below this;
	// it exists so that a hostile stream cannot grow the stack without bound
	// beyond what its length already implies.
	maxStack = 1 << 20
	// maxMarks bounds MARK nesting, i.e. how deep containers built with
	// MARK can nest.
	maxMarks = 1 << 12
)

// pyNone is Python's None.
type pyNone struct{}

// pyTuple is an immutable Python tuple.
type pyTuple []any

// pyList is a Python list; a pointer because APPEND mutates it in place
// (possibly through the memo).
type pyList struct{ items []any }

// pySet is a Python set or frozenset. Items are kept in insertion order and
// not deduplicated: nothing in a state dict looks inside one.
type pySet struct{ items []any }

// pyDict is a Python dict or collections.OrderedDict: insertion-ordered,
// with hashable scalar keys deduplicated as Python would.
type pyDict struct {
	keys  []any
	vals  []any
	index map[any]int
	// attrs holds the state given by BUILD (for example the _metadata
	// attribute that torch attaches to a state dict). It is kept so BUILD
	// has Python's meaning, but nothing reads it.
	attrs *pyDict
}

func newDict() *pyDict { return &pyDict{index: map[any]int{}} }

// dictKey returns the Go map key for a Python dict key. Only the scalar
// types that can be compared by value are supported.
func dictKey(k any) (any, error) {
	switch v := k.(type) {
	case string, int64, bool, float64, pyNone:
		return v, nil
	case *big.Int:
		return "bigint:" + v.String(), nil
	case []byte:
		return "bytes:" + string(v), nil
	}
	return nil, fmt.Errorf("unsupported dict key of type %s", typeName(k))
}

func (d *pyDict) set(k, v any) error {
	mk, err := dictKey(k)
	if err != nil {
		return err
	}
	if i, ok := d.index[mk]; ok {
		d.vals[i] = v
		return nil
	}
	d.index[mk] = len(d.keys)
	d.keys = append(d.keys, k)
	d.vals = append(d.vals, v)
	return nil
}

func (d *pyDict) get(k string) (any, bool) {
	i, ok := d.index[k]
	if !ok {
		return nil, false
	}
	return d.vals[i], true
}

// pyGlobal is a resolved, allowed global such as torch._utils._rebuild_tensor_v2.
type pyGlobal struct{ module, name string }

func (g *pyGlobal) String() string { return g.module + "." + g.name }

// storageClass maps the allowed torch.*Storage names to safetensors dtypes.
var storageClass = map[string]string{
	"FloatStorage":    "F32",
	"DoubleStorage":   "F64",
	"HalfStorage":     "F16",
	"BFloat16Storage": "BF16",
	"LongStorage":     "I64",
	"IntStorage":      "I32",
	"ShortStorage":    "I16",
	"CharStorage":     "I8",
	"ByteStorage":     "U8",
	"BoolStorage":     "BOOL",
}

// allowedGlobal reports whether module.name may be referenced by a pickle.
func allowedGlobal(module, name string) bool {
	switch module {
	case "collections":
		return name == "OrderedDict"
	case "torch._utils":
		return name == "_rebuild_tensor_v2" || name == "_rebuild_parameter" ||
			name == "_rebuild_parameter_with_state"
	case "torch":
		_, ok := storageClass[name]
		return ok
	}
	return false
}

// pickleError is an error at a given offset of a pickle stream.
type pickleError struct {
	off int
	msg string
	err error
}

func (e *pickleError) Error() string {
	if e.err != nil {
		return fmt.Sprintf("pickle: %s (offset %d): %v", e.msg, e.off, e.err)
	}
	return fmt.Sprintf("pickle: %s (offset %d)", e.msg, e.off)
}

func (e *pickleError) Unwrap() error { return e.err }

// errTruncated is wrapped by every error caused by the stream ending early.
var errTruncated = errors.New("unexpected end of data")

// machine is the state of one unpickling.
type machine struct {
	data  []byte
	pos   int
	op    int // offset of the opcode being executed, for errors
	stack []any
	marks []int
	memo  map[uint64]any
	// persistentLoad resolves BINPERSID/PERSID ids. Nil means the pickle
	// must not contain any.
	persistentLoad func(pid any) (any, error)
}

func (m *machine) errorf(format string, args ...any) error {
	return &pickleError{off: m.op, msg: fmt.Sprintf(format, args...)}
}

func (m *machine) wrap(err error, format string, args ...any) error {
	return &pickleError{off: m.op, msg: fmt.Sprintf(format, args...), err: err}
}

// take returns the next n bytes, refusing lengths beyond the end of the data.
func (m *machine) take(n uint64) ([]byte, error) {
	if n > uint64(len(m.data)-m.pos) {
		return nil, m.wrap(errTruncated, "need %d bytes, %d left", n, len(m.data)-m.pos)
	}
	b := m.data[m.pos : m.pos+int(n)]
	m.pos += int(n)
	return b, nil
}

func (m *machine) u8() (uint64, error) {
	b, err := m.take(1)
	if err != nil {
		return 0, err
	}
	return uint64(b[0]), nil
}

func (m *machine) u16() (uint64, error) {
	b, err := m.take(2)
	if err != nil {
		return 0, err
	}
	return uint64(binary.LittleEndian.Uint16(b)), nil
}

func (m *machine) u32() (uint64, error) {
	b, err := m.take(4)
	if err != nil {
		return 0, err
	}
	return uint64(binary.LittleEndian.Uint32(b)), nil
}

func (m *machine) u64() (uint64, error) {
	b, err := m.take(8)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

// line reads a protocol-0 argument terminated by '\n'.
func (m *machine) line() (string, error) {
	for i := m.pos; i < len(m.data); i++ {
		if m.data[i] == '\n' {
			s := string(m.data[m.pos:i])
			m.pos = i + 1
			return s, nil
		}
	}
	return "", m.wrap(errTruncated, "unterminated line")
}

func (m *machine) push(v any) error {
	if len(m.stack)+len(m.marks) >= maxStack {
		return m.errorf("stack deeper than %d", maxStack)
	}
	m.stack = append(m.stack, v)
	return nil
}

func (m *machine) pop() (any, error) {
	if len(m.stack) == 0 || (len(m.marks) > 0 && len(m.stack) <= m.marks[len(m.marks)-1]) {
		return nil, m.errorf("stack underflow")
	}
	v := m.stack[len(m.stack)-1]
	m.stack = m.stack[:len(m.stack)-1]
	return v, nil
}

func (m *machine) top() (any, error) {
	if len(m.stack) == 0 || (len(m.marks) > 0 && len(m.stack) <= m.marks[len(m.marks)-1]) {
		return nil, m.errorf("stack underflow")
	}
	return m.stack[len(m.stack)-1], nil
}

// popMark pops everything above the innermost MARK and the mark itself.
func (m *machine) popMark() ([]any, error) {
	if len(m.marks) == 0 {
		return nil, m.errorf("no MARK on the stack")
	}
	k := m.marks[len(m.marks)-1]
	m.marks = m.marks[:len(m.marks)-1]
	items := make([]any, len(m.stack)-k)
	copy(items, m.stack[k:])
	m.stack = m.stack[:k]
	return items, nil
}

func (m *machine) memoGet(idx uint64) error {
	v, ok := m.memo[idx]
	if !ok {
		return m.errorf("memo index %d not defined", idx)
	}
	return m.push(v)
}

func (m *machine) memoPut(idx uint64) error {
	v, err := m.top()
	if err != nil {
		return err
	}
	m.memo[idx] = v
	return nil
}

// unpickle runs one pickle from the start of data and returns its value and
// the number of bytes it used (a legacy checkpoint holds several pickles
// back to back).
func unpickle(data []byte, persistentLoad func(pid any) (any, error)) (any, int, error) {
	m := &machine{data: data, memo: map[uint64]any{}, persistentLoad: persistentLoad}
	v, err := m.run()
	return v, m.pos, err
}

func (m *machine) run() (any, error) {
	for {
		m.op = m.pos
		if m.pos >= len(m.data) {
			return nil, m.wrap(errTruncated, "no STOP opcode")
		}
		op := m.data[m.pos]
		m.pos++
		if op == '.' { // STOP
			v, err := m.pop()
			if err != nil {
				return nil, err
			}
			return v, nil
		}
		if err := m.step(op); err != nil {
			return nil, err
		}
	}
}

func (m *machine) step(op byte) error {
	switch op {
	case 0x80: // PROTO
		v, err := m.u8()
		if err != nil {
			return err
		}
		if v > 5 {
			return m.errorf("unsupported pickle protocol %d", v)
		}
		return nil
	case 0x95: // FRAME: only a hint for buffered readers; the data is all in memory.
		n, err := m.u64()
		if err != nil {
			return err
		}
		if n > uint64(len(m.data)-m.pos) {
			return m.wrap(errTruncated, "frame of %d bytes, %d left", n, len(m.data)-m.pos)
		}
		return nil
	case '(': // MARK
		if len(m.marks) >= maxMarks {
			return m.errorf("MARK nesting deeper than %d", maxMarks)
		}
		if len(m.stack)+len(m.marks) >= maxStack {
			return m.errorf("stack deeper than %d", maxStack)
		}
		m.marks = append(m.marks, len(m.stack))
		return nil
	case '0': // POP
		if len(m.marks) > 0 && len(m.stack) == m.marks[len(m.marks)-1] {
			// Python's POP discards a MARK that is on top of the stack.
			m.marks = m.marks[:len(m.marks)-1]
			return nil
		}
		_, err := m.pop()
		return err
	case '1': // POP_MARK
		_, err := m.popMark()
		return err
	case '2': // DUP
		v, err := m.top()
		if err != nil {
			return err
		}
		return m.push(v)

	case 'N': // NONE
		return m.push(pyNone{})
	case 0x88: // NEWTRUE
		return m.push(true)
	case 0x89: // NEWFALSE
		return m.push(false)
	case 'J': // BININT
		v, err := m.u32()
		if err != nil {
			return err
		}
		return m.push(int64(int32(uint32(v))))
	case 'K': // BININT1
		v, err := m.u8()
		if err != nil {
			return err
		}
		return m.push(int64(v))
	case 'M': // BININT2
		v, err := m.u16()
		if err != nil {
			return err
		}
		return m.push(int64(v))
	case 0x8a, 0x8b: // LONG1, LONG4
		var n uint64
		var err error
		if op == 0x8a {
			n, err = m.u8()
		} else {
			n, err = m.u32()
		}
		if err != nil {
			return err
		}
		b, err := m.take(n)
		if err != nil {
			return err
		}
		return m.push(decodeLong(b))
	case 'I': // INT (protocol 0); "00"/"01" are False/True
		s, err := m.line()
		if err != nil {
			return err
		}
		switch s {
		case "00":
			return m.push(false)
		case "01":
			return m.push(true)
		}
		return m.pushIntText(s)
	case 'L': // LONG (protocol 0)
		s, err := m.line()
		if err != nil {
			return err
		}
		return m.pushIntText(strings.TrimSuffix(s, "L"))
	case 'G': // BINFLOAT, big-endian
		b, err := m.take(8)
		if err != nil {
			return err
		}
		return m.push(math.Float64frombits(binary.BigEndian.Uint64(b)))
	case 'F': // FLOAT (protocol 0)
		s, err := m.line()
		if err != nil {
			return err
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return m.wrap(err, "bad FLOAT")
		}
		return m.push(f)

	case 'X', 0x8c, 0x8d: // BINUNICODE, SHORT_BINUNICODE, BINUNICODE8
		n, err := m.length(op, 'X', 0x8c)
		if err != nil {
			return err
		}
		b, err := m.take(n)
		if err != nil {
			return err
		}
		return m.push(string(b))
	case 'V': // UNICODE (protocol 0, raw-unicode-escape)
		s, err := m.line()
		if err != nil {
			return err
		}
		u, err := rawUnicodeUnescape(s)
		if err != nil {
			return m.wrap(err, "bad UNICODE")
		}
		return m.push(u)
	case 'T', 'U': // BINSTRING, SHORT_BINSTRING: Python 2 str, read as text like torch.load does
		var n uint64
		var err error
		if op == 'T' {
			n, err = m.u32()
		} else {
			n, err = m.u8()
		}
		if err != nil {
			return err
		}
		b, err := m.take(n)
		if err != nil {
			return err
		}
		return m.push(string(b))
	case 'B', 'C', 0x8e, 0x96: // BINBYTES, SHORT_BINBYTES, BINBYTES8, BYTEARRAY8
		n, err := m.length(op, 'B', 'C')
		if err != nil {
			return err
		}
		b, err := m.take(n)
		if err != nil {
			return err
		}
		return m.push(append([]byte(nil), b...))

	case ')': // EMPTY_TUPLE
		return m.push(pyTuple{})
	case 't': // TUPLE
		items, err := m.popMark()
		if err != nil {
			return err
		}
		return m.push(pyTuple(items))
	case 0x85, 0x86, 0x87: // TUPLE1, TUPLE2, TUPLE3
		n := int(op-0x85) + 1
		if len(m.stack) < n || (len(m.marks) > 0 && len(m.stack)-n < m.marks[len(m.marks)-1]) {
			return m.errorf("stack underflow")
		}
		t := make(pyTuple, n)
		copy(t, m.stack[len(m.stack)-n:])
		m.stack = m.stack[:len(m.stack)-n]
		return m.push(t)
	case ']': // EMPTY_LIST
		return m.push(&pyList{})
	case 'l': // LIST
		items, err := m.popMark()
		if err != nil {
			return err
		}
		return m.push(&pyList{items: items})
	case 'a': // APPEND
		v, err := m.pop()
		if err != nil {
			return err
		}
		return m.appendTo([]any{v})
	case 'e': // APPENDS
		items, err := m.popMark()
		if err != nil {
			return err
		}
		return m.appendTo(items)
	case '}': // EMPTY_DICT
		return m.push(newDict())
	case 'd': // DICT
		items, err := m.popMark()
		if err != nil {
			return err
		}
		d := newDict()
		if err := m.setItems(d, items); err != nil {
			return err
		}
		return m.push(d)
	case 's': // SETITEM
		v, err := m.pop()
		if err != nil {
			return err
		}
		k, err := m.pop()
		if err != nil {
			return err
		}
		return m.setItemsOnTop([]any{k, v})
	case 'u': // SETITEMS
		items, err := m.popMark()
		if err != nil {
			return err
		}
		return m.setItemsOnTop(items)
	case 0x8f: // EMPTY_SET
		return m.push(&pySet{})
	case 0x90: // ADDITEMS
		items, err := m.popMark()
		if err != nil {
			return err
		}
		t, err := m.top()
		if err != nil {
			return err
		}
		s, ok := t.(*pySet)
		if !ok {
			return m.errorf("ADDITEMS on %s", typeName(t))
		}
		s.items = append(s.items, items...)
		return nil
	case 0x91: // FROZENSET
		items, err := m.popMark()
		if err != nil {
			return err
		}
		return m.push(&pySet{items: items})

	case 'h': // BINGET
		i, err := m.u8()
		if err != nil {
			return err
		}
		return m.memoGet(i)
	case 'j': // LONG_BINGET
		i, err := m.u32()
		if err != nil {
			return err
		}
		return m.memoGet(i)
	case 'g': // GET
		i, err := m.lineIndex()
		if err != nil {
			return err
		}
		return m.memoGet(i)
	case 'q': // BINPUT
		i, err := m.u8()
		if err != nil {
			return err
		}
		return m.memoPut(i)
	case 'r': // LONG_BINPUT
		i, err := m.u32()
		if err != nil {
			return err
		}
		return m.memoPut(i)
	case 'p': // PUT
		i, err := m.lineIndex()
		if err != nil {
			return err
		}
		return m.memoPut(i)
	case 0x94: // MEMOIZE
		return m.memoPut(uint64(len(m.memo)))

	case 'c': // GLOBAL
		module, err := m.line()
		if err != nil {
			return err
		}
		name, err := m.line()
		if err != nil {
			return err
		}
		g, err := m.global(module, name)
		if err != nil {
			return err
		}
		return m.push(g)
	case 0x93: // STACK_GLOBAL
		nv, err := m.pop()
		if err != nil {
			return err
		}
		mv, err := m.pop()
		if err != nil {
			return err
		}
		module, ok1 := mv.(string)
		name, ok2 := nv.(string)
		if !ok1 || !ok2 {
			return m.errorf("STACK_GLOBAL needs two strings, got %s and %s", typeName(mv), typeName(nv))
		}
		g, err := m.global(module, name)
		if err != nil {
			return err
		}
		return m.push(g)
	case 'i': // INST: a global called with the items above the mark
		module, err := m.line()
		if err != nil {
			return err
		}
		name, err := m.line()
		if err != nil {
			return err
		}
		g, err := m.global(module, name)
		if err != nil {
			return err
		}
		args, err := m.popMark()
		if err != nil {
			return err
		}
		return m.callAndPush(g, args)
	case 'o': // OBJ: callable and arguments above the mark
		items, err := m.popMark()
		if err != nil {
			return err
		}
		if len(items) == 0 {
			return m.errorf("OBJ without a class")
		}
		return m.callAndPush(items[0], items[1:])
	case 'R': // REDUCE
		args, err := m.pop()
		if err != nil {
			return err
		}
		fn, err := m.pop()
		if err != nil {
			return err
		}
		t, ok := args.(pyTuple)
		if !ok {
			return m.errorf("REDUCE arguments are %s, not a tuple", typeName(args))
		}
		return m.callAndPush(fn, t)
	case 0x81: // NEWOBJ: cls.__new__(cls, *args)
		args, err := m.pop()
		if err != nil {
			return err
		}
		cls, err := m.pop()
		if err != nil {
			return err
		}
		t, ok := args.(pyTuple)
		if !ok {
			return m.errorf("NEWOBJ arguments are %s, not a tuple", typeName(args))
		}
		return m.newObj(cls, t)
	case 0x92: // NEWOBJ_EX: cls.__new__(cls, *args, **kwargs)
		kw, err := m.pop()
		if err != nil {
			return err
		}
		args, err := m.pop()
		if err != nil {
			return err
		}
		cls, err := m.pop()
		if err != nil {
			return err
		}
		t, ok := args.(pyTuple)
		if !ok {
			return m.errorf("NEWOBJ_EX arguments are %s, not a tuple", typeName(args))
		}
		if d, ok := kw.(*pyDict); !ok || len(d.keys) != 0 {
			return m.errorf("NEWOBJ_EX with keyword arguments is not supported")
		}
		return m.newObj(cls, t)
	case 'b': // BUILD
		state, err := m.pop()
		if err != nil {
			return err
		}
		obj, err := m.top()
		if err != nil {
			return err
		}
		return m.build(obj, state)
	case 'Q': // BINPERSID
		pid, err := m.pop()
		if err != nil {
			return err
		}
		return m.persistent(pid)
	case 'P': // PERSID
		s, err := m.line()
		if err != nil {
			return err
		}
		return m.persistent(s)
	case 0x82, 0x83, 0x84: // EXT1, EXT2, EXT4
		return m.errorf("extension registry opcodes are not allowed")
	case 0x97, 0x98: // NEXT_BUFFER, READONLY_BUFFER
		return m.errorf("out-of-band buffers are not supported")
	}
	return m.errorf("unknown opcode 0x%02x", op)
}

// length reads the length prefix of a string/bytes opcode: 4 bytes for op4,
// 1 byte for op1, 8 bytes otherwise.
func (m *machine) length(op, op4, op1 byte) (uint64, error) {
	switch op {
	case op4:
		return m.u32()
	case op1:
		return m.u8()
	}
	return m.u64()
}

func (m *machine) lineIndex() (uint64, error) {
	s, err := m.line()
	if err != nil {
		return 0, err
	}
	i, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, m.wrap(err, "bad memo index")
	}
	return i, nil
}

func (m *machine) pushIntText(s string) error {
	if v, err := strconv.ParseInt(s, 10, 64); err == nil {
		return m.push(v)
	}
	b, ok := new(big.Int).SetString(s, 10)
	if !ok {
		return m.errorf("bad integer %q", s)
	}
	return m.push(b)
}

// decodeLong decodes LONG1/LONG4 two's complement little-endian bytes,
// returning int64 when it fits and *big.Int otherwise.
func decodeLong(b []byte) any {
	if len(b) == 0 {
		return int64(0)
	}
	if len(b) <= 8 {
		var u uint64
		for i := len(b) - 1; i >= 0; i-- {
			u = u<<8 | uint64(b[i])
		}
		if shift := uint(64 - 8*len(b)); shift > 0 {
			return int64(u<<shift) >> shift // sign-extend
		}
		return int64(u)
	}
	be := make([]byte, len(b))
	for i := range b {
		be[len(b)-1-i] = b[i]
	}
	v := new(big.Int).SetBytes(be)
	if b[len(b)-1]&0x80 != 0 {
		v.Sub(v, new(big.Int).Lsh(big.NewInt(1), uint(8*len(b))))
	}
	return v
}

// rawUnicodeUnescape decodes Python's raw-unicode-escape: only \uXXXX and
// \UXXXXXXXX are escapes; other bytes are Latin-1 code points.
func rawUnicodeUnescape(s string) (string, error) {
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\\' && i+1 < len(s) && (s[i+1] == 'u' || s[i+1] == 'U') {
			n := 4
			if s[i+1] == 'U' {
				n = 8
			}
			if i+2+n > len(s) {
				return "", fmt.Errorf("truncated escape at %d", i)
			}
			r, err := strconv.ParseUint(s[i+2:i+2+n], 16, 32)
			if err != nil || r > utf8.MaxRune {
				return "", fmt.Errorf("bad escape at %d", i)
			}
			sb.WriteRune(rune(r))
			i += 1 + n
			continue
		}
		sb.WriteRune(rune(c))
	}
	return sb.String(), nil
}

func (m *machine) global(module, name string) (*pyGlobal, error) {
	if !allowedGlobal(module, name) {
		return nil, m.errorf("global %q is not allowed", module+"."+name)
	}
	return &pyGlobal{module: module, name: name}, nil
}

func (m *machine) appendTo(items []any) error {
	t, err := m.top()
	if err != nil {
		return err
	}
	l, ok := t.(*pyList)
	if !ok {
		return m.errorf("APPEND to %s", typeName(t))
	}
	l.items = append(l.items, items...)
	return nil
}

func (m *machine) setItemsOnTop(items []any) error {
	t, err := m.top()
	if err != nil {
		return err
	}
	d, ok := t.(*pyDict)
	if !ok {
		return m.errorf("SETITEM on %s", typeName(t))
	}
	return m.setItems(d, items)
}

func (m *machine) setItems(d *pyDict, items []any) error {
	if len(items)%2 != 0 {
		return m.errorf("odd number of items (%d) for a dict", len(items))
	}
	for i := 0; i < len(items); i += 2 {
		if err := d.set(items[i], items[i+1]); err != nil {
			return m.wrap(err, "bad dict item")
		}
	}
	return nil
}

func (m *machine) build(obj, state any) error {
	d, ok := obj.(*pyDict)
	if !ok {
		return m.errorf("BUILD on %s is not supported", typeName(obj))
	}
	// State is either a dict of attributes or a (dict, slots dict) pair.
	if t, ok := state.(pyTuple); ok && len(t) == 2 {
		state = t[0]
		if _, isNone := state.(pyNone); isNone {
			state = t[1]
		}
	}
	s, ok := state.(*pyDict)
	if !ok {
		return m.errorf("BUILD state is %s, not a dict", typeName(state))
	}
	if d.attrs == nil {
		d.attrs = newDict()
	}
	return m.setItems(d.attrs, interleave(s))
}

func interleave(d *pyDict) []any {
	out := make([]any, 0, 2*len(d.keys))
	for i := range d.keys {
		out = append(out, d.keys[i], d.vals[i])
	}
	return out
}

func (m *machine) persistent(pid any) error {
	if m.persistentLoad == nil {
		return m.errorf("persistent id in a pickle that must not have any")
	}
	v, err := m.persistentLoad(pid)
	if err != nil {
		return m.wrap(err, "persistent id")
	}
	return m.push(v)
}

func (m *machine) newObj(cls any, args pyTuple) error {
	g, ok := cls.(*pyGlobal)
	if !ok || g.module != "collections" || g.name != "OrderedDict" {
		return m.errorf("NEWOBJ of %s is not supported", describe(cls))
	}
	return m.push(newDict())
}

func (m *machine) callAndPush(fn any, args []any) error {
	g, ok := fn.(*pyGlobal)
	if !ok {
		return m.errorf("cannot call %s", typeName(fn))
	}
	v, err := call(g, args)
	if err != nil {
		return m.wrap(err, "calling %s", g)
	}
	return m.push(v)
}

// call applies an allowed global to its arguments. Each case is a Go
// reimplementation of what the Python function would do to the values a
// state dict contains.
func call(g *pyGlobal, args []any) (any, error) {
	switch g.String() {
	case "collections.OrderedDict":
		d := newDict()
		if len(args) == 0 {
			return d, nil
		}
		if len(args) > 1 {
			return nil, fmt.Errorf("takes at most 1 argument, got %d", len(args))
		}
		// OrderedDict(iterable of pairs), as protocol 0/1 pickles write it.
		var pairs []any
		switch it := args[0].(type) {
		case *pyList:
			pairs = it.items
		case pyTuple:
			pairs = it
		default:
			return nil, fmt.Errorf("argument is %s, not a list of pairs", typeName(args[0]))
		}
		for _, p := range pairs {
			kv, ok := p.(pyTuple)
			if !ok {
				if l, isList := p.(*pyList); isList {
					kv = l.items
				} else {
					return nil, fmt.Errorf("item is %s, not a pair", typeName(p))
				}
			}
			if len(kv) != 2 {
				return nil, fmt.Errorf("item has %d elements, not 2", len(kv))
			}
			if err := d.set(kv[0], kv[1]); err != nil {
				return nil, err
			}
		}
		return d, nil
	case "torch._utils._rebuild_tensor_v2":
		return rebuildTensor(args)
	case "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state":
		// (data, requires_grad, backward_hooks[, state]): a Parameter is
		// its data tensor as far as inference goes.
		want := 3
		if g.name == "_rebuild_parameter_with_state" {
			want = 4
		}
		if len(args) != want {
			return nil, fmt.Errorf("takes %d arguments, got %d", want, len(args))
		}
		t, ok := args[0].(*tensorRef)
		if !ok {
			return nil, fmt.Errorf("data is %s, not a tensor", typeName(args[0]))
		}
		return t, nil
	}
	return nil, fmt.Errorf("%s is not callable", g)
}

// typeName names the Python type of a VM value, for error messages.
func typeName(v any) string {
	switch v.(type) {
	case pyNone:
		return "None"
	case bool:
		return "bool"
	case int64, *big.Int:
		return "int"
	case float64:
		return "float"
	case string:
		return "str"
	case []byte:
		return "bytes"
	case pyTuple:
		return "tuple"
	case *pyList:
		return "list"
	case *pySet:
		return "set"
	case *pyDict:
		return "dict"
	case *pyGlobal:
		return "global " + v.(*pyGlobal).String()
	case *storageRef:
		return "storage"
	case *tensorRef:
		return "tensor"
	}
	return fmt.Sprintf("%T", v)
}

func describe(v any) string {
	if g, ok := v.(*pyGlobal); ok {
		return g.String()
	}
	return typeName(v)
}
