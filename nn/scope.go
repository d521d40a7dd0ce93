package nn

import (
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
)

// Scope owns tensors, in the spirit of DJL's NDManager: every tensor is
// made in a scope, scopes nest, and closing a scope frees the tensors of it
// and of all its children. Live tensors and bytes are counted per scope
// and per device so that a test can prove a forward pass leaks nothing.
// A Scope is safe for concurrent use.
type Scope struct {
	name   string
	parent *Scope

	mu       sync.Mutex
	tensors  map[*Tensor]struct{}
	children map[*Scope]struct{}
	closed   bool
	// counts of what this scope owns directly, children excluded
	n     int
	bytes int64
}

// NewScope starts a root scope.
func NewScope(name string) *Scope {
	return &Scope{name: name, tensors: map[*Tensor]struct{}{}, children: map[*Scope]struct{}{}}
}

// Child starts a scope nested in s; closing s closes it too.
func (s *Scope) Child(name string) *Scope {
	c := NewScope(name)
	c.parent = s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		panic(fmt.Sprintf("nn: child %q of closed scope %q", name, s.name))
	}
	s.children[c] = struct{}{}
	return c
}

// Name is the scope's path from its root, for messages.
func (s *Scope) Name() string {
	if s.parent == nil {
		return s.name
	}
	return s.parent.Name() + "/" + s.name
}

func (s *Scope) own(t *Tensor) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		panic(fmt.Sprintf("nn: tensor %v made in closed scope %q", t, s.Name()))
	}
	t.scope = s
	s.tensors[t] = struct{}{}
	s.n++
	s.bytes += t.st.Bytes()
	deviceCounter(t.st.Device()).add(1, t.st.Bytes())
}

func (s *Scope) release(t *Tensor) {
	s.mu.Lock()
	_, ok := s.tensors[t]
	if ok {
		delete(s.tensors, t)
		s.n--
		s.bytes -= t.st.Bytes()
	}
	s.mu.Unlock()
	if ok {
		free(t)
	}
}

func free(t *Tensor) {
	deviceCounter(t.st.Device()).add(-1, -t.st.Bytes())
	t.freed = true
	t.st.Free()
}

// Move hands t over to scope dst, so that it outlives s. It is how a
// function returns results made in its own temporary scope.
func (s *Scope) Move(t *Tensor, dst *Scope) {
	s.mu.Lock()
	if _, ok := s.tensors[t]; !ok {
		s.mu.Unlock()
		panic(fmt.Sprintf("nn: tensor %v is not owned by scope %q", t, s.Name()))
	}
	delete(s.tensors, t)
	s.n--
	s.bytes -= t.st.Bytes()
	s.mu.Unlock()

	dst.mu.Lock()
	defer dst.mu.Unlock()
	if dst.closed {
		panic(fmt.Sprintf("nn: tensor moved to closed scope %q", dst.Name()))
	}
	t.scope = dst
	dst.tensors[t] = struct{}{}
	dst.n++
	dst.bytes += t.st.Bytes()
}

// Close frees every tensor of s and its children. Closing twice is a no-op.
func (s *Scope) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	children := s.children
	tensors := s.tensors
	s.children, s.tensors = nil, nil
	s.n, s.bytes = 0, 0
	s.mu.Unlock()

	for c := range children {
		c.Close()
	}
	for t := range tensors {
		free(t)
	}
	if s.parent != nil {
		s.parent.mu.Lock()
		if s.parent.children != nil {
			delete(s.parent.children, s)
		}
		s.parent.mu.Unlock()
	}
}

// Live reports the tensors and bytes that s and its children hold.
func (s *Scope) Live() (tensors int, bytes int64) {
	s.mu.Lock()
	tensors, bytes = s.n, s.bytes
	children := make([]*Scope, 0, len(s.children))
	for c := range s.children {
		children = append(children, c)
	}
	s.mu.Unlock()
	for _, c := range children {
		n, b := c.Live()
		tensors += n
		bytes += b
	}
	return tensors, bytes
}

type counter struct{ tensors, bytes atomic.Int64 }

func (c *counter) add(n, b int64) {
	c.tensors.Add(n)
	c.bytes.Add(b)
}

var devices sync.Map // device name -> *counter

func deviceCounter(dev string) *counter {
	if c, ok := devices.Load(dev); ok {
		return c.(*counter)
	}
	c, _ := devices.LoadOrStore(dev, &counter{})
	return c.(*counter)
}

// DeviceUsage is the live tensors and bytes on one device, over all scopes.
type DeviceUsage struct {
	Device  string
	Tensors int64
	Bytes   int64
}

// Usage reports live tensors and bytes per device, sorted by device name,
// for metrics and leak checks.
func Usage() []DeviceUsage {
	var out []DeviceUsage
	devices.Range(func(k, v any) bool {
		c := v.(*counter)
		out = append(out, DeviceUsage{Device: k.(string), Tensors: c.tensors.Load(), Bytes: c.bytes.Load()})
		return true
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Device < out[j].Device })
	return out
}
