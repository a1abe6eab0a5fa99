package nbd

import (
	"fmt"
	"sync"
)

// ExportSet is a mutable, concurrency-safe Exports: a name -> export map
// with a default export for the empty name. List returns exports in the
// order they were added.
type ExportSet struct {
	mu     sync.RWMutex
	byName map[string]exportEntry
	order  []string
	def    string
}

type exportEntry struct {
	exp  Export
	info ExportInfo
}

// NewExportSet returns an empty set.
func NewExportSet() *ExportSet {
	return &ExportSet{byName: make(map[string]exportEntry)}
}

// Add serves exp as name. The first export added is the default until
// SetDefault says otherwise. Names must be 1..4096 bytes and unique.
func (s *ExportSet) Add(name, description string, exp Export) error {
	if name == "" || len(name) > maxNameLen {
		return fmt.Errorf("nbd: export name %q: must be 1 to %d bytes", name, maxNameLen)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.byName[name]; dup {
		return fmt.Errorf("nbd: export %q already exists", name)
	}
	s.byName[name] = exportEntry{exp: exp, info: ExportInfo{Name: name, Description: description}}
	s.order = append(s.order, name)
	if s.def == "" {
		s.def = name
	}
	return nil
}

// Remove stops offering name to new connections; connections already
// using it keep it.
func (s *ExportSet) Remove(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.byName[name]; !ok {
		return
	}
	delete(s.byName, name)
	for i, n := range s.order {
		if n == name {
			s.order = append(s.order[:i], s.order[i+1:]...)
			break
		}
	}
	if s.def == name {
		s.def = ""
		if len(s.order) > 0 {
			s.def = s.order[0]
		}
	}
}

// SetDefault makes name the export served for the empty name.
func (s *ExportSet) SetDefault(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.byName[name]; !ok {
		return fmt.Errorf("nbd: no export %q", name)
	}
	s.def = name
	return nil
}

// Lookup implements Exports.
func (s *ExportSet) Lookup(name string) (Export, ExportInfo, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if name == "" {
		name = s.def
	}
	e, ok := s.byName[name]
	return e.exp, e.info, ok
}

// List implements Exports.
func (s *ExportSet) List() []ExportInfo {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]ExportInfo, 0, len(s.order))
	for _, n := range s.order {
		out = append(out, s.byName[n].info)
	}
	return out
}
